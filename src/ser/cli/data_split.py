"""`ser data split` (to be implemented)."""
