"""`ser data validate` (to be implemented)."""
