"""chest_xray reader (being written)."""
