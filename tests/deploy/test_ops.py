"""Deployment and operations: the two Dockerfiles (non-root, health check, a torch-free service image), the service
entry point, docker-compose.yml, the Prometheus and Grafana provisioning, the dashboard (every metric and label it
queries exists in the app's /metrics), and a real Prometheus scraping a real ``ser serve`` on loopback.

Docker itself is not needed: the files are parsed and checked. The Prometheus test needs the ``prometheus`` binary
(``scripts/install_prometheus.sh``); without it the test fails under CI and skips elsewhere.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import export_tiny_model, tone
from tests.deploy.metrics_contract import with_contract
from tests.serve.test_timeline import voice

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DOCKERFILE = ROOT / "docker" / "service.Dockerfile"
SERVICE_LOCK = ROOT / "docker" / "service.requirements.txt"
PIPELINE_DOCKERFILE = ROOT / "docker" / "pipeline.Dockerfile"
ENTRYPOINT = ROOT / "docker" / "service-entrypoint.sh"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "ser.json"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))  # ser.json and ser-monitoring.json
LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
TORCH_LIKE = re.compile(r"^(torch|torchaudio|torchvision|nvidia-.*|triton)$")


def require_tool(name: str) -> str:
    """Path of a Prometheus tool (``prometheus``, ``promtool``; ``$PROMETHEUS_BIN`` / ``$PROMTOOL_BIN`` override);
    missing, the test fails under CI and skips elsewhere."""
    path = os.environ.get(f"{name.upper()}_BIN") or shutil.which(name)
    if not path:
        msg = f"{name} binary missing (scripts/install_prometheus.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


# ------------------------------------------------------------------------------------------------ Dockerfiles


def parse_dockerfile(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions ``(INSTRUCTION, arguments)`` per build stage (stage 0: the ARGs before the first FROM), with
    line continuations joined and comments dropped."""
    stages: list[list[tuple[str, str]]] = [[]]
    cur = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not cur):
            continue
        if line.endswith("\\"):
            cur += line[:-1].strip() + " "
            continue
        cur += line
        instr, _, args = cur.partition(" ")
        cur = ""
        if instr.upper() == "FROM":
            stages.append([])
        stages[-1].append((instr.upper(), args.strip()))
    assert not cur, f"{path}: dangling line continuation"
    return stages


def _args(stage: list[tuple[str, str]], instr: str) -> list[str]:
    return [a for i, a in stage if i == instr]


def _arg_defaults(stages: list[list[tuple[str, str]]]) -> dict[str, str]:
    out = {}
    for stage in stages:
        for a in _args(stage, "ARG"):
            name, _, default = a.partition("=")
            out[name] = default
    return out


def _expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def _commands(stage: list[tuple[str, str]]) -> list[str]:
    """The shell commands of a stage's RUN instructions, split at ``&&`` / ``;``."""
    return [c.strip() for run in _args(stage, "RUN") for c in re.split(r"&&|;", run) if c.strip()]


def _pip_installs(stage: list[tuple[str, str]]) -> list[str]:
    return [c for c in _commands(stage) if re.search(r"\bpip3? install\b", c)]


def _check_final_user(stages: list[list[tuple[str, str]]], path: Path) -> None:
    users = _args(stages[-1], "USER")
    assert users, f"{path.name}: the final stage sets no USER (it would run as root)"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{path.name}: USER {users[-1]}"


def _check_copy_sources(stages: list[list[tuple[str, str]]], path: Path) -> None:
    """Every ``COPY`` from the build context names a path that exists in the repository."""
    values = _arg_defaults(stages)
    for stage in stages:
        for a in _args(stage, "COPY"):
            words = a.split()
            if any(w.startswith("--from=") for w in words) or "<<" in a:
                continue
            srcs = [w for w in words if not w.startswith("--")][:-1]
            for src in srcs:
                assert (ROOT / _expand(src, values)).exists(), f"{path.name}: COPY {src}: not in the repository"


