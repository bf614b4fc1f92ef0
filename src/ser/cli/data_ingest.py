"""`ser data ingest` (to be implemented)."""
