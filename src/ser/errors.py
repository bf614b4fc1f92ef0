"""Exceptions shared across stages. Each carries a one-line, user-facing reason."""


class SerError(Exception):
    """Base class for errors the CLI reports as a one-line reason with exit code 2."""


class AudioError(SerError):
    """A file could not be decoded into usable audio."""


class ManifestError(SerError):
    """A manifest table does not satisfy the schema."""


class LeakageError(SerError):
    """A speaker or a content hash appears on two sides of a split."""


class ConfigError(SerError):
    """A configuration value is invalid."""


class Cancelled(SerError):
    """Work stopped because its caller asked (e.g. a request that timed out)."""
