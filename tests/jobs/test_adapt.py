"""``ser model adapt`` / :class:`ser.jobs.adapt.AdaptJob`: unlabelled target audio through the model's own
preprocessing → an adapted copy of the folder that loads, predicts, and maps a quieter deployment back onto the
training statistics; bad input is a clear error or a skipped file with its reason."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ser.errors import ConfigError, SerError
from tests.conftest import export_tiny_model, tone, write_wav

GAIN_DB = -20.0


def _speechlike(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A tone with a random pitch plus broadband noise (every mel band holds energy well above the floor)."""
    y = tone(seconds, freq=float(rng.uniform(120, 300))) + 0.05 * rng.standard_normal(int(seconds * 16000))
    return (y * np.hanning(y.size) ** 0.2).astype(np.float32)


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """A model folder with a reference profile of its 'training' clips, those clips, and a 'deployment' of other
    clips of the same kind recorded 20 dB quieter."""
    from ser.jobs.monitor import ReferenceJob

    root = tmp_path_factory.mktemp("adapt_job")
    rng = np.random.default_rng(0)
    train = [write_wav(root / "train" / f"t{i}.wav", _speechlike(rng, rng.uniform(0.8, 1.6))) for i in range(8)]
    gain = 10 ** (GAIN_DB / 20)
    target = [write_wav(root / "target" / "day1" / f"c{i}.wav", gain * _speechlike(rng, rng.uniform(0.8, 1.6)))
              for i in range(8)]  # fmt: skip
    model = export_tiny_model(root / "model")
    manifest = pd.DataFrame({"utt_id": [p.stem for p in train], "path": [str(p) for p in train], "emotion": "sad"})
    ReferenceJob(model, manifest).run()
    return {"root": root, "model": model, "train": root / "train", "target": root / "target", "files": target}


def test_adapt_job_maps_a_quieter_deployment_back(domains, tmp_path):
    from ser.adaptation import ADAPTATION_FILE, read_adaptation
    from ser.inference import Predictor
    from ser.jobs.adapt import AdaptJob
    from ser.model_folder import CARD_FILE, REFERENCE_FILE, read_metadata

    out = AdaptJob(domains["model"], domains["target"], tmp_path / "adapted", target="call-centre").run()
    assert out.files == 8 and not out.skipped and out.seconds > 6
    assert not out.invariant and out.to_dict()["invariant"] is False  # the tiny model normalises by batch
    assert out.source.startswith("reference.parquet, 8 training clips")
    meta = read_metadata(out.path)
    info = meta["adaptation"]
    assert info["target"] == "call-centre" and info["files"] == 8 and info["rows"] == [0, 64]
    assert meta["version"] == "unregistered" and info["base"]["version"] == "1"
    assert (out.path / REFERENCE_FILE).is_file() and "adapted** to `call-centre`" in (out.path / CARD_FILE).read_text()
    assert "adaptation" not in read_metadata(domains["model"])  # the source folder is untouched
    ad = read_adaptation(out.path, meta)
    assert ad is not None
    # the deployment is 20 dB quieter: its row means sit about 20 dB below the training ones
    assert np.median(ad.target.mean - ad.source.mean) == pytest.approx(GAIN_DB, abs=3.0)
    assert json.loads((out.path / ADAPTATION_FILE).read_text())["skipped"] == []
    # the job's statistics are stats_of_inputs over the served model inputs (what the benchmark computes)
    from ser.adaptation import stats_of_inputs
    from ser.audio import load_audio

    pre = Predictor(domains["model"], warmup=False).pre
    direct = stats_of_inputs([pre.features(load_audio(f, 16000)) for f in domains["files"]], (0, 64))
    np.testing.assert_allclose(ad.target.mean, direct.mean, atol=1e-6)
    np.testing.assert_allclose(ad.target.std, direct.std, atol=1e-6)

    base, adapted = Predictor(domains["model"]), Predictor(out.path)
    quiet = domains["files"][0]
    y = load_audio(quiet, 16000)
    loud = y / 10 ** (GAIN_DB / 20)
    fq = base.pre.features(y)
    # the adapted input of a quiet clip lies near the training level; unadapted it sits ~20 dB below
    assert abs(np.median(adapted.adapt(fq) - base.pre.features(loud))) < 3.0
    assert abs(np.median(fq - base.pre.features(loud)) - GAIN_DB) < 3.0
    pred = adapted.predict_file(quiet)
    assert pred.label in adapted.labels and abs(sum(pred.probabilities.values()) - 1) < 1e-6
    # the adapted model answers on the quiet clip closer to what the base model answers on the loud clip
    d_adapted = np.abs(adapted.predict_proba(y) - base.predict_proba(loud)).sum()
    d_base = np.abs(base.predict_proba(y) - base.predict_proba(loud)).sum()
    assert d_adapted < d_base


def test_cli_round_trip_and_skipped_files(domains, tmp_path, run_cli):
    from ser.inference import Predictor

    target = tmp_path / "target"
    for f in domains["files"][:3]:
        (target / f.name).parent.mkdir(parents=True, exist_ok=True)
        (target / f.name).write_bytes(f.read_bytes())
    (target / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    write_wav(target / "blip.wav", np.zeros(100, np.float32))  # shorter than one analysis window
    code, out, err = run_cli("model", "adapt", domains["model"], "--audio", target, "--out", tmp_path / "m", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["files"] == 3 and res["skipped"] == 2
    reasons = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in res["skipped_files"]}
    assert set(reasons) == {"broken.wav", "blip.wav"} and "too short" in reasons["blip.wav"]
    assert Predictor(tmp_path / "m").predict_file(domains["files"][0]).label
    code, out, err = run_cli("model", "adapt", domains["model"], "--audio", target, "--out", tmp_path / "m")
    assert code != 0 and "exists" in out + err  # no silent overwrite
    code, out, err = run_cli(
        "model", "adapt", domains["model"], "--audio", target, "--out", tmp_path / "m", "--overwrite"
    )
    assert code == 0 and "skipped 2 file(s)" in out


def test_bad_input_is_a_clear_error(domains, tmp_path):
    import shutil

    from ser.jobs.adapt import AdaptJob
    from ser.model_folder import REFERENCE_FILE

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    with pytest.raises(ConfigError, match="no audio files"):
        AdaptJob(domains["model"], empty, tmp_path / "o1").run()
    with pytest.raises(ConfigError, match="not found"):
        AdaptJob(domains["model"], tmp_path / "missing", tmp_path / "o1").run()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.wav").write_bytes(b"not audio at all")
    (junk / "b.flac").write_bytes(b"")
    with pytest.raises(SerError, match="none of 2 file"):
        AdaptJob(domains["model"], junk, tmp_path / "o2").run()
    assert not (tmp_path / "o2").exists()
    with pytest.raises(ConfigError, match="outside the model folder"):
        AdaptJob(domains["model"], domains["target"], domains["model"] / "sub").run()
    # a folder without the training reference: an error naming the way out, then that way out
    bare = tmp_path / "bare"
    shutil.copytree(domains["model"], bare)
    (bare / REFERENCE_FILE).unlink()
    with pytest.raises(SerError, match="source-audio"):
        AdaptJob(bare, domains["target"], tmp_path / "o3").run()
    out = AdaptJob(bare, domains["target"], tmp_path / "o3", source_audio=domains["train"], max_files=4).run()
    assert out.files == 4 and out.source == f"8 clips under {domains['train']}"
    assert out.shift_db > 10
