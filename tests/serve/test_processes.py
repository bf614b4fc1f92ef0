"""Several worker processes behind one port (``ser serve --processes N``, :mod:`ser.serve.processes`) and the alias
poll that makes every process follow the champion: settings and CLI, the stream budget per process, Prometheus
metrics aggregated over processes (and a dead one's live gauges dropped), and a real two-process server that
follows a promotion without a failed request, whose per-process prediction-log files the monitor report reads."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from ser.errors import ConfigError
from ser.serve import processes
from ser.serve.settings import DEFAULT_RELOAD_POLL_S, Settings
from tests.conftest import export_tiny_model, tone

SRC = str(Path(__file__).resolve().parents[2] / "src")

# ------------------------------------------------------------------------------------------------ settings, CLI


def test_polling_is_on_by_default_for_a_workdir_and_off_for_a_model_folder(tmp_path):
    assert Settings(workdir=tmp_path).poll_s == DEFAULT_RELOAD_POLL_S == 10.0
    assert Settings().poll_s == DEFAULT_RELOAD_POLL_S  # the default workdir: its registry's champion
    assert Settings(model_dir=tmp_path).poll_s == 0.0
    assert Settings(model_dir=tmp_path, reload_poll_s=3).poll_s == 3.0  # a model folder polled when asked
    assert Settings(workdir=tmp_path, reload_poll_s=0).poll_s == 0.0  # and a workdir not, when turned off
    assert Settings.from_env({"SER_RELOAD_POLL_S": "2.5", "SER_WORKDIR": str(tmp_path)}).poll_s == 2.5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("processes") / "m", "1")


def test_polling_starts_with_the_app_for_a_workdir_only(tmp_path, model_dir, make_client):
    from ser import registry as reg
    from ser.serve.engine import ModelHolder

    reg.add_version(tmp_path / "wd", model_dir)
    reg.set_alias(tmp_path / "wd", "ser-emotion", "champion", 1, "test")
    served = ModelHolder(workdir=tmp_path / "wd")
    assert served.reload().ok
    c = make_client(holder_=served, model_dir=None, workdir=tmp_path / "wd")
    assert served.status()["polling"]  # the default: follow the champion
    assert c.get("/readyz").status_code == 200
    fixed = ModelHolder(model_dir)
    assert fixed.reload().ok
    make_client(holder_=fixed, model_dir=model_dir)
    assert not fixed.status()["polling"]


def test_processes_setting_and_its_validation(tmp_path):
    assert Settings().processes == 1
    assert Settings.from_env({"SER_PROCESSES": "3"}).processes == 3
    assert Settings.from_env({"SER_PROCESSES": "3"}, processes=2).processes == 2  # the option wins
    with pytest.raises(ValueError):
        Settings(processes=0)


def test_the_stream_budget_is_per_host_and_shared_among_processes():
    assert processes.per_process(64, 1) == 64
    assert processes.per_process(64, 2) == 32
    assert processes.per_process(101, 2) == 50  # rounded down: the host never holds more than its budget
    assert processes.per_process(1, 4) == 1  # but every process takes at least one
    w = processes.worker_settings(Settings(max_streams=120, processes=3))
    assert w.max_streams == 40 and w.processes == 3
    assert w.prediction_log_salt and len(w.prediction_log_salt) == 32  # one salt for all processes
    assert processes.worker_settings(Settings(prediction_log_salt="s", processes=2)).prediction_log_salt == "s"


def test_cli_option_and_env_var_pick_the_process_count(run_cli, model_dir, monkeypatch):
    model = model_dir
    seen: list[Settings] = []
    monkeypatch.setattr(processes, "run", lambda settings, host, port, options: seen.append(settings))
    code, out, err = run_cli("serve", "--model", model, "--processes", "2", "--port", "8124")
    assert code == 0, err
    assert (
        seen[-1].processes == 2 and "2 processes × 50 streams" in out and "model not polled" in out
    )  # the default: 50 per process
    monkeypatch.setenv("SER_PROCESSES", "3")
    monkeypatch.setenv("SER_MAX_STREAMS", "90")
    code, out, err = run_cli("serve", "--model", model, "--port", "8124")
    assert code == 0, err
    assert seen[-1].processes == 3 and "3 processes × 30 streams" in out
    code, _, err = run_cli("serve", "--model", model, "--processes", "0")
    assert code == 2 and "processes" in err


# ------------------------------------------------------------------------------------------------ metrics


WRITER = textwrap.dedent(
    """
    import sys
    from ser.serve.metrics import Metrics, multiprocess_dir
    assert multiprocess_dir() is not None
    m = Metrics()
    requests, streams, version = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    for _ in range(requests):
        m.requests.labels("/v1/predict", "POST", "200").inc()
    m.streams_active.set(streams)
    m.stream_capacity.set(32)
    m.model_loaded.set(1)
    m.model_info.labels("ser-emotion", version).set(1)
    m.partial_latency.observe(0.02)
    sys.stdout.write(m.render().decode())
    """
)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _write_metrics(mdir: Path, *args: object) -> dict:
    """Run WRITER in a new process writing to ``mdir``; what its ``Metrics.render()`` answered."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mdir), "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, *map(str, args)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return _samples(proc.stdout)


