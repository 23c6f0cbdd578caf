"""brain_mri reader (being written)."""
