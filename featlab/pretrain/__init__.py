"""Self-supervised pretraining on the user's own images: CASS, BOLT and DINO.

The method cores take ``nn.Module``s and tensors and train one batch at a time:

- :mod:`featlab.pretrain.cass` -- CNN and ViT arms on one view, ``2 - 2 cos``, Adam + cosine + SWA;
- :mod:`featlab.pretrain.bolt` -- online/target ViTs on token-perturbed views, difficulty ranking;
- :mod:`featlab.pretrain.dino` -- DINO with the medical-imaging settings (lightly's blocks).

:mod:`featlab.pretrain.loop` runs any of them epoch by epoch, checkpointing each epoch into a
run folder whose manifest makes the saved backbones extractable by name;
:mod:`featlab.pretrain.transforms` builds each method's views; building models from timm names
is the job of ``featlab.extractors.pretrain_job``.
"""
