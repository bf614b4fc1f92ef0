"""Where the per-file work runs: in-process, a local process pool (``--workers N``), or Ray (``--ray``).

Every executor runs the same :class:`ser.batch.worker.FileProcessor` (one model load per worker process, then
file after file) and yields :class:`ser.batch.core.FileResult` objects as files finish, in any order; the driver
(:class:`ser.jobs.batch.BatchJob`) writes the Parquet parts and keeps the resume state. So the local and the Ray
paths give the same rows (the model, its threads and the per-file code are the same).

**Ray: tasks, one per file, with the model cached per worker process** (not Ray Data, not an actor pool):

- a task per file maps each failure to its file: a file that crashes its worker process (a decoder fault, out of
  memory) fails that task alone, Ray restarts the process and retries it (:data:`RAY_MAX_RETRIES`), and the file
  is then recorded ``failed``; with an actor pool a dead actor loses track of which file killed it;
- Ray reuses worker processes for tasks of the same function, so the module-level cache (:func:`_ray_process`)
  loads the model once per worker process, as an actor would; the model's bytes travel once through the object
  store (:class:`ser.batch.worker.ModelFiles`: workers need not see the driver's disk), and files are read by the
  workers from their URI (the driver ships names, never audio);
- tasks go wherever a CPU is free, so nodes added to the cluster (autoscaling) take work at once, where an actor
  pool has a fixed size;
- Ray Data (``read_binary_files`` → ``map_batches`` with onnxruntime actors → ``write_parquet``) was left out:
  its Parquet sink writes blocks, not per-file commits, so resuming would need a second record of which files are
  done and its failure handling drops rows or stops the dataset, where one bad call in a thousand must become a
  row with its reason; and its streaming executor adds seconds of start-up for nothing this job needs (there is
  no shuffle or repartition: each file is independent).

The driver keeps at most a few tasks per CPU in flight (``ray.wait``, the backpressure pattern of Ray's own
documentation), so memory stays flat over thousands of files. Each task asks for ``threads`` CPUs and its
process pins onnxruntime and BLAS to that many threads (:func:`ser.batch.worker.pin_threads`).

The local pool is :class:`concurrent.futures.ProcessPoolExecutor` (spawned processes: onnxruntime and BLAS
thread pools do not survive ``fork``), with the same bound on files in flight. A worker that dies breaks the pool
and every file in flight with it; those files run again one at a time in a pool of one process, so only the file
that kills its worker there is recorded ``failed`` (:data:`DIED`), and a fresh pool takes the rest
(``--retry-failed`` runs the failed files again).

**Why not :class:`ser.executor.Executor`** (the parallel map of training): the Ray connection is shared
(:meth:`RayTarget.connect` calls :func:`ser.executor.connect_ray`), the task loop is not. ``Executor.iter_tasks``
submits every item at once and stops the whole map at the first task that fails, which is right for a handful of
folds or trials that must all succeed; here thousands of files stream through a bounded window, a lost worker is
one file's ``failed`` row and the run goes on, and the model is passed as a reference each worker fetches once
(the Executor resolves its shared values for every task). Its local kind runs in-process only, where a pool of
processes is needed here.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ser.batch.archive import Recording
from ser.batch.core import FileInfo, FileResult, failed_row
from ser.batch.worker import FileProcessor, ModelFiles, WorkerSettings, make_processor
from ser.errors import SerError

DIED = "worker process died (a crash or out of memory) while analysing this file"
RAY_MAX_RETRIES = 2
"""Re-runs of a Ray task whose worker process died before its file is recorded failed (:data:`DIED`)."""
IN_FLIGHT_PER_WORKER = 2
"""Files handed out per worker at once: one running, one queued, so no worker waits for the driver."""


def _failed(rec: Recording, reason: str) -> FileResult:
    return FileResult(rec.file, summaries=[failed_row(FileInfo(rec.file, rec.bytes), reason)])


# ----------------------------------------------------------------------------------------------------------------
# in-process and the local process pool


def run_inline(model_dir: Path, settings: WorkerSettings, recordings: Sequence[Recording]) -> Iterator[FileResult]:
    """One worker in this process (``--workers 1``)."""
    proc = make_processor(model_dir, settings)
    for rec in recordings:
        yield proc(rec.uri, rec.file, rec.bytes)


_LOCAL: FileProcessor | None = None


def _init_local(model_dir: Path, settings: WorkerSettings) -> None:
    global _LOCAL
    _LOCAL = make_processor(model_dir, settings)


def _ready() -> bool:
    return _LOCAL is not None


def _local_process(rec: Recording) -> FileResult:
    if _LOCAL is None:  # pragma: no cover - the pool's initializer sets it
        raise SerError("batch worker used before its initializer ran")
    return _LOCAL(rec.uri, rec.file, rec.bytes)


def _start_pool(model_dir: Path, settings: WorkerSettings, workers: int) -> cf.ProcessPoolExecutor:
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(workers, spawn, initializer=_init_local, initargs=(model_dir, settings))
    try:
        pool.submit(_ready).result()  # the workers start (and load the model) before a file is handed out
    except cf.process.BrokenProcessPool as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        raise SerError(f"the batch worker processes did not start: {exc}") from None
    return pool


def run_pool(
    model_dir: Path, settings: WorkerSettings, recordings: Sequence[Recording], workers: int
) -> Iterator[FileResult]:
    """``workers`` spawned processes, each with its own model; results as files finish.

    A worker process that dies (a decoder crash, the kernel's OOM killer) breaks the whole pool, and every file in
    flight fails with it, so which file killed it is unknown. Those files become suspects: each runs again alone in
    a pool of one process (the same isolation a Ray task per file gives), where a death is that file's own and it
    is recorded failed (:data:`DIED`); the suspects that pass are analysed as usual, and a fresh pool of
    ``workers`` takes the rest."""
    todo = deque(recordings)
    suspects: deque[Recording] = deque()
    while todo or suspects:
        if suspects:
            pool = _start_pool(model_dir, settings, 1)
            try:
                while suspects:
                    try:
                        res = pool.submit(_local_process, suspects[0]).result()
                    except cf.process.BrokenProcessPool:
                        yield _failed(suspects.popleft(), DIED)
                        break  # a fresh pool for the next suspect
                    suspects.popleft()
                    yield res
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            continue
        pool = _start_pool(model_dir, settings, workers)
        running: dict[cf.Future[FileResult], Recording] = {}
        try:
            while todo or running:
                while todo and len(running) < IN_FLIGHT_PER_WORKER * workers:
                    running[pool.submit(_local_process, todo[0])] = todo[0]
                    todo.popleft()
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                if any(isinstance(f.exception(), cf.process.BrokenProcessPool) for f in finished):
                    break
                for fut in finished:
                    running.pop(fut)
                    yield fut.result()
        except cf.process.BrokenProcessPool:  # submit on a pool that just broke
            pass
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        # the pool broke: what finished before stands, the rest of what was in flight is suspect
        for fut, rec in running.items():
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                yield fut.result()
            else:
                suspects.append(rec)


# ----------------------------------------------------------------------------------------------------------------
# Ray


_RAY_CACHE: dict[tuple[str, int, str], FileProcessor] = {}
"""The loaded model of this Ray worker process, keyed by the model's SHA-256, the threads and the processor class
(a worker runs one task at a time; tasks of several jobs with the same model share it)."""


def _ray_process(key: str, model_ref: list[Any], settings: WorkerSettings, rec: Recording) -> FileResult:
    """A Ray task: one file, with the model loaded at the worker process' first task and kept for the next ones.
    ``model_ref`` wraps the :class:`ModelFiles` reference in a list so Ray does not fetch the bytes for every task
    (only a worker that has not loaded the model yet calls ``ray.get``)."""
    cache_key = (key, settings.threads, settings.processor)
    proc = _RAY_CACHE.get(cache_key)
    if proc is None:
        import ray

        _RAY_CACHE.clear()
        proc = _RAY_CACHE[cache_key] = make_processor(ray.get(model_ref[0]), settings)
    elif proc.settings != settings:  # the same model for another job (other channels or timeline parameters)
        proc.settings = settings
    return proc(rec.uri, rec.file, rec.bytes)


@dataclass(frozen=True)
class RayTarget:
    """Which Ray cluster: ``auto`` (the running one: ``RAY_ADDRESS`` or this machine's), ``local`` (start one in
    this process with ``num_cpus`` CPUs) or a GCS address ``host:port`` / ``ray://host:port``."""

    address: str
    num_cpus: int | None = None

    def connect(self) -> bool:
        """Connect this process as a Ray driver (:func:`ser.executor.connect_ray`) unless it already is one; True
        when this call started the connection (and should shut it down)."""
        from ser.executor import connect_ray, ray_driver_running

        started = not ray_driver_running()
        connect_ray(self.address, self.num_cpus)
        return started


def run_ray(
    model_dir: Path, settings: WorkerSettings, recordings: Sequence[Recording], target: RayTarget, key: str
) -> Iterator[FileResult]:
    """One Ray task per file on the cluster ``target`` names; results as files finish. ``key``: the model's
    SHA-256 (the workers' cache key)."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    started = target.connect()
    try:
        task = ray.remote(num_cpus=settings.threads, max_retries=RAY_MAX_RETRIES)(_ray_process)
        model_ref = [ray.put(ModelFiles.read(model_dir))]
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // settings.threads)
        todo = list(reversed(recordings))
        running: dict[Any, Recording] = {}
        while todo or running:
            while todo and len(running) < IN_FLIGHT_PER_WORKER * cpus:
                rec = todo.pop()
                running[task.remote(key, model_ref, settings, rec)] = rec
            finished, _ = ray.wait(list(running), num_returns=1)
            for ref in finished:
                rec = running.pop(ref)
                try:
                    yield ray.get(ref)
                except RayTaskError as exc:  # the model did not load on the worker: nothing will work
                    raise SerError(f"batch worker on Ray: {str(exc.cause or exc).splitlines()[0]}") from None
                except RayError:  # the worker process died on this file, retries included
                    yield _failed(rec, DIED)
    finally:
        if started:
            ray.shutdown()
