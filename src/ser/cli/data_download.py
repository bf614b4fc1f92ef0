"""`ser data download` (to be implemented)."""
