"""aptos reader (being written)."""
