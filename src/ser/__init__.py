"""ser: speech emotion recognition, from corpora to served models.

The package is laid out along the data flow:
``data`` (corpora → manifest → validated manifest → splits) → ``features`` → ``models`` → ``train`` →
``evaluate`` → ``export`` → ``registry`` → ``serve`` → ``monitor``.
"""

__version__ = "0.1.0"

TARGET_SR = 16_000
"""Sample rate (Hz) every stage works at after loading."""
