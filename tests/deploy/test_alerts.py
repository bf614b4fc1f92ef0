"""Alerting: the Prometheus rules (deploy/prometheus/alerts.yml) pass ``promtool check rules`` and their unit tests
(``promtool test rules tests/deploy/alerts_test.yml``); every alert has a severity that Alertmanager routes, a
summary, a description and a runbook, and a unit test that fires it and one that must not; every metric and label
the rules read is in the app's /metrics or in the metric contract (tests/deploy/metrics_contract.py); Alertmanager's
config passes ``amtool check-config`` and routes critical to the pager, warning to the team; docker-compose.yml and
prometheus.yml wire Prometheus, its rules and Alertmanager together.

``promtool`` and ``amtool`` come from scripts/install_prometheus.sh (Debian's prometheus and
prometheus-alertmanager); without them the tests that run them fail under CI and skip elsewhere.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.conftest import export_tiny_model
from tests.deploy.metrics_contract import (
    NEW_LABELS,
    NEW_METRICS,
    TARGET_LABELS,
    app_metrics_text,
    series_labels,
    with_contract,
)
from tests.deploy.test_ops import (
    LABELS,
    _free_port,
    _interpolate_default,
    _query,
    _stop,
    _volumes,
    _wait_http,
    _wav,
    require_tool,
)
from tests.serve.test_timeline import voice

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "tests" / "deploy" / "alerts_test.yml"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
COMPOSE = ROOT / "docker-compose.yml"
INSTALL = ROOT / "scripts" / "install_prometheus.sh"
CI_RUN = ROOT / ".ci" / "run"

# The alerts of issue 13 and their severities (critical → pager, warning → team).
WANTED = {
    "SerDown": "critical",
    "SerHigh5xxRatio": "critical",
    "SerNoModelLoaded": "critical",
    "SerLatencyP95OverSLO": "warning",
    "SerReloadFailing": "warning",
    "SerInputDrift": "warning",
    "SerSilenceShareHigh": "warning",
    "SerClippingShareHigh": "warning",
    "SerLowSnrShareHigh": "warning",
    "SerLiveUarUnderGate": "warning",
    "SerStreamsNearCapacity": "warning",
    "SerPredictionLogDropping": "warning",
}
RECEIVERS = {"critical": "pager", "warning": "team"}


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def alerts(rules) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in rules:
        if "alert" in r:
            assert r["alert"] not in out, f"alert {r['alert']} twice"
            out[r["alert"]] = r
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


# ------------------------------------------------------------------------------------------------ promtool


def test_promtool_check_rules():
    promtool = require_tool("promtool")
    out = _run(promtool, "check", "rules", ALERTS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_rule_unit_tests():
    """tests/deploy/alerts_test.yml: exact labels and annotations of every firing case, and the quiet cases."""
    promtool = require_tool("promtool")
    out = _run(promtool, "test", "rules", ALERTS_TEST)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


# ------------------------------------------------------------------------------------------------ the rules


def test_every_alert_is_routable_and_documented(alerts):
    assert set(alerts) == set(WANTED)
    for name, rule in alerts.items():
        assert rule.get("labels", {}).get("severity") == WANTED[name], name
        notes = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert len(str(notes.get(key, "")).strip()) > 20, f"{name}: no {key}"
        assert "\n" not in notes["summary"], f"{name}: the summary is one line"
        if name != "SerReloadFailing":  # a failed load is an event: it alerts at once and resolves 30 m later
            assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no `for:` duration"


def _durations_s(text: str) -> int:
    return sum(int(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in re.findall(r"(\d+)([smh])", text))


def test_alert_durations(alerts):
    """The `for:` the issue asks for, and each description says the duration its alert waits."""
    want_for = {"SerLatencyP95OverSLO": 600, "SerInputDrift": 1800, "SerStreamsNearCapacity": 300}
    for name, seconds in want_for.items():
        assert _durations_s(alerts[name]["for"]) == seconds, name
    for name, rule in alerts.items():
        if "for" in rule:
            minutes = _durations_s(rule["for"]) // 60
            assert f"{minutes} minutes" in rule["annotations"]["description"], name
    assert "1 s" in alerts["SerLatencyP95OverSLO"]["annotations"]["description"]  # the SLO is stated
    assert "SLO" in alerts["SerLatencyP95OverSLO"]["annotations"]["description"]


def _unit_cases() -> dict[str, dict[str, int]]:
    """``{alert: {"fires": n, "quiet": n}}`` over the test groups of alerts_test.yml: a group fires an alert when one
    of its checks expects it firing, and is quiet for it when all its checks of that alert expect nothing."""
    out: dict[str, dict[str, int]] = {}
    for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        fired: dict[str, bool] = {}
        for check in test.get("alert_rule_test", []):
            fired[check["alertname"]] = fired.get(check["alertname"], False) or bool(check.get("exp_alerts"))
        for name, f in fired.items():
            out.setdefault(name, {"fires": 0, "quiet": 0})["fires" if f else "quiet"] += 1
    return out


def test_every_alert_has_a_firing_and_a_quiet_unit_test(alerts):
    cases = _unit_cases()
    for name in alerts:
        assert cases.get(name, {}).get("fires"), f"{name}: no unit test fires it"
        assert cases.get(name, {}).get("quiet"), f"{name}: no unit test where it must stay quiet"
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == ["../../deploy/prometheus/alerts.yml"]
    fired = [
        a["exp_labels"]
        for t in tests["tests"]
        for c in t.get("alert_rule_test", [])
        for a in c.get("exp_alerts") or []
        if c["alertname"] == "SerInputDrift"
    ]
    assert any(lbl.get("model_version") == "1" for lbl in fired)  # the monitoring drift test's degraded traffic


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"\b(ser_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")


def _names(expr: str) -> tuple[set[str], set[str]]:
    """(``ser_*`` series, recorded series ``level:metric:ops``) an expression reads."""
    idents = set(_IDENT.findall(_STRING.sub('""', expr)))
    return {i for i in idents if i.startswith("ser_")}, {i for i in idents if ":" in i}


@pytest.fixture(scope="module")
def app_labels(tmp_path_factory) -> dict[str, set[str]]:
    """Series → label names of the app's /metrics after traffic (predictions, no speech, clipped, errors)."""
    model_dir = export_tiny_model(tmp_path_factory.mktemp("alerts") / "m", "7", LABELS)
    return series_labels(app_metrics_text(model_dir))


