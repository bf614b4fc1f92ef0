"""Data layer: corpora → manifest → validated manifest → speaker-independent splits."""
