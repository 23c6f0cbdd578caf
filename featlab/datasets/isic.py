"""isic reader (being written)."""