def test_rule_metrics_exist_in_the_app_or_the_contract(rules, app_labels):
    """Every ``ser_*`` series a rule reads is in /metrics today or NEW in the contract; every label a rule filters,
    groups or matches on, or an alert's annotations print, is one of those series' labels (or job, instance,
    service); every recorded series an expression reads is recorded by an earlier rule."""
    known = with_contract(app_labels)
    recorded: dict[str, set[str]] = {}  # record → labels it may carry
    for rule in rules:
        expr = rule["expr"]
        where = rule.get("record") or rule["alert"]
        series, records = _names(expr)
        assert series or records or expr.startswith("up{"), f"{where}: reads nothing of ser"
        missing = series - set(known)
        assert not missing, f"{where}: not in /metrics nor in the contract: {sorted(missing)}"
        unknown_records = records - set(recorded)
        assert not unknown_records, f"{where}: reads {sorted(unknown_records)}, recorded nowhere before it"
        inputs = set().union(*(known[s] | TARGET_LABELS for s in series), *(recorded[r] for r in records))
        if re.match(r"up\b", expr):  # Prometheus' own series of the scrape target
            inputs |= TARGET_LABELS
        labels = inputs | TARGET_LABELS
        for name, matchers in _SELECTOR.findall(expr):
            used = set(_MATCHER.findall(matchers)) - TARGET_LABELS
            assert used <= known[name], f"{where}: {name} has no label {sorted(used - known[name])}"
        bare = _STRING.sub('""', expr)
        grouped = {lbl.strip() for grp in _GROUPING.findall(bare) for lbl in grp.split(",")} - {""}
        assert grouped <= labels, f"{where}: unknown labels {sorted(grouped - labels)}"
        # what the result may carry: the `by` labels where it aggregates, else its inputs' labels (a superset)
        if _BY.search(bare):
            out = {lbl.strip() for grp in _BY.findall(bare) for lbl in grp.split(",")} - {""}
            out |= set().union(*(recorded[r] for r in records))
        else:
            out = inputs
        if "record" in rule:
            recorded[rule["record"]] = out
        else:
            printed = {m for text in rule.get("annotations", {}).values() for m in _TEMPLATE_LABEL.findall(text)}
            assert printed <= out, f"{where}: annotations print labels it does not have: {sorted(printed - out)}"


