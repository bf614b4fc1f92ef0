"""`ser data synth` (to be implemented)."""
