"""pcam_kaggle reader (being written)."""
