"""Typer applications shared by the command modules, and small output helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(
    name="ser",
    help="Speech emotion recognition: corpora → manifest → splits → features → models → serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Corpora → manifest → validated manifest → speaker-independent splits.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

console = Console(soft_wrap=True)
"""Lines are never broken at the terminal width: paths and counts stay whole for copying and for scripts."""


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (plain, machine-readable)."""
    from ser.io import json_default as _json_default

    typer.echo(json.dumps(obj, indent=2, default=_json_default))


def require_dir(path: Path, what: str = "folder") -> Path:
    from ser.errors import SerError

    if not path.exists():
        raise SerError(f"{what} not found: {path}")
    if not path.is_dir():
        raise SerError(f"{what} is not a folder: {path}")
    return path


def require_file(path: Path, what: str = "file") -> Path:
    from ser.errors import SerError

    if not path.is_file():
        raise SerError(f"{what} not found: {path}")
    return path


def recipe_overrides(config: Path | None) -> dict:
    """Recipe fields from a ``--config`` YAML (``{}`` without one)."""
    from ser.io import read_yaml_mapping

    if config is None:
        return {}
    return read_yaml_mapping(require_file(config, "config"), "recipe fields")