def test_service_dockerfile():
    stages = parse_dockerfile(SERVICE_DOCKERFILE)
    values = _arg_defaults(stages)
    for stage in stages[1:]:
        assert _expand(stage[0][1].split()[0], values) == "python:3.11-slim", stage[0]
    final = stages[-1]
    _check_final_user(stages, SERVICE_DOCKERFILE)
    _check_copy_sources(stages, SERVICE_DOCKERFILE)

    health = _args(final, "HEALTHCHECK")
    assert len(health) == 1 and "/healthz" in health[0] and "CMD" in health[0]
    cmd = json.loads(health[0].split("CMD", 1)[1])  # exec form: the command must be valid JSON
    assert cmd[:2] == ["python", "-c"]
    compile(cmd[2], "<healthcheck>", "exec")
    from ser.serve.platform import PORT_VARIABLES

    assert repr(PORT_VARIABLES) in cmd[2], "the health check must find the port as ser serve does"
    assert "SER_PORT=" not in " ".join(_args(final, "ENV")), "a SER_PORT in the image would hide the platform's"

    installs = [c for stage in stages for c in _pip_installs(stage)]
    assert any(re.search(r"""["']?\.\[serve\]["']?""", c) for c in installs), installs
    for c in installs:  # only the serve extra: no torch, no training extras
        assert not re.search(r"torch|\[[^]]*\b(ml|pipeline|ssl|dev)\b", c), f"service image installs {c!r}"
    assert any(re.search(r"!\s*pip show torch", c) for stage in stages for c in _commands(stage)), (
        "the build should fail if torch ever lands in the service image"
    )
    assert any("libsndfile1" in c for c in _commands(final))
    assert "8000" in _args(final, "EXPOSE")
    entry = json.loads(_args(final, "ENTRYPOINT")[-1])
    assert entry == ["/usr/local/bin/ser-entrypoint"]
    assert any("docker/service-entrypoint.sh" in c and entry[0] in c for c in _args(final, "COPY"))
    assert any("${MODEL_DIR}" in c and "/opt/ser/model" in c for c in _args(final, "COPY"))
    assert "SER_BAKED_MODEL_DIR=/opt/ser/model" in " ".join(_args(final, "ENV"))


def _lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """``{name: (pinned requirement, [hashes])}`` of a pip-compile / uv lock file (continuations joined)."""
    from packaging.utils import canonicalize_name

    entries: dict[str, tuple[str, list[str]]] = {}
    for block in re.sub(r"\\\n\s*", " ", path.read_text()).splitlines():
        line = block.split("#", 1)[0].strip() if not block.lstrip().startswith("#") else ""
        if not line:
            continue
        req, *options = line.split(" --")
        hashes = [o.split("=", 1)[1].strip() for o in options if o.startswith("hash=")]
        name = canonicalize_name(re.split(r"[=<>!~\[; ]", req, maxsplit=1)[0])
        assert name not in entries, f"{path.name}: {name} twice"
        entries[name] = (req.strip(), hashes)
    return entries


