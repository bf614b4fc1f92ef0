"""The ``--executor`` / ``--ray-address`` options of ``ser train`` and ``ser tune``: their help texts and the
:class:`~ser.executor.Executor` they make."""

from __future__ import annotations

from ser.errors import ConfigError
from ser.executor import EXECUTORS, Executor

EXECUTOR_HELP = "where folds, ensemble members, trials and feature extraction run: local (here) or ray"
RAY_ADDRESS_HELP = "with --executor ray: local (start Ray on this machine), auto (the running cluster) or HOST:PORT"
THREADS_HELP = "torch CPU threads (--executor ray: per task, the CPUs Ray reserves for it)"


def make_executor(kind: str, address: str, threads: int) -> Executor:
    """The executor the options name; a bad value is a one-line error naming the option."""
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    try:
        return Executor(kind, address, cpus_per_task=max(1, threads))
    except ConfigError as exc:
        raise ConfigError(f"--ray-address: {exc}") from None