def test_metrics_of_several_processes_aggregate_and_a_dead_ones_live_gauges_go(tmp_path):
    mdir = tmp_path / "metrics"
    mdir.mkdir()
    _write_metrics(mdir, 3, 2, "1")  # process A
    files_a = {p.name for p in mdir.glob("*.db")}
    seen = _write_metrics(mdir, 4, 5, "2")  # process B renders both
    pid_a = next(int(n.rsplit("_", 1)[1][:-3]) for n in files_a if n.startswith("gauge_livesum_"))
    key = ("ser_http_requests_total", (("method", "POST"), ("route", "/v1/predict"), ("status", "200")))
    assert seen[key] == 7  # counters: summed over processes
    assert seen[("ser_stream_active", ())] == 7 and seen[("ser_stream_capacity", ())] == 64  # live sums
    assert seen[("ser_stream_partial_latency_seconds_count", ())] == 2  # histograms too
    assert seen[("ser_model_info", (("name", "ser-emotion"), ("version", "1")))] == 1
    assert seen[("ser_model_info", (("name", "ser-emotion"), ("version", "2")))] == 1
    multiprocess.mark_process_dead(pid_a, str(mdir))  # what the supervisor does when a worker is gone
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(mdir))
    from prometheus_client import generate_latest

    after = _samples(generate_latest(registry).decode())
    assert after[key] == 7  # a dead process's requests still happened
    assert after[("ser_stream_active", ())] == 5 and after[("ser_stream_capacity", ())] == 32  # its streams did not
    assert ("ser_model_info", (("name", "ser-emotion"), ("version", "1"))) not in after