def test_service_lock():
    """The service image installs a lock: every package pinned with ``==`` and sha256 hashes, every dependency of the
    base and ``serve`` extra in it at a version its specifier allows, no torch, and the Dockerfile installs it with
    ``--require-hashes`` before ser itself (``--no-deps``)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    entries = _lock_entries(SERVICE_LOCK)
    assert len(entries) > 20
    for name, (req, hashes) in entries.items():
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", req), f"{name}: not pinned with ==: {req!r}"
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), f"{name}: no sha256 hash"
    assert not {n for n in entries if TORCH_LIKE.match(n)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"] + project["optional-dependencies"]["serve"]:
        r = Requirement(dep)
        name = canonicalize_name(r.name)
        assert name in entries, f"{dep!r} is not in {SERVICE_LOCK.name}: run scripts/lock_service.sh"
        version = entries[name][0].split("==", 1)[1]
        assert r.specifier.contains(version, prereleases=True), (
            f"{dep!r}: locked {version}; run scripts/lock_service.sh"
        )
    for extra_dep in ("uvloop", "httptools", "websockets", "setuptools", "wheel"):  # uvicorn[standard], build backend
        assert extra_dep in entries, extra_dep

    stages = parse_dockerfile(SERVICE_DOCKERFILE)
    installs = [c for stage in stages for c in _pip_installs(stage)]
    locked = [i for i, c in enumerate(installs) if "--require-hashes" in c and SERVICE_LOCK.name in c]
    project_install = [i for i, c in enumerate(installs) if re.search(r"""["']?\.\[serve\]["']?""", c)]
    assert locked and project_install and locked[0] < project_install[0], installs
    assert "--no-deps" in installs[locked[0]] and "--no-deps" in installs[project_install[0]], installs
    assert all("--require-hashes" in c or "--no-deps" in c for c in installs), (
        "every pip install of the service image is locked or resolves nothing"
    )
    copies = " ".join(_args(stages[1], "COPY"))
    assert f"docker/{SERVICE_LOCK.name}" in copies


def test_pipeline_dockerfile():
    stages = parse_dockerfile(PIPELINE_DOCKERFILE)
    values = _arg_defaults(stages)
    final = stages[-1]
    assert final[0] == ("FROM", "python:3.11-slim")
    _check_final_user(stages, PIPELINE_DOCKERFILE)
    _check_copy_sources(stages, PIPELINE_DOCKERFILE)
    installs = [_expand(c, values) for c in _pip_installs(final)]
    torch_at = [i for i, c in enumerate(installs) if "torch==" in c]
    ml_at = [i for i, c in enumerate(installs) if re.search(r"\.\[ml,pipeline(,[a-z]+)*\]", c)]
    assert torch_at and ml_at and torch_at[0] < ml_at[0], installs
    assert "--index-url https://download.pytorch.org/whl/cpu" in installs[torch_at[0]].replace('"', "")
    pins = re.findall(r"torch==([\w.]+)", installs[torch_at[0]])
    ml_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ml"]
    assert f"torch=={pins[0]}" in ml_extra, "the image's torch pin must match the ml extra"
    assert json.loads(_args(final, "ENTRYPOINT")[-1]) == ["ser", "pipeline", "run"]
    assert any("libsndfile1" in c for c in _commands(final))


def _requirement_closure(requirements: list[str]) -> set[str]:
    """Names of the installed distributions that ``requirements`` pull in (markers and extras evaluated)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    stack = [Requirement(r) for r in requirements]
    while stack:
        req = stack.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here, so nothing to follow (the name itself is still checked)
        for sub in dist.requires or []:
            r = Requirement(sub)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                stack.append(r)
    return names


def test_serve_extra_pulls_no_torch():
    """``pip install .[serve]`` (the service image) resolves without torch, judged on the installed versions."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    serve = project["optional-dependencies"]["serve"]
    for dep in ("onnxruntime", "fastapi", "uvicorn", "python-multipart", "prometheus-client", "webrtcvad-wheels"):
        assert any(r.startswith(dep) for r in serve), f"serve extra lacks {dep}"
    names = _requirement_closure(project["dependencies"] + serve)
    assert "onnxruntime" in names and "fastapi" in names
    assert not {n for n in names if TORCH_LIKE.match(n)}, sorted(n for n in names if TORCH_LIKE.match(n))


_NO_TORCH_SCRIPT = """
import json, sys, time
import numpy as np

class NoTorch:  # the service image has no torch: any attempt to import it fails here as it would there
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio", "torchvision"):
            raise ImportError(f"{name} is not installed in the service image")

sys.meta_path.insert(0, NoTorch())
from fastapi.testclient import TestClient
import ser.cli.serve_cmds, ser.serve.app, ser.serve.stream, ser.timeline
from ser.serve.app import create_app
from ser.serve.settings import Settings

with TestClient(create_app(Settings(model_dir=sys.argv[1]))) as c:
    for _ in range(400):
        if c.get("/readyz").status_code == 200:
            break
        time.sleep(0.05)
    t = np.arange(48000) / 16000
    y = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    import io, soundfile as sf
    buf = io.BytesIO(); sf.write(buf, y, 16000, format="WAV"); wav = buf.getvalue()
    assert c.post("/v1/predict", content=wav, headers={"content-type": "audio/wav"}).status_code == 200
    assert c.post("/v1/timeline", content=wav, headers={"content-type": "audio/wav"}).status_code == 200
    assert c.get("/metrics").status_code == 200
    if any(getattr(r, "path", None) == "/v1/stream" for r in c.app.routes):
        pcm = (y * 32767).astype("<i2")
        with c.websocket_connect("/v1/stream") as ws:
            ws.send_text(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm16"}))
            assert ws.receive_json()["type"] == "ready"
            for i in range(0, pcm.size, 320):
                ws.send_bytes(pcm[i : i + 320].tobytes())
            ws.send_text(json.dumps({"type": "end"}))
            while ws.receive_json()["type"] not in ("done", "error"):
                pass
assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
print("ok")
"""


def test_service_runs_without_torch(model_dir):
    """The service image's code paths (predict, timeline, metrics, the WS stream) with torch made unimportable."""
    out = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCRIPT, str(model_dir)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# ------------------------------------------------------------------------------------------------ entry point


def _run_entrypoint(tmp_path: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """The service entry point with a stub ``ser`` that prints its arguments and SER_MODEL_DIR."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    stub = bindir / "ser"
    stub.write_text('#!/bin/sh\necho "args: $*"\necho "model_dir: ${SER_MODEL_DIR:-}"\n')
    stub.chmod(0o755)
    base = {"PATH": f"{bindir}:/usr/bin:/bin", "SER_BAKED_MODEL_DIR": str(tmp_path / "baked")}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True, text=True, timeout=30
    )


def test_service_entrypoint(tmp_path):
    assert os.access(ENTRYPOINT, os.X_OK)
    r = _run_entrypoint(tmp_path, [], {})
    assert r.returncode == 2 and "no model" in r.stderr and "SER_MODEL_DIR" in r.stderr

    baked = tmp_path / "baked"
    baked.mkdir()
    (baked / "metadata.json").write_text("{}")
    (baked / "model.onnx").write_bytes(b"")
    r = _run_entrypoint(tmp_path, ["--api-key", "k"], {})
    assert r.returncode == 0, r.stderr
    assert "args: serve --host 0.0.0.0 --log-level info --api-key k" in r.stdout
    assert f"model_dir: {baked}" in r.stdout

    # the port is ser serve's to choose (ser.serve.platform.listen_port: SER_PORT, AIP_HTTP_PORT, PORT, 8000)
    r = _run_entrypoint(tmp_path, [], {"SER_WORKDIR": "/runs", "SER_PORT": "9000", "PORT": "8080"})
    assert r.returncode == 0 and "--port" not in r.stdout and "model_dir: \n" in r.stdout
    r = _run_entrypoint(tmp_path, ["--model", "/m"], {})
    assert r.returncode == 0 and r.stdout.endswith("--model /m\nmodel_dir: \n")
    r = _run_entrypoint(tmp_path, [], {"SER_MODEL_DIR": "/mounted"})
    assert r.returncode == 0 and "model_dir: /mounted" in r.stdout


# ------------------------------------------------------------------------------------------------ compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _interpolate_default(value: str) -> str:
    """``${VAR:-default}`` → default (what compose uses when VAR is unset)."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def _volumes(service: dict) -> list[tuple[str, str, str]]:
    """(source, target, mode) of a service's short-syntax volumes, defaults interpolated."""
    out = []
    for v in service.get("volumes", []):
        parts = _interpolate_default(v).split(":")
        out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def test_compose_services(compose):
    services = compose["services"]
    assert {"ser", "mlflow", "prometheus", "grafana"} <= set(services)
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for src, target, _ in _volumes(svc):
            assert target.startswith("/"), (name, target)
            if src.startswith((".", "/")):
                if not src.startswith("../"):  # ../shared/data lives beside the repository
                    assert (ROOT / src).exists(), f"{name}: bind mount {src} does not exist"
            else:
                assert src in declared, f"{name}: volume {src} not declared"
        if "build" in svc:
            assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()

    ser = services["ser"]
    assert ser["build"]["dockerfile"] == "docker/service.Dockerfile"
    assert ser["environment"]["SER_WORKDIR"] == "/runs"
    assert ("ser-runs", "/runs", "ro") in _volumes(ser)
    assert any(_interpolate_default(p).endswith(":8000") for p in ser["ports"])

    pipeline = services["pipeline"]
    assert pipeline["build"]["dockerfile"] == "docker/pipeline.Dockerfile" and pipeline["profiles"] == ["pipeline"]
    assert ("ser-runs", "/runs", "rw") in _volumes(pipeline)
    from ser.pipeline.config import parse_config

    cfg_src = next(s for s, t, _ in _volumes(pipeline) if t == pipeline["command"][-1])
    cfg = parse_config(yaml.safe_load((ROOT / cfg_src).read_text()), cfg_src)
    assert cfg.tracking.uri == "http://mlflow:5000" and cfg.data.path == "/data/ravdess"

    mlflow = services["mlflow"]
    assert re.fullmatch(r"ghcr\.io/mlflow/mlflow:v3\.17(\.\d+)?", mlflow["image"]), mlflow["image"]
    cmd = " ".join(mlflow["command"])
    assert "--backend-store-uri=sqlite:////mlflow/" in cmd and "--artifacts-destination=/mlflow/" in cmd
    assert "mlflow" in (cmd.split("--allowed-hosts=")[1].split()[0].split(","))  # the pipeline calls it by name
    assert ("mlflow-data", "/mlflow", "rw") in _volumes(mlflow)

    prom = services["prometheus"]
    assert ("./deploy/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml", "ro") in _volumes(prom)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]

    graf = _volumes(services["grafana"])
    assert ("./deploy/grafana/provisioning", "/etc/grafana/provisioning", "ro") in graf
    assert ("./deploy/grafana/dashboards", "/etc/grafana/dashboards", "ro") in graf


def test_prometheus_config(compose):
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    ser = jobs["ser"]
    assert ser.get("metrics_path", "/metrics") == "/metrics"
    # /metrics on its own port (no key there, not published): SER_METRICS_PORT of the ser service
    metrics_port = compose["services"]["ser"]["environment"]["SER_METRICS_PORT"]
    assert [t for sc in ser["static_configs"] for t in sc["targets"]] == [f"ser:{metrics_port}"]
    assert not any(str(p).endswith(f":{metrics_port}") for p in compose["services"]["ser"]["ports"])
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_provisioning(compose):
    ds_files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml"))
    sources = [d for f in ds_files for d in yaml.safe_load(f.read_text())["datasources"]]
    prom = next(d for d in sources if d["type"] == "prometheus")
    assert prom["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    uids = {d["uid"] for d in sources}

    providers = [
        p
        for f in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    mounted = {t: s for s, t, _ in _volumes(compose["services"]["grafana"])}
    for p in providers:
        assert p["options"]["path"] in mounted, f"provider path {p['options']['path']} is not mounted"
        assert (ROOT / mounted[p["options"]["path"]] / DASHBOARD.name).is_file()

    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    assert dash["uid"] and len({p["id"] for p in panels}) == len(panels)
    titles = " | ".join(p["title"].lower() for p in panels)
    for want in ("request rate", "latency", "error", "per emotion", "confidence", "audio duration", "model"):
        assert want in titles, f"no panel about {want}"
    for p in panels:
        assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] in uids, (p["title"], t["datasource"])
            assert p["datasource"]["uid"] in uids


def dashboard_exprs() -> list[str]:
    """The queries of every provisioned dashboard."""
    dashes = [json.loads(path.read_text()) for path in DASHBOARDS]
    return [t["expr"] for dash in dashes for p in dash["panels"] for t in p.get("targets", []) if t.get("expr")]


def _substitute(expr: str) -> str:
    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    return expr


def test_dashboard_promql_parses(tmp_path):
    """Every dashboard query is valid PromQL (promtool parses them as recording rules)."""
    promtool = require_tool("promtool")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"x:q{i}", "expr": _substitute(e)} for i, e in enumerate(dashboard_exprs())],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------------------------------------ the app's metrics


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("ops") / "m", "7", LABELS)


