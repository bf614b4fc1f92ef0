"""The ``ser`` command line. Sub-commands live in one module per stage and register on the apps below."""

from __future__ import annotations

import sys

import click

from ser.cli._apps import app
from ser.errors import SerError

# Register commands (import for side effects), one module per stage.
from ser.cli import data_cmds  # noqa: F401  isort: skip


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure ends as a one-line ``error: ...`` on stderr and a non-zero exit."""
    try:
        rv = app(args=argv, prog_name="ser", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except SerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