def test_a_process_that_moves_to_another_model_zeroes_the_old_series(tmp_path):
    """In multi-process mode a series cannot be removed from the files: the old version is set to 0."""
    code = textwrap.dedent(
        """
        import sys, types
        from ser.serve.metrics import Metrics
        m = Metrics()
        holder = types.SimpleNamespace(predictor=types.SimpleNamespace(name="ser-emotion", version="1"))
        m.refresh_model(holder)
        holder.predictor = types.SimpleNamespace(name="ser-emotion", version="2")
        m.refresh_model(holder)
        m.publish_drift("1", None)
        sys.stdout.write(m.render().decode())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr  # and no "not implemented in multi-process mode" warning
    seen = _samples(proc.stdout)
    assert seen[("ser_model_info", (("name", "ser-emotion"), ("version", "1")))] == 0
    assert seen[("ser_model_info", (("name", "ser-emotion"), ("version", "2")))] == 1


def test_a_port_in_use_is_an_error_not_a_shared_port(model_dir, monkeypatch):
    """SO_REUSEPORT would let a second server join a port in use (and take half its connections): refused."""
    taken = processes.listening_socket("127.0.0.1", 0, reuse_port=True)
    taken.listen()
    port = taken.getsockname()[1]
    monkeypatch.setattr(processes, "_supervisor_class", lambda: pytest.fail("must not start workers"))
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            processes.run(Settings(model_dir=model_dir, processes=2), "127.0.0.1", port, {})
    finally:
        taken.close()


def test_the_metrics_dir_is_made_or_emptied(tmp_path):
    env: dict[str, str] = {}
    path, created = processes.prepare_metrics_dir(env)
    assert created and path.is_dir() and env["PROMETHEUS_MULTIPROC_DIR"] == str(path)
    path.rmdir()
    given = tmp_path / "m"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"old run")
    (given / "keep.txt").write_text("not ours")
    path, created = processes.prepare_metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(given)})
    assert path == given and not created
    assert not (given / "counter_123.db").exists() and (given / "keep.txt").exists()


# ------------------------------------------------------------------------------------------------ a real server


def _wav(y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _metric(base: str, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _workers(pid: int) -> list[int]:
    pids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads worker pids from /proc")
def test_two_processes_follow_a_promotion_without_a_failed_request(tmp_path, run_cli):
    from ser import registry as reg

    wd = tmp_path / "wd"
    reg.add_version(wd, export_tiny_model(tmp_path / "m1", "1"))
    reg.add_version(wd, export_tiny_model(tmp_path / "m2", "2"))
    reg.set_alias(wd, "ser-emotion", "champion", 1, "test")
    mdir = tmp_path / "metrics"
    port = processes.listening_socket("127.0.0.1", 0, reuse_port=False)
    port_no = port.getsockname()[1]
    port.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    env.update(PYTHONPATH=SRC, PROMETHEUS_MULTIPROC_DIR=str(mdir), SER_PREDICTION_LOG_FLUSH_S="0.5")
    cmd = [sys.executable, "-m", "ser", "serve", "--workdir", str(wd), "--processes", "2", "--port", str(port_no)]
    server = subprocess.Popen(
        [*cmd, "--reload-poll", "0.5", "--log-level", "warning"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port_no}"
    body = _wav(tone(1.0))
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client() -> None:  # a new connection per request: the kernel spreads them over both processes
        while not stop.is_set():
            r = httpx.post(f"{base}/v1/predict", content=body, headers={"content-type": "audio/wav"}, timeout=30)
            answers.append((r.status_code, r.json().get("model_version")))

    try:
        _wait(lambda: _metric(base, "ser_model_reloads_total", result="ok") == 2, 120, "both processes loaded")
        _wait(lambda: _metric(base, "ser_model_loaded") == 1, 10, "every process's model_loaded")
        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        _wait(lambda: len(answers) >= 20, 60, "answers from version 1")
        reg.set_alias(wd, "ser-emotion", "champion", 2, "promote")  # the promotion, while requests run
        _wait(lambda: _metric(base, "ser_model_info", version="1") == 0, 60, "every process off version 1")
        assert _metric(base, "ser_model_info", version="2") == 1
        n_switched = len(answers)
        _wait(lambda: len(answers) >= n_switched + 20, 60, "answers after the switch")
        stop.set()
        for t in threads:
            t.join(30)
        assert {code for code, _ in answers} == {200}  # not one failed request
        versions = [v for _, v in answers]
        assert versions[0] == "1" and set(versions[n_switched:]) == {"2"}
        assert _metric(base, "ser_model_reloads_total", result="ok") == 4  # 2 processes × (load + promotion)
        assert _metric(base, "ser_model_reloads_total", result="failed") in (None, 0)

        # a worker killed: replaced, its live gauges gone from the aggregate
        time.sleep(2.0)  # past the log's flush interval (0.5 s): the killed worker's records are on disk
        workers = _workers(server.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        _wait(lambda: workers[0] not in _workers(server.pid) and len(_workers(server.pid)) == 2, 60, "a new worker")
        _wait(lambda: not list(mdir.glob(f"gauge_live*_{workers[0]}.db")), 30, "the dead worker marked")
        _wait(lambda: _metric(base, "ser_model_loaded") == 1, 120, "the new worker's model")
    finally:
        stop.set()
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0, out[-3000:]

    # one prediction-log file set per process (and the killed worker's); the report reads them all
    parts = list((wd / "monitor" / "predictions").rglob("part-*.parquet"))
    assert len({p.name.split("-")[1] for p in parts}) >= 2, parts
    from ser.monitor.log import read_log

    logged = read_log(wd / "monitor").num_rows
    assert logged == len(answers)
    code, out, err = run_cli(
        "monitor",
        "report",
        "--log",
        wd / "monitor",
        "--model",
        wd / "registry" / "ser-emotion" / "2",
        "--out",
        tmp_path / "report",
        "--json",
    )
    assert code in (0, 1), err  # 1: a threshold crossed (a tone is not speech-like); the log was read either way
    assert json.loads(out)["log"]["predictions"] == logged


def test_the_default_stream_budget_follows_the_process_count():
    """SER_MAX_STREAMS unset: 50 streams per worker process (benchmarks/serve.py: two processes on 2 cores held
    100-120); set, it is the host's budget whatever the process count."""
    from ser.serve.settings import STREAMS_PER_PROCESS

    assert Settings.from_env({}).max_streams == STREAMS_PER_PROCESS == 50
    assert Settings.from_env({"SER_PROCESSES": "2"}).max_streams == 100
    assert Settings.from_env({}, processes=3).max_streams == 150
    assert Settings.from_env({"SER_PROCESSES": "2", "SER_MAX_STREAMS": "64"}).max_streams == 64
    assert Settings.from_env({"SER_MAX_STREAMS": "64"}, processes=4).max_streams == 64
