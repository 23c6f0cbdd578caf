"""medmnist reader (being written)."""