def _wav(y: np.ndarray, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _stream_once(client: TestClient, audio: np.ndarray) -> None:
    """One short real-time stream over ``WS /v1/stream``: start, 20 ms PCM16 frames, end, until done."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    start = {"type": "start", "sample_rate": 16000, "encoding": "pcm16", "hop_s": 0.5, "window_s": 1.0}
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps(start))
        assert ws.receive_json()["type"] == "ready"
        for i in range(0, pcm.size, 320):
            ws.send_bytes(pcm[i : i + 320].tobytes())
        ws.send_text(json.dumps({"type": "end"}))
        types = []
        while not types or types[-1] not in ("done", "error"):
            types.append(ws.receive_json()["type"])
    assert types[-1] == "done" and "partial" in types, types


_METRIC = re.compile(r"\b(ser_[A-Za-z0-9_:]+)")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")


def test_dashboard_metrics_exist_in_the_app(model_dir):
    """Every ``ser_*`` series a dashboard query reads is exposed by /metrics after some traffic, and every label it
    groups or filters by is a label of one of those series."""
    from ser.serve.app import create_app
    from ser.serve.settings import Settings

    with TestClient(create_app(Settings(model_dir=model_dir))) as c:
        for _ in range(400):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        clip = _wav(voice(3.0))  # speech-like: a steady tone is answered without an emotion (speech: false)
        assert c.post("/v1/predict", content=clip, headers={"content-type": "audio/wav"}).status_code == 200
        assert c.post("/v1/predict/batch", files=[("files", ("a.wav", clip)), ("files", ("b.wav", b""))]).is_success
        assert c.post("/v1/timeline", files={"file": ("a.wav", _wav(tone(6.0)))}).status_code == 200
        assert c.post("/v1/predict", content=b"", headers={"content-type": "audio/wav"}).status_code == 400
        silent = _wav(np.zeros(48_000, dtype=np.float32))  # answered without an emotion: ser_no_speech_total
        r = c.post("/v1/predict", content=silent, headers={"content-type": "audio/wav"})
        assert r.status_code == 200 and r.json()["reason"] == "no_speech", r.text
        has_stream = any(getattr(r, "path", None) == "/v1/stream" for r in c.app.routes)
        if has_stream:
            _stream_once(c, tone(1.5))
        text = c.get("/metrics").text
    labels_of: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels_of.setdefault(s.name, set()).update(s.labels)
    # the NEW metrics and labels of issue 13's contract count as present until the service exposes them
    # (tests/deploy/metrics_contract.py: the wiring change empties NEW_METRICS / NEW_LABELS)
    labels_of = with_contract(labels_of)
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        if "ser_stream" in expr and not has_stream:
            continue  # the dashboard is ready for WS /v1/stream before the app has it
        names = set(_METRIC.findall(expr))
        assert names, f"no ser_ metric in {expr!r}"
        missing = names - set(labels_of)
        assert not missing, f"{expr!r}: not in /metrics: {sorted(missing)}"
        known = set().union(*(labels_of[n] for n in names)) | {"job", "instance", "service"}
        used = {lbl.strip() for grp in _BY.findall(expr) for lbl in grp.split(",") if lbl.strip()}
        used |= set(_MATCHER.findall(expr))
        assert used <= known, f"{expr!r}: unknown labels {sorted(used - known)}"


# ------------------------------------------------------------------------------------------------ real Prometheus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _query(base: str, q: str) -> list[dict]:
    r = httpx.get(f"{base}/api/v1/query", params={"query": q}, timeout=5)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (q, body)
    return body["data"]["result"]


@pytest.mark.slow
@pytest.mark.shared_data
def test_prometheus_scrapes_ser_serve(tmp_path, model_dir, ravdess_dir):
    """A real ``ser serve`` and a real Prometheus on loopback: predictions on real clips show up in Prometheus'
    query API (request counter and per-emotion prediction counter), and every dashboard query runs there."""
    prometheus = require_tool("prometheus")
    clips = sorted((ravdess_dir / "Actor_01").glob("*.flac"))[:4]
    assert len(clips) == 4
    ser_port, prom_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    ser_log, prom_log = tmp_path / "ser.log", tmp_path / "prometheus.log"
    procs: list[subprocess.Popen] = []
    try:
        with ser_log.open("w") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "ser",
                        "serve",
                        "--model",
                        str(model_dir),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(ser_port),
                        "--workers",
                        "1",
                        "--log-level",
                        "warning",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=tmp_path,
                )
            )
        ser_url = f"http://127.0.0.1:{ser_port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "ser",
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [f"127.0.0.1:{ser_port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        with prom_log.open("w") as out:
            procs.append(
                subprocess.Popen(
                    [
                        prometheus,
                        f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                        "--log.level=warn",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                )
            )
        prom_url = f"http://127.0.0.1:{prom_port}"
        _wait_http(f"{ser_url}/readyz", procs[0], ser_log, 120)
        _wait_http(f"{prom_url}/-/ready", procs[1], prom_log, 60)

        with httpx.Client(base_url=ser_url, timeout=30) as client:
            for clip in clips:
                r = client.post("/v1/predict", files={"file": (clip.name, clip.read_bytes(), "audio/flac")})
                assert r.status_code == 200, r.text
            assert client.post("/v1/predict", content=b"", headers={"content-type": "audio/flac"}).status_code == 400

        def value(q: str) -> float | None:
            res = _query(prom_url, q)
            return float(res[0]["value"][1]) if res else None

        deadline = time.monotonic() + 30  # until a scrape after the last request has been stored
        requests = errors = predictions = None
        while time.monotonic() < deadline:
            requests = value('sum(ser_http_requests_total{job="ser",route="/v1/predict",status="200"})')
            errors = value('sum(ser_http_requests_total{job="ser",route="/v1/predict",status="400"})')
            per_emotion = _query(prom_url, 'sum by (emotion) (ser_predictions_total{job="ser",endpoint="predict"})')
            predictions = {r["metric"]["emotion"]: float(r["value"][1]) for r in per_emotion}
            if requests == len(clips) and errors == 1 and sum(predictions.values()) == len(clips):
                break
            time.sleep(0.5)
        assert requests == len(clips), f"request counter in Prometheus: {requests}"
        assert errors == 1, f"400 counter in Prometheus: {errors}"
        assert sum(predictions.values()) == len(clips) and set(predictions) <= set(LABELS), predictions
        assert _query(prom_url, 'ser_model_info{job="ser"}')[0]["metric"]["version"] == "7"
        for expr in dashboard_exprs():  # every panel's query is accepted by a real Prometheus
            _query(prom_url, _substitute(expr))
    finally:
        for p in reversed(procs):
            _stop(p)
