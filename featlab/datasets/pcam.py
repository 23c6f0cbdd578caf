"""pcam reader (being written)."""
