"""Fusion of several models' embeddings: DVME (Dynamic Visual Meta-Embedding).

- :class:`~featlab.fusion.dvme.DVMEClassifier`: the estimator on concatenated embeddings;
- :func:`run_dvme`: the low-shot protocol over several stored models (``featlab probe
  --method dvme``);
- :func:`fuse_into_store`: a fitted DVME's fused vectors stored as a derived model
  (``featlab fuse``).
"""

from featlab.fusion.derived import fuse_into_store
from featlab.fusion.evaluate import run_dvme

__all__ = ["fuse_into_store", "run_dvme"]
