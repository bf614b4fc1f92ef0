"""Exceptions shared across stages. Each carries a one-line, user-facing reason."""

from __future__ import annotations

from typing import Any


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


def validation_reason(exc: Any, default: str | None = "config") -> str:
    """``"field.path: message"`` for the first error of a pydantic ``ValidationError``, the one line a
    :class:`ConfigError` carries. ``default`` names an error of the whole object (no field path); None gives the
    message alone."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or default
    msg = first.get("msg", "invalid")
    return f"{where}: {msg}" if where else str(msg)
