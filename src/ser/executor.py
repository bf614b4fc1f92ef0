"""Where independent tasks run: one after another in this process (``local``) or as Ray tasks (``ray``).

The one parallel map of training and features. Cross-validation folds and ensemble members
(:mod:`ser.train.cv`), Optuna trials (:mod:`ser.train.tune`) and feature extraction (:mod:`ser.features.extract`)
hand :meth:`Executor.map_tasks` a module-level function, the items to call it on and the values every call shares;
the flow around it (what a task is, how its result is saved) is written once and does not know where it ran.

- ``local`` calls ``fn(item, **shared)`` for each item in order, in this process.
- ``ray`` puts each shared value into Ray's object store once (``ray.put``: a worker reads the feature arrays
  zero-copy instead of receiving a pickle per task or re-reading the feature cache), submits one Ray task per item
  reserving ``cpus_per_task`` CPUs, and lets Ray schedule them: as many run at once as the cluster has CPUs for.
  A task whose worker process dies (killed, out of memory, node lost) is retried by Ray up to ``max_retries``
  times; the tasks of this package are written to be re-run (a fold resumes from its epoch checkpoint).

Both return the results in item order and call ``on_result(index, result)`` in this process as each task
finishes, which is where a caller saves a finished fold (resumability) or logs a trial. Results must be plain
picklable values (arrays, dataclasses, a CPU torch module). An exception in a task cancels the tasks not yet
finished and is raised here as the task raised it (a :class:`~ser.errors.ConfigError` stays one).

Ray is an optional dependency (the ``scale`` extra); it is imported only by a ``ray`` executor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ser.errors import ConfigError, SerError

EXECUTORS = ("local", "ray")
"""The executor kinds (``train.executor`` in the pipeline config, ``--executor`` on the command line)."""
RAY_LOCAL = "local"
"""``ray_address`` that starts a private Ray instance on this machine (the default)."""
RAY_AUTO = "auto"
"""``ray_address`` that joins the cluster already running on this machine (``ray start``) or ``$RAY_ADDRESS``."""

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Executor:
    """How independent tasks run. ``kind``: ``local`` or ``ray``; ``address`` (Ray only): ``local`` (start a
    Ray instance on this machine), ``auto`` (join the running cluster) or a cluster address (``host:port``,
    ``ray://host:10001``); ``cpus_per_task``: CPUs Ray reserves for each task, which is also how many threads a
    torch task pins itself to (:attr:`task_threads`); ``max_retries``: re-runs of a task whose worker died.

    A driver that is already connected to Ray (``ray.init`` called before, e.g. in a notebook) is used as it is,
    whatever ``address`` says."""

    kind: str = "local"
    address: str = RAY_LOCAL
    cpus_per_task: int = 1
    max_retries: int = 2

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if not str(self.address).strip():
            raise ConfigError("the Ray address is empty; use local, auto or host:port")
        if self.cpus_per_task < 1:
            raise ConfigError(f"CPUs per task must be at least 1, got {self.cpus_per_task}")
        if self.max_retries < 0:
            raise ConfigError(f"task retries must be 0 or more, got {self.max_retries}")

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"

    @property
    def task_threads(self) -> int | None:
        """Torch threads a training task should pin itself to: ``cpus_per_task`` on Ray (Ray sets
        ``OMP_NUM_THREADS`` in its workers, torch's own pool still has to be set), None locally (the process
        keeps its own setting, e.g. ``ser train --threads``)."""
        return self.cpus_per_task if self.is_ray else None

    def describe(self) -> str:
        """One line for logs: ``local`` or ``ray (ADDRESS, N CPU per task)``."""
        return f"ray ({self.address}, {self.cpus_per_task} CPU per task)" if self.is_ray else "local"

    def map_tasks(
        self,
        fn: Callable[..., R],
        items: Sequence[T],
        *,
        shared: Mapping[str, Any] | None = None,
        on_result: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        """``[fn(item, **shared) for item in items]``, run here (``local``) or as Ray tasks (``ray``); ``fn`` must
        be a module-level function (Ray workers import it by name). ``on_result(i, result)`` runs in this process
        as task ``i`` finishes (in item order locally, in finishing order on Ray)."""
        results: list[Any] = [None] * len(items)
        for i, result in self.iter_tasks(fn, items, shared=shared):
            results[i] = result
            if on_result is not None:
                on_result(i, result)
        return results

    def iter_tasks(
        self, fn: Callable[..., R], items: Sequence[T], *, shared: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[int, R]]:
        """``(i, fn(items[i], **shared))`` as each task finishes (for a progress bar); closing the iterator early
        cancels the tasks still running."""
        shared = dict(shared or {})
        if not items:
            return iter(())
        if not self.is_ray:
            return ((i, fn(item, **shared)) for i, item in enumerate(items))
        return _ray_tasks(self, fn, list(items), shared)


LOCAL = Executor()
"""The default: every task in this process, one after another."""


# ----------------------------------------------------------------------------------------------------------------
# Ray


def _call(fn: Callable[..., Any], item: Any, **shared: Any) -> Any:
    """The Ray task: Ray resolves the shared values' object references (top-level arguments) before the call."""
    return fn(item, **shared)


def ray_driver_running() -> bool:
    """True when this process is already a Ray driver (``ray.init`` was called); False too when Ray is missing."""
    try:
        import ray
    except ImportError:
        return False
    return bool(ray.is_initialized())


def connect_ray(address: str = RAY_LOCAL, num_cpus: int | None = None):
    """The ``ray`` module with this process connected as a driver: the existing connection, else ``ray.init`` at
    ``address`` (``local`` starts a private instance with ``num_cpus`` CPUs, default every CPU of this machine;
    ``num_cpus`` is ignored for a running cluster). Ray missing or a cluster that cannot be reached is a one-line
    :class:`~ser.errors.SerError`."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'ser[scale]'") from None
    if ray.is_initialized():
        return ray
    try:
        ray.init(
            address=address,
            num_cpus=num_cpus if address == RAY_LOCAL else None,
            include_dashboard=False,
            log_to_driver=False,  # worker output goes to Ray's session logs, not into the CLI's output
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SerError(f"cannot connect to Ray at {address!r}: {reason}") from None
    return ray


def _ray_tasks(ex: Executor, fn: Callable[..., R], items: list, shared: dict[str, Any]) -> Iterator[tuple[int, R]]:
    ray = connect_ray(ex.address)
    refs = {k: ray.put(v) for k, v in shared.items()}  # once per map, not once per task
    remote = ray.remote(_call).options(num_cpus=ex.cpus_per_task, max_retries=ex.max_retries)
    pending = {remote.remote(fn, item, **refs): i for i, item in enumerate(items)}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                yield i, ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        _cancel(ray, pending)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None  # the task's own exception, not Ray's wrapper with its remote traceback
        raise SerError(f"a Ray task failed: {type(exc).__name__}") from None
    except ray.exceptions.RayError as exc:  # a worker lost more often than max_retries, an object lost, ...
        _cancel(ray, pending)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SerError(f"a Ray task failed: {reason}") from None
    except BaseException:  # Ctrl-C in the driver, the caller stopped early or failed on a result
        _cancel(ray, pending)
        raise


def _cancel(ray, pending: dict) -> None:
    for ref in pending:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # already finished or gone: nothing to stop
            continue
