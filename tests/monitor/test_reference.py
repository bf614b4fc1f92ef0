"""The reference profile: built from corpus files with the model's own preprocessing and the out-of-fold
predictions, written into the model folder, read back (None for folders exported before it existed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ser.errors import SerError
from ser.monitor.reference import REFERENCE_FORMAT, build_reference, load_reference, sample_indices
from tests.monitor.conftest import LABELS, fake_stats, model_folder


def test_sample_indices():
    assert sample_indices(5, 10).tolist() == [0, 1, 2, 3, 4]
    s = sample_indices(10_000, 2000, seed=3)
    assert len(s) == 2000 and len(set(s.tolist())) == 2000 and s.tolist() == sorted(s.tolist())
    assert s.tolist() == sample_indices(10_000, 2000, seed=3).tolist()


def test_build_and_load_round_trip(tmp_path):
    from ser.monitor.reference import write_reference

    rng = np.random.default_rng(0)
    model = model_folder(tmp_path / "m")
    assert load_reference(model) is None
    stats = [fake_stats(rng) for _ in range(5)]
    table = build_reference(
        stats, [1.0, 2.0, 3.0, 4.0, 5.0], labels=["sad", None, "sad", "calm", "sad"],
        confidences=[0.5, None, 0.7, 0.4, 0.9], meta={"seed": 1},
    )  # fmt: skip
    write_reference(model, table)
    ref = load_reference(model)
    assert ref is not None and ref.n == 5 and ref.n_mels == 8
    assert ref.meta["format"] == REFERENCE_FORMAT and ref.meta["seed"] == 1
    assert np.isnan(ref.column("confidence")[1]) and ref.column("label")[1] is None
    assert ref.bands("mel_mean")[2] == pytest.approx(stats[2].mel_mean)
    with pytest.raises(SerError):
        build_reference(stats, [1.0])


def test_reference_job_on_real_clips(ravdess_dir, tmp_path):
    from ser.jobs.monitor import ReferenceJob, oof_predictions

    files = sorted(ravdess_dir.glob("Actor_0[12]/*.flac"))[::20][:5]
    manifest = pd.DataFrame(
        {
            "utt_id": [f"u{i}" for i in range(len(files))] + ["broken"],
            "path": [str(f) for f in files] + [str(tmp_path / "x.wav")],  # a missing file: skipped, counted
            "emotion": ["sad"] * (len(files) + 1),
        }
    )
    folds = [
        SimpleNamespace(proba=np.eye(len(LABELS))[[3, 4]], utt_ids=["u0", "u1"]),
        SimpleNamespace(
            proba=np.full((1, len(LABELS)), 1 / len(LABELS)) + np.eye(len(LABELS))[2] * 0.1, utt_ids=["u2"]
        ),
    ]
    oof = oof_predictions(folds, LABELS)
    assert oof["label"].tolist() == ["sad", "angry", "happy"] and oof["confidence"].iloc[0] == 1.0
    model = model_folder(tmp_path / "model")
    out = ReferenceJob(model, manifest, oof, max_clips=100).run()
    assert (out.clips, out.corpus, out.failed) == (len(files), len(files) + 1, 1)
    ref = load_reference(model)
    assert ref is not None and ref.n == len(files)
    assert ref.column("label").tolist()[:4] == ["sad", "angry", "happy", None]
    import soundfile as sf

    assert ref.column("native_sr").tolist() == [float(sf.info(f).samplerate) for f in files]
    assert set(ref.column("container").tolist()) == {"FLAC"}
    assert ref.n_mels == 64 and np.all(ref.column("rms_dbfs") < -10)
    assert ref.meta["with_prediction"] == 3 and ref.meta["failed"] == 1
