"""The ``ser`` command line. Sub-commands live in one module per stage and register on the apps below."""

from __future__ import annotations

import sys

import typer

from ser.cli._apps import app
from ser.errors import SerError

# Register commands (import for side effects), one module per stage.
from ser.cli import data_cmds, demo_cmds, features_cmds, model_cmds, pipeline_cmds, serve_cmds, train_cmds, tune_cmds  # noqa: F401  isort: skip
from ser.cli import batch_cmds, listen_cmds, loop_cmds, monitor_cmds  # noqa: F401  isort: skip

try:  # typer >= 0.29 vendors click; older typer uses the click package
    from typer._click import exceptions as _click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as _click_exc  # type: ignore[no-redef]


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure ends as a one-line ``error: ...`` on stderr and a non-zero exit."""
    try:
        rv = app(args=argv, prog_name="ser", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except _click_exc.ClickException as exc:
        if message := exc.format_message():  # empty when the help was shown for a bare group
            print(f"error: {message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except SerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
