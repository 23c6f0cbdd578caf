"""Training building blocks shared by finetune and pretrain: resumable state, run folders,
run logs, mixed precision and seeded per-epoch data."""
