"""Drift detection on real RAVDESS clips: a reference from clean clips of some actors, a live log from clean clips of
the other actors (no drift), then the same live clips through a telephone channel, noise at 5 dB SNR and a 30 dB
level drop (each flagged on the statistics it changes, exit code 1 through the CLI).

Reference and live hold the same sentences, emotions and intensities (the same file positions in each actor's
folder) and balanced speakers (actors with number mod 4 in {0, 1} vs {2, 3}: six men and six women each), so the
only difference between them is the speakers. Predictions are fake (no model is needed to log input statistics).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from ser.monitor.log import append_records
from ser.monitor.report import flagged_names
from tests.monitor.conftest import LABELS, fake_probs, fake_record, model_folder

pytestmark = pytest.mark.shared_data

FILES = (5, 20, 45)  # positions in each actor's sorted folder: the same sentence / emotion / intensity per actor
REF_ACTORS = [a for a in range(1, 25) if a % 4 in (0, 1)]
LIVE_ACTORS = [a for a in range(1, 25) if a % 4 in (2, 3)]
CONDITIONS = {
    "clean": "clean",
    "telephone": "telephone",
    "noise": "noise:babble@5",
    "level": "level-30db",
}
EXPECTED = {
    "telephone": {"high_band_share", "quality:narrow_band"},
    "noise": {"snr_db", "quality:low_snr"},
    "level": {"rms_dbfs", "peak_dbfs"},
}
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def clips(root: Path, actors: list[int]) -> list[Path]:
    out = []
    for a in actors:
        files = sorted((root / f"Actor_{a:02d}").glob("*.flac"))
        out += [files[i] for i in FILES]
    return out


@pytest.fixture(scope="module")
def setup(ravdess_dir, tmp_path_factory):
    from ser import degrade
    from ser.audio import load_audio, probe
    from ser.monitor.reference import build_reference, write_reference
    from ser.monitor.stats import input_stats

    shared = ravdess_dir.parent
    tmp = tmp_path_factory.mktemp("ravdess-drift")
    rng = np.random.default_rng(0)

    def stats(path: Path, condition: str, seed: int):
        info = probe(path)
        y = load_audio(path)
        if condition != "clean":
            y = degrade.apply(y, 16000, condition, rng=seed, noises=shared / "noise")
        facts = dict(native_sr=info.sample_rate, channels=info.channels, container=info.format, codec=info.subtype)
        return input_stats(y, **facts), y.size / 16000

    ref = [stats(p, "clean", i) for i, p in enumerate(clips(ravdess_dir, REF_ACTORS))]
    probs = [fake_probs(rng) for _ in ref]
    model = model_folder(tmp / "model", version="1")
    write_reference(
        model,
        build_reference(
            [s for s, _ in ref],
            [d for _, d in ref],
            labels=[LABELS[int(np.argmax(p))] for p in probs],
            confidences=[float(p.max()) for p in probs],
        ),
    )
    live_clips = clips(ravdess_dir, LIVE_ACTORS)
    logs = {}
    for name, condition in CONDITIONS.items():
        recs = []
        for i, p in enumerate(live_clips):
            st, dur = stats(p, condition, i)
            recs.append(fake_record(rng, ts=T0 + timedelta(minutes=i), stats=st, duration_s=dur))
        append_records(tmp / name, recs)
        logs[name] = tmp / name
    return model, logs, tmp


def report(run_cli, setup, name):
    model, logs, tmp = setup
    out = tmp / f"report-{name}"
    code, stdout, err = run_cli("monitor", "report", "--log", logs[name], "--model", model, "--out", out, "--json")
    return code, json.loads(stdout), err


def test_clean_clips_of_other_actors_show_no_drift(run_cli, setup):
    code, data, err = report(run_cli, setup, "clean")
    assert code == 0, err
    assert not data["flagged"] and flagged_names(data) == set()
    assert data["log"]["predictions"] == len(LIVE_ACTORS) * len(FILES) == 36
    assert data["model"]["reference"]["clips"] == 36


@pytest.mark.parametrize("name", ["telephone", "noise", "level"])
def test_degraded_clips_are_flagged_on_what_changed(run_cli, setup, name):
    code, data, err = report(run_cli, setup, name)
    assert code == 1 and "threshold crossed" in err
    flagged = flagged_names(data)
    assert EXPECTED[name] <= flagged, flagged
    others = set().union(*(EXPECTED[k] for k in EXPECTED if k != name)) - EXPECTED[name]
    if name == "level":
        others -= {"snr_db"}  # near digital silence the SNR floor follows the level (see ser.monitor.stats)
    assert not flagged & others, flagged & others
