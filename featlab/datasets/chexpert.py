"""chexpert reader (being written)."""