def test_metric_contract_is_not_stale(app_labels):
    """An entry of NEW_METRICS / NEW_LABELS that the app exposes now must leave the contract (metrics_contract.py),
    so that it is checked against /metrics from then on."""
    wired = sorted(set(NEW_METRICS) & set(app_labels))
    assert not wired, f"in /metrics now: remove {wired} from NEW_METRICS in tests/deploy/metrics_contract.py"
    for name, labels in NEW_LABELS.items():
        have = labels & app_labels.get(name, set())
        assert not have, f"{name} has {sorted(have)} now: remove it from NEW_LABELS in metrics_contract.py"


@pytest.mark.slow
def test_rules_run_in_a_real_prometheus(tmp_path):
    """A real Prometheus loads alerts.yml and scrapes a real ``ser serve``: every rule evaluates without error,
    the answer shares are recorded from real traffic (speech, silence, clipped), and a failed model reload fires
    SerReloadFailing at once although the failed counter is born with it (value 1, nothing for increase() to see)."""
    prometheus = require_tool("prometheus")
    model_dir = export_tiny_model(tmp_path / "m", "7", LABELS)
    ser_port, prom_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    env["SER_ADMIN_KEYS"] = "ops:admin-test-key"  # turns POST /v1/admin/reload on; the API stays open
    ser_log, prom_log = tmp_path / "ser.log", tmp_path / "prometheus.log"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "ser",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{ser_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    serve = [sys.executable, "-m", "ser", "serve", "--model", str(model_dir), "--host", "127.0.0.1"]
    serve += ["--port", str(ser_port), "--workers", "1", "--log-level", "warning"]
    procs: list[subprocess.Popen] = []
    try:
        with ser_log.open("w") as out:
            procs.append(subprocess.Popen(serve, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path))
        with prom_log.open("w") as out:
            prom = [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ]
            procs.append(subprocess.Popen(prom, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path))
        ser_url, prom_url = f"http://127.0.0.1:{ser_port}", f"http://127.0.0.1:{prom_port}"
        _wait_http(f"{ser_url}/readyz", procs[0], ser_log, 120)
        _wait_http(f"{prom_url}/-/ready", procs[1], prom_log, 60)

        speech, silent = _wav(voice(3.0)), _wav(np.zeros(48_000, dtype=np.float32))
        clipped = _wav(np.sign(voice(3.0)))
        with httpx.Client(base_url=ser_url, timeout=30) as client:

            def traffic() -> None:
                for wav in (speech, speech, silent, clipped):
                    r = client.post("/v1/predict", content=wav, headers={"content-type": "audio/wav"})
                    assert r.status_code == 200, r.text

            traffic()  # creates the series; increase() counts from their first scrape on
            # the second round must land after that first scrape, or every increase() is 0 and the shares 0/0:
            # wait for the scrape itself (Prometheus may start scraping a few seconds after it reports ready)
            deadline = time.monotonic() + 60
            while len(_query(prom_url, 'ser_no_speech_total{job="ser"}')) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            traffic()
            (model_dir / "model.onnx").write_bytes(b"not a model")  # the next load fails
            r = client.post("/v1/admin/reload", headers={"X-API-Key": "admin-test-key"})
            assert r.status_code == 409, r.text

        def done() -> tuple[list[dict], dict[str, float], list[dict]]:
            groups = httpx.get(f"{prom_url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            ratios = _query(prom_url, 'job_reason:ser_no_speech:ratio15m{job="ser"}')
            shares = {r["metric"]["reason"]: float(r["value"][1]) for r in ratios}
            firing = _query(prom_url, 'ALERTS{alertname="SerReloadFailing", alertstate="firing"}')
            return [r for g in groups for r in g["rules"]], shares, firing

        deadline = time.monotonic() + 60
        while True:
            rules, shares, firing = done()
            settled = all(r["health"] == "ok" for r in rules) and len(shares) == 2 and firing
            settled = settled and all(math.isfinite(v) for v in shares.values())
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        bad = {r["name"]: (r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"}
        assert not bad, bad
        assert len(rules) == len([r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]])
        # 4 answers per round: 2 with an emotion, 1 no_speech, 1 clipped
        assert set(shares) == {"no_speech", "clipped"} and all(0.15 < v < 0.35 for v in shares.values()), shares
        assert firing and firing[0]["metric"]["severity"] == "warning", firing
        assert firing[0]["metric"]["instance"] == f"127.0.0.1:{ser_port}"
        assert not _query(prom_url, 'ALERTS{alertname="SerDown"}')
    finally:
        for p in reversed(procs):
            _stop(p)


# ------------------------------------------------------------------------------------------------ Alertmanager


def _amtool_version(amtool: str) -> tuple[int, ...]:
    out = _run(amtool, "--version")
    m = re.search(r"version (\d+)\.(\d+)", out.stdout + out.stderr)
    return tuple(int(x) for x in m.groups()) if m else (0, 0)


@pytest.fixture(scope="module")
def am_config_for_amtool(tmp_path_factory) -> Path:
    """alertmanager.yml as amtool here can read it. Webhook ``url_file`` is newer than Alertmanager 0.25, Debian 12's
    amtool (the compose image, 0.28, reads it), so for an amtool older than 0.27 each ``url_file`` is swapped for a
    placeholder ``url`` and everything else is checked as written."""
    amtool = require_tool("amtool")
    if _amtool_version(amtool) >= (0, 27):
        return ALERTMANAGER_YML
    text = re.sub(r"\burl_file: \S+", "url: https://placeholder.invalid/", ALERTMANAGER_YML.read_text())
    path = tmp_path_factory.mktemp("am") / "alertmanager.yml"
    path.write_text(text)
    return path


def test_amtool_check_config(am_config_for_amtool):
    amtool = require_tool("amtool")
    out = _run(amtool, "check-config", am_config_for_amtool)
    assert out.returncode == 0, out.stdout + out.stderr


def test_alertmanager_routes_by_severity(am_config_for_amtool, alerts):
    """critical → pager, warning → team, anything else → team, for every alert's own labels."""
    amtool = require_tool("amtool")

    def receivers(*labels: str) -> str:
        out = _run(amtool, "config", "routes", "test", f"--config.file={am_config_for_amtool}", *labels)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.strip()

    for name, rule in alerts.items():
        severity = rule["labels"]["severity"]
        assert receivers(f"alertname={name}", "job=ser", f"severity={severity}") == RECEIVERS[severity], name
    assert receivers("alertname=Other") == "team"


def test_alertmanager_config():
    """Grouping, SerDown inhibiting the other ser alerts of its job, and webhook receivers whose URLs come from the
    compose secrets (no URL in the repository's config)."""
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text())
    route = cfg["route"]
    assert {"alertname", "job"} <= set(route["group_by"])
    for key in ("group_wait", "group_interval", "repeat_interval"):
        assert _durations_s(route[key]) > 0, key
    down = [r for r in cfg["inhibit_rules"] if r["source_matchers"] == ['alertname="SerDown"']]
    assert down and down[0]["equal"] == ["job"], cfg["inhibit_rules"]
    assert set(down[0]["target_matchers"]) == {'alertname=~"Ser.+"', 'alertname!="SerDown"'}

    receivers = {r["name"]: r for r in cfg["receivers"]}
    assert set(receivers) == set(RECEIVERS.values())
    for name, rec in receivers.items():
        hooks = rec["webhook_configs"]
        assert hooks and all(h["url_file"].startswith("/run/secrets/") and "url" not in h for h in hooks), name
        assert all(h.get("send_resolved") for h in hooks)
    assert not re.search(r"https?://", re.sub(r"#.*", "", ALERTMANAGER_YML.read_text())), "a URL in the config"


def test_compose_alertmanager(compose):
    services = compose["services"]
    am = services["alertmanager"]
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", am["image"]), am["image"]
    minor = tuple(int(x) for x in am["image"].split(":v")[1].split(".")[:2])
    assert minor >= (0, 27), "webhook url_file: not in Alertmanager 0.25"
    assert ("./deploy/alertmanager/alertmanager.yml", "/etc/alertmanager/alertmanager.yml", "ro") in _volumes(am)
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am["command"]
    assert "alertmanager-data" in compose["volumes"]
    assert all(_interpolate_default(p).startswith("127.0.0.1:") for p in am.get("ports", [])), "no login: loopback"

    # the receivers' url_file are the compose secrets of this service, each backed by a file that exists
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text())
    url_files = {h["url_file"] for r in cfg["receivers"] for h in r["webhook_configs"]}
    assert url_files == {f"/run/secrets/{s}" for s in am["secrets"]}
    for secret in am["secrets"]:
        src = _interpolate_default(compose["secrets"][secret]["file"])
        assert (ROOT / src).is_file(), f"{secret}: {src} missing"
        url = (ROOT / src).read_text().strip()
        assert re.fullmatch(r"https?://[\w.-]+\.invalid(/\S*)?", url), f"{src}: not a placeholder: {url!r}"
        assert "_FILE:-" in compose["secrets"][secret]["file"], f"{secret}: not overridable from the environment"


def test_prometheus_loads_the_rules_and_sends_to_alertmanager(compose):
    prom = compose["services"]["prometheus"]
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    mounts = {target: src for src, target, _ in _volumes(prom)}
    config_dir = Path("/etc/prometheus")
    assert mounts[str(config_dir / "prometheus.yml")] == "./deploy/prometheus/prometheus.yml"
    for rule_file in cfg["rule_files"]:
        in_container = config_dir / rule_file  # relative to the config file, in the container and here
        assert mounts.get(str(in_container)) == f"./deploy/prometheus/{rule_file}", f"{rule_file} is not mounted"
        assert (PROMETHEUS_YML.parent / rule_file).resolve() == ALERTS
    targets = [t for am in cfg["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]
    host, port = targets[0].split(":")
    assert host in compose["services"] and port == "9093"  # Alertmanager's default --web.listen-address
    assert "alertmanager" in prom["depends_on"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["alertmanager"]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    promtool = require_tool("promtool")
    out = _run(promtool, "check", "config", PROMETHEUS_YML)  # also loads and checks the rule files
    assert out.returncode == 0 and "rule files found" in out.stdout, out.stdout + out.stderr


def test_install_script_brings_amtool():
    script = INSTALL.read_text()
    assert re.search(r"apt_install .*\\\n\s*prometheus prometheus-alertmanager\b", script), "apt package"
    assert "command -v amtool" in script
    assert "disable --now prometheus prometheus-alertmanager" in script
    assert re.search(r"^scripts/install_prometheus\.sh$", CI_RUN.read_text(), re.M), ".ci/run must call it"
