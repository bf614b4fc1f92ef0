"""The metric contract of issue 13 (model monitoring) that the alert rules (deploy/prometheus/alerts.yml) and the
monitoring dashboard (deploy/grafana/dashboards/ser-monitoring.json) are written against, and what the app's
/metrics exposes today.

``NEW_METRICS`` and ``NEW_LABELS`` list what the service does not expose YET: the rules and dashboards may use them,
and the tests (test_alerts.py, test_ops.py::test_dashboard_metrics_exist_in_the_app) accept them as if they were in
/metrics. The change that wires them into ``src/ser/serve/metrics.py`` removes each entry it implements; from then on
the name (or label) must really be in /metrics, and ``test_alerts.py::test_metric_contract_is_not_stale`` fails for
an entry left here after the app exposes it. When both are empty, every metric the rules and dashboards read must
exist in the app.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.test_timeline import voice

# Labels every scraped series gets from Prometheus (job, instance) or from the compose scrape config (service).
TARGET_LABELS = frozenset({"job", "instance", "service"})

# Series the rules and dashboards read that this module's traffic (a model folder without a training reference, no
# feedback, no evaluation UAR, no shadow model) does not make the app expose; tests/serve/test_monitoring.py checks
# them on an app that has those. Implemented: ser_stream_capacity, ser_input_* histograms,
# ser_prediction_log_dropped_total, model_version on the prediction series.
NEW_METRICS: dict[str, frozenset[str]] = {
    # PSI of one input statistic over the sliding window of recent answers vs the model's training reference;
    # statistic: rms_dbfs, peak_dbfs, snr_db, speech_fraction, clipped_fraction, highband_share, confidence, label_mix
    "ser_drift_psi": frozenset({"statistic", "model_version"}),
    # how many statistics are over their drift threshold now (0 = none)
    "ser_drift_flagged": frozenset({"model_version"}),
    # answers in the sliding window
    "ser_drift_window_size": frozenset({"model_version"}),
    # UAR of the answers that got feedback (feedback window), how many labelled answers it is computed on, and the
    # cross-validated UAR from the model's metadata
    "ser_live_uar": frozenset({"model_version"}),
    "ser_live_feedback": frozenset({"model_version"}),
    "ser_model_expected_uar": frozenset({"model_version"}),
    # the shadow model's answers and whether they agreed with the champion (agree: "true" | "false")
    "ser_shadow_predictions_total": frozenset({"model_version", "agree"}),
}

# NEW labels on series the app already exposes (series name → the labels to come).
NEW_LABELS: dict[str, frozenset[str]] = {}


def series_labels(metrics_text: str) -> dict[str, set[str]]:
    """``{series name: its label names}`` of a /metrics page (``_bucket``, ``_sum``, ``_count``, ``_total`` as
    scraped)."""
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(metrics_text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def with_contract(labels_of: dict[str, set[str]]) -> dict[str, set[str]]:
    """``labels_of`` (from :func:`series_labels`) with the NEW metrics and labels of the contract added."""
    out = {name: set(labels) for name, labels in labels_of.items()}
    for name, labels in (*NEW_METRICS.items(), *NEW_LABELS.items()):
        out.setdefault(name, set()).update(labels)
    return out


def _wav(y: np.ndarray, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def app_metrics_text(model_dir: Path) -> str:
    """/metrics of the app serving ``model_dir`` after some traffic: predictions on speech, on silence and on a
    clipped clip (no emotion: ``ser_no_speech_total``), a batch with a bad item, a timeline, a 400."""
    from ser.serve.app import create_app
    from ser.serve.settings import Settings

    speech = _wav(voice(3.0))
    silent = _wav(np.zeros(3 * 16_000, dtype=np.float32))
    clipped = _wav(np.sign(voice(3.0)) * 1.0)
    with TestClient(create_app(Settings(model_dir=model_dir))) as c:
        for _ in range(400):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        reasons = []
        for wav in (speech, silent, clipped):
            r = c.post("/v1/predict", content=wav, headers={"content-type": "audio/wav"})
            assert r.status_code == 200, r.text
            reasons.append(r.json()["reason"])
        assert reasons[1:] == ["no_speech", "clipped"], reasons
        files = [("files", ("a.wav", speech)), ("files", ("b.wav", silent)), ("files", ("c.wav", b""))]
        assert c.post("/v1/predict/batch", files=files).is_success
        assert c.post("/v1/timeline", files={"file": ("a.wav", speech)}).status_code == 200
        assert c.post("/v1/predict", content=b"", headers={"content-type": "audio/wav"}).status_code == 400
        return c.get("/metrics").text
