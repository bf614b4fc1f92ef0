"""Several worker processes behind one port: ``ser serve --processes N`` (``SER_PROCESSES``).

One uvicorn process runs its event loop, the WebSocket frames and the Python half of every stream update on one
core (``benchmarks/serve.py``: one process saturated a core at about 70 real-time streams). N processes share the
listening socket(s) and the kernel hands each new connection to one of them.

**Why uvicorn's own supervisor** (:class:`uvicorn.supervisors.Multiprocess`) and not gunicorn with uvicorn
workers: it is already a dependency of the torch-free service image (gunicorn would be a new one in the
hash-locked ``docker/service.requirements.txt``, and ``uvicorn.workers`` is deprecated in favour of yet another
package); every worker runs the very same :class:`uvicorn.Config` as a single process (the h11 header limit, no
``server`` header, both listening sockets of ``--metrics-port``); it restarts a worker that dies or hangs (a
health ping), replaces workers one by one on ``SIGHUP`` and adds / removes one on ``SIGTTIN`` / ``SIGTTOU``. Its
workers are *spawned*, not forked: each imports the service and builds its app itself from the pickled
:class:`~ser.serve.settings.Settings` (:func:`worker_app`), so no onnxruntime session, thread or open log file is
ever shared across a fork. What it lacks, a hook when a worker goes, :class:`Supervisor` adds: the Prometheus files
of a dead worker are marked dead.

**What is per process and what is per host:**

- *Metrics*: per host. ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary folder unless set; emptied at start) is set
  before the workers start; ``GET /metrics`` aggregates all of them (:mod:`ser.serve.metrics`).
- *Streams*: ``max_streams`` (``SER_MAX_STREAMS``) is the host's budget; each process admits
  :func:`per_process` of it (an equal share, rounded down, at least one), so the host never holds more. A
  process that is full refuses a stream (close 1013, ``too_many_streams``) even when another has room: the kernel,
  not the load, chooses the process, so leave some headroom in the budget.
- *Prediction log*: one set of files per process (``part-<pid>-<token>-...``, :mod:`ser.monitor.store`); every
  reader (``ser monitor report``, feedback look-ups, the DAG) reads all of them. The client-name salt is drawn
  once for all processes when unset, so hashes match across them.
- *Model reloads*: per process. Each process polls the source (:attr:`Settings.poll_s`, on by default for a
  workdir), so a promotion reaches every process within one poll interval; ``POST /v1/admin/reload`` reloads the
  process that answers it at once, and the others at their next poll (with polling off, only that one).
- *Live drift and accuracy gauges*: per process windows (each joins the feedback it receives itself).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from ser.errors import ConfigError
from ser.serve.metrics import MULTIPROC_ENV
from ser.serve.settings import Settings

log = logging.getLogger("ser.serve")


def per_process(max_streams: int, processes: int) -> int:
    """Each process's share of the host's stream budget: ``max_streams // processes``, at least 1."""
    return max(1, int(max_streams) // max(1, int(processes)))


def worker_settings(settings: Settings) -> Settings:
    """The settings every worker process runs with: its share of the stream budget and one client-name salt for
    all (drawn here when unset)."""
    update: dict[str, Any] = {"max_streams": per_process(settings.max_streams, settings.processes)}
    if settings.prediction_log_salt is None:
        update["prediction_log_salt"] = secrets.token_hex(16)
    return settings.model_copy(update=update)


def prepare_metrics_dir(env: MutableMapping[str, str] | None = None) -> tuple[Path, bool]:
    """The folder of the multi-process metric files: ``PROMETHEUS_MULTIPROC_DIR`` when set (created; its ``*.db``
    files, a previous run's, removed), else a new temporary folder; set in ``env`` (default ``os.environ``) so
    that the workers inherit it. Returns the folder and whether it was created here (to remove at exit)."""
    if env is None:
        env = os.environ
    given = env.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="ser-metrics-"))
    env[MULTIPROC_ENV] = str(path)
    return path, True


