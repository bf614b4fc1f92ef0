"""The model-monitoring dashboard (deploy/grafana/dashboards/ser-monitoring.json): provisioned beside ser.json,
well-formed, with panels for drift, input quality, live accuracy and model versions. Its queries are checked with
every dashboard's by test_ops.py (valid PromQL; every metric and label in /metrics or in the metric contract)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.deploy.test_ops import DASHBOARDS, GRAFANA, _volumes

ROOT = Path(__file__).resolve().parents[2]
MONITORING = GRAFANA / "dashboards" / "ser-monitoring.json"


def _panels(dash: dict) -> list[dict]:
    return dash["panels"]


def _exprs(panel: dict) -> list[str]:
    return [t["expr"] for t in panel.get("targets", []) if t.get("expr")]


def test_monitoring_dashboard_is_provisioned():
    assert MONITORING in DASHBOARDS
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounted = {t: s for s, t, _ in _volumes(compose["services"]["grafana"])}
    providers = [
        p
        for f in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert any((ROOT / mounted[p["options"]["path"]] / MONITORING.name).is_file() for p in providers)
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids), uids


def test_monitoring_dashboard_panels():
    dash = json.loads(MONITORING.read_text())
    panels = _panels(dash)
    assert dash["uid"] == "ser-monitoring" and len({p["id"] for p in panels}) == len(panels)
    sources = [
        d
        for f in sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml"))
        for d in yaml.safe_load(f.read_text())["datasources"]
    ]
    uids = {d["uid"] for d in sources}
    for p in panels:
        assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] in uids and p.get("description"), p["title"]
        assert p["targets"] and all(t["datasource"]["uid"] in uids for t in p["targets"]), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs), p["title"]

    def panel_reading(metric: str, *words: str) -> dict:
        hits = [
            p for p in panels if any(metric in e for e in _exprs(p)) and all(w in p["title"].lower() for w in words)
        ]
        assert hits, f"no panel on {metric} titled with {words}"
        return hits[0]

    panel_reading("ser_drift_psi", "psi", "statistic")
    panel_reading("ser_drift_flagged", "drift")
    panel_reading("ser_drift_window_size", "window")
    shares = panel_reading("ser_no_speech_total", "share")
    assert any("by (reason)" in e for e in _exprs(shares))  # silence and clipping, one series each
    panel_reading("ser_input_snr_db_bucket", "snr", "distribution")
    panel_reading("ser_input_level_dbfs_bucket", "level", "distribution")
    panel_reading("ser_input_speech_fraction_bucket", "speech")
    panel_reading("ser_input_clipped_fraction_bucket", "clipped")
    uar = panel_reading("ser_live_uar", "uar", "model version")
    assert any("ser_model_expected_uar" in e for e in _exprs(uar)), "live UAR beside the expected UAR"
    assert any("by (model_version)" in e for e in _exprs(uar))
    panel_reading("ser_live_feedback", "labelled")
    per_version = panel_reading("ser_predictions_total", "per model version")
    assert all("by (model_version)" in e for e in _exprs(per_version))
    rows = [p["title"].lower() for p in panels if p["type"] == "row"]
    for want in ("drift", "input quality", "live accuracy", "model versions"):
        assert any(want in r for r in rows), f"no row {want}"
