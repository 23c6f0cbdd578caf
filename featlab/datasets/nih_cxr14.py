"""nih_cxr14 reader (being written)."""