def worker_app(settings: Settings) -> Any:
    """The app of one worker process (uvicorn calls this factory in the spawned process)."""
    from ser.serve.app import create_app, one_blas_thread_per_request

    one_blas_thread_per_request()
    return create_app(settings)


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening: the worker's server listens), with ``SO_REUSEPORT`` when
    ``reuse_port``: then several such sockets share the port and the kernel spreads new connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _supervisor_class() -> type:
    """:class:`Supervisor`, built on first use (uvicorn is imported only when serving)."""
    from prometheus_client import multiprocess
    from uvicorn.supervisors.multiprocess import Multiprocess, Process

    class Supervisor(Multiprocess):
        """uvicorn's process supervisor with one API socket per worker slot and dead workers' metrics marked.

        **Sockets.** Every worker slot has its own API socket, all bound to the same port with ``SO_REUSEPORT``: the
        kernel spreads connections over them by a hash of the client address, so the streams split evenly (about
        half each for two, whatever each process is doing). With one shared socket (uvicorn's way) the process that
        wakes first accepts every pending connection, and a burst of streams piled up on one process (70 / 30 for
        two processes in ``benchmarks/serve.py``). A slot's socket stays open in this process, so a replacement
        worker takes over its queue. The ``--metrics-port`` socket is shared by all. Without ``SO_REUSEPORT``
        (not Linux) the API socket is shared too.

        **Dead workers.** Each worker that is gone (died, hung and killed, replaced on SIGHUP, removed on SIGTTOU)
        is marked dead in the Prometheus files, so that its live gauges stop counting."""

        def __init__(
            self, config: Any, slots: list[socket.socket], shared: list[socket.socket], metrics_dir: Path
        ) -> None:
            super().__init__(config, [*slots[:1], *shared])
            self.slots, self.shared, self.metrics_dir = slots, shared, metrics_dir
            self._known: set[int] = set()

        def _process(self, idx: int) -> Any:
            return Process(self.config, [self.slots[idx % len(self.slots)], *self.shared])

        def init_processes(self) -> None:
            for idx in range(self.processes_num):
                process = self._process(idx)
                process.start()
                self.processes.append(process)

        def keep_subprocess_alive(self) -> None:
            # uvicorn's, but a worker's replacement gets the worker's own slot socket
            from uvicorn.config import STARTUP_FAILURE

            for idx, process in enumerate(list(self.processes)):
                if self.should_exit.is_set():
                    break
                if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                    continue
                process.kill()  # hung: kill it
                process.join()
                if process.exitcode == STARTUP_FAILURE:  # the app cannot start: restarting would fail the same way
                    log.error("worker process [%s] failed to start, stopping", process.pid)
                    self.should_exit.set()
                    break
                log.info("worker process [%s] died, starting another", process.pid)
                self.processes[idx] = self._process(idx)
                self.processes[idx].start()
            self.reap()

        def restart_all(self) -> None:
            for idx, old in enumerate(list(self.processes)):
                if self.should_exit.is_set():
                    return
                new = self._process(idx)
                new.start()
                if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                    new.kill()
                    new.join()
                    log.error("new worker process [%s] not ready in time; keeping [%s]", new.pid, old.pid)
                    return
                old.terminate()
                old.join()
                self.processes[idx] = new
            self.reap()

        def handle_ttin(self) -> None:
            log.info("SIGTTIN: one more worker process")
            if len(self.slots) > 1:  # one socket per slot: the new slot gets its own
                host, port = self.slots[0].getsockname()[:2]
                self.slots.append(listening_socket(host, port, reuse_port=True))
            self.processes_num += 1
            process = self._process(len(self.processes))
            process.start()
            self.processes.append(process)

        def handle_ttou(self) -> None:
            super().handle_ttou()
            self.reap()

        def reap(self) -> None:
            alive = {p.pid for p in self.processes if p.pid is not None and p.process.is_alive()}
            for pid in self._known - alive:
                multiprocess.mark_process_dead(pid, str(self.metrics_dir))
            self._known = alive

        def run(self) -> None:
            try:
                super().run()
            finally:
                self.reap()

    return Supervisor


def run(settings: Settings, host: str, port: int, options: dict[str, Any]) -> None:
    """Serve ``settings`` on ``host:port`` (and ``settings.metrics_port``) with ``settings.processes`` worker
    processes; ``options``: the :class:`uvicorn.Config` options of a single process. Returns when the supervisor
    stops (SIGINT / SIGTERM, or a worker that cannot start)."""
    import functools

    import uvicorn

    if settings.processes < 2:
        raise ConfigError("several processes need processes >= 2")
    options = {k: v for k, v in options.items() if k != "workers"}
    reuse_port = hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")
    if reuse_port and port:  # a port in use fails here: SO_REUSEPORT alone would share it with another server
        listening_socket(host, port, reuse_port=False).close()
    slots = [listening_socket(host, port, reuse_port=reuse_port)]
    if reuse_port:  # one socket per worker (Supervisor): bound now, so a busy port fails here and not in a worker
        port = slots[0].getsockname()[1]  # (port 0: the one the first got)
        slots += [listening_socket(host, port, reuse_port=True) for _ in range(settings.processes - 1)]
    shared = [] if settings.metrics_port is None else [listening_socket(host, settings.metrics_port, reuse_port=False)]
    metrics_dir, created = prepare_metrics_dir()
    app = functools.partial(worker_app, worker_settings(settings))
    config = uvicorn.Config(app, host=host, port=port, factory=True, workers=settings.processes, **options)
    log.info(
        "%d worker processes on %s:%d (%s)",
        settings.processes,
        host,
        port,
        "a socket each" if reuse_port else "one socket",
    )
    try:
        _supervisor_class()(config, slots, shared, metrics_dir).run()
    finally:
        for s in [*slots, *shared]:
            s.close()
        if created:
            shutil.rmtree(metrics_dir, ignore_errors=True)
