"""The model input's trim (``trim: level | vad | none``): the voice-activity trim finds speech-like bursts where the
level trim keeps the noise around them, it falls back to the level trim when no speech is found, it is recorded in
the model folder, old folders (no ``trim``) are level-trimmed exactly as before, the cache keys the ``vad`` frames
apart, and training and serving build the same input for the same clip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.signal as ss

from ser.errors import ConfigError, SerError
from ser.features import VAD_TRIM, FeatureConfig
from ser.features.frames import compute
from ser.model_folder import (
    VAD_MIN_RUN_FRAMES,
    Preprocessing,
    check_trim,
    frame_input,
    input_bounds,
    read_metadata,
    trim_bounds,
    trim_kinds,
    vad_bounds,
)
from ser.train.spec import ModelSpec, model_input
from tests.conftest import export_tiny_model

SR = 16_000
CFG = FeatureConfig()


def speechlike(seconds: float) -> np.ndarray:
    """A voiced, speech-like burst: harmonics of a gliding 120-160 Hz F0, band-limited to 300-3500 Hz, with a 4 Hz
    syllabic envelope; peak 0.3."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 3 * t)) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 30))
    b, a = ss.butter(2, [300 / (SR / 2), 3500 / (SR / 2)], "band")
    x = ss.lfilter(b, a, x) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t - np.pi / 2))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def burst_in(silence_s: float = 1.0, speech_s: float = 1.2, snr_db: float | None = None) -> tuple[np.ndarray, int, int]:
    """``silence + speech-like burst + silence`` (white noise over all of it at ``snr_db`` re the burst's power),
    and the burst's first and one-past-last 10 ms frame."""
    burst = speechlike(speech_s)
    pad = np.zeros(int(silence_s * SR), dtype=np.float32)
    y = np.concatenate([pad, burst, pad])
    if snr_db is not None:
        power = float(np.mean(burst.astype(np.float64) ** 2))
        y = y + np.random.default_rng(1).standard_normal(y.size).astype(np.float32) * np.sqrt(
            power / 10 ** (snr_db / 10)
        )
    return y.astype(np.float32), pad.size // 160, (pad.size + burst.size) // 160


def test_vad_kind_is_frame_aligned_flags():
    y, lo, hi = burst_in()
    f = compute(y, CFG, ("logmel", "vad"))
    assert f["vad"].shape == (1, f["logmel"].shape[1]) and f["vad"].dtype == np.float32
    assert set(np.unique(f["vad"])) <= {0.0, 1.0}
    # digital silence is never voiced (3 frames of slack: a 30 ms VAD frame straddles the burst's edge)
    assert f["vad"][0, : lo - 3].sum() == 0 and f["vad"][0, hi + 3 :].sum() == 0
    assert f["vad"][0, lo:hi].mean() > 0.6  # most of the burst is


@pytest.mark.parametrize("snr_db", [None, 20.0, 10.0])
def test_vad_trim_is_tight_around_the_burst_where_the_level_trim_keeps_the_noise(snr_db):
    y, lo, hi = burst_in(snr_db=snr_db)
    f = compute(y, CFG, ("logmel", "vad"))
    T = f["logmel"].shape[1]
    vlo, vhi = input_bounds(f, "vad", 40.0)
    # within 250 ms of the burst's edges (the 100 ms pad, plus webrtcvad's hangover after speech in noise), while
    # a second of noise or silence lies on each side
    assert abs(vlo - lo) <= 25 and abs(vhi - hi) <= 25, (vlo, vhi, lo, hi)
    llo, lhi = input_bounds(f, "level", 40.0)
    if snr_db is None:
        assert abs(llo - lo) <= 5 and abs(lhi - hi) <= 5  # clean: the level trim finds it too
    else:
        assert (llo, lhi) == (0, T)  # in noise it keeps every frame
    assert input_bounds(f, "none", 40.0) == (0, T)


def test_vad_bounds_pad_and_ignore_short_runs():
    flags = np.zeros(200, dtype=np.float32)
    flags[3:6] = 1  # a 30 ms blip (webrtcvad's start-up flags in noise): not speech
    flags[50:80] = 1
    flags[120:150] = 1
    flags[190:195] = 1
    assert vad_bounds(flags, pad=0) == (50, 150)
    assert vad_bounds(flags[None], pad=10) == (40, 160)
    assert vad_bounds(flags, pad=100) == (0, 200)  # clamped to the clip
    assert vad_bounds(flags, pad=0, min_run=1) == (3, 195)
    only_blips = np.zeros(100)
    only_blips[10 : 10 + VAD_MIN_RUN_FRAMES - 1] = 1
    assert vad_bounds(only_blips) is None and vad_bounds(np.zeros(50)) is None


def test_no_speech_falls_back_to_the_level_trim():
    """A faint tone (below the VAD's -50 dBFS gate) in digital silence: nothing voiced, so the level trim decides
    (not the whole clip)."""
    t = np.arange(SR) / SR
    y = np.concatenate([np.zeros(SR // 2), 0.002 * np.sin(2 * np.pi * 300 * t), np.zeros(SR // 2)]).astype(np.float32)
    f = compute(y, CFG, ("logmel", "vad"))
    assert f["vad"].sum() == 0
    level = trim_bounds(f["logmel"], 40.0)
    assert level != (0, f["logmel"].shape[1])
    assert input_bounds(f, "vad", 40.0) == level
    np.testing.assert_array_equal(frame_input(f, "logmel", 40.0, trim="vad"), frame_input(f, "logmel", 40.0))


def test_trim_modes_are_checked():
    assert check_trim("vad") == "vad" and trim_kinds("vad") == ("logmel", "vad") and trim_kinds("level") == ("logmel",)
    with pytest.raises(ConfigError, match="trim must be one of"):
        check_trim("energy")
    f = compute(burst_in()[0], CFG, ("logmel",))
    with pytest.raises(SerError, match="needs the clip's 'vad' frames"):
        frame_input(f, "logmel", 40.0, trim="vad")
    with pytest.raises(SerError, match="do not match"):
        input_bounds({**f, "vad": np.ones((1, 3), dtype=np.float32)}, "vad", 40.0)


def test_vad_kind_has_its_own_cache_key():
    assert CFG.kind_hash("vad") != CFG.kind_hash("logmel")
    assert CFG.params_for("vad")["vad"] == VAD_TRIM  # the VAD settings are keyed, not only sr and hop
    assert CFG.model_copy(update={"n_mels": 40}).kind_hash("vad") == CFG.kind_hash("vad")  # log-mel-only change
    assert CFG.model_copy(update={"hop_length": 320}).kind_hash("vad") != CFG.kind_hash("vad")
    assert "vad" not in CFG.frame_kinds  # not a feature: not summarised in the functionals


# ---- the model folder ------------------------------------------------------------------------------------------


def test_metadata_round_trip_of_the_trim(tmp_path):
    folder = export_tiny_model(tmp_path / "v")
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["input"]["trim"] == "level"  # written explicitly from now on
    meta["input"]["trim"] = "vad"
    (folder / "metadata.json").write_text(json.dumps(meta))
    pre = Preprocessing.from_metadata(read_metadata(folder))
    assert pre.trim == "vad" and pre.trim_db == 40.0
    meta["input"]["trim"] = "energy"
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SerError, match=r"input\.trim must be one of"):
        Preprocessing.from_metadata(read_metadata(folder))


def test_export_records_the_trim(tmp_path):
    from ser.export import write_model_folder
    from ser.models.factory import build_model

    m = build_model("cnn", 8, 64, channels=[8], convs=[1], time_pool=[2], seed=0)
    labels = [str(i) for i in range(8)]
    out = write_model_folder(tmp_path / "m", m, labels=labels, feature_config=CFG, trim="vad")
    assert read_metadata(out)["input"]["trim"] == "vad"
    with pytest.raises(ConfigError, match="trim must be one of"):
        write_model_folder(tmp_path / "bad", m, labels=labels, feature_config=CFG, trim="loud")


def test_old_folders_without_trim_are_level_trimmed_exactly_as_before(tmp_path):
    """A folder from before the option (the bundled model's metadata with its ``trim`` removed, as folders written
    before it read): the input is the log-mel sliced at ``trim_bounds``, as the code before the option computed it."""
    from ser.pretrained import bundled_dir

    meta = read_metadata(bundled_dir())
    meta["input"] = {k: v for k, v in meta["input"].items() if k != "trim"}
    pre = Preprocessing.from_metadata(meta)
    assert pre.trim == "level"
    y, _, _ = burst_in(snr_db=10.0)
    lm = compute(y, CFG, ("logmel",))["logmel"]
    lo, hi = trim_bounds(lm, meta["input"]["trim_db"])
    np.testing.assert_array_equal(pre.features(y), lm[:, lo:hi])
    assert pre.features(y).shape[1] == lm.shape[1]  # (noise: the level trim keeps every frame, as it always did)


def test_training_and_serving_build_the_same_vad_trimmed_input(tmp_path, ravdess_dir):
    """The training path (features through the cache, ``utterance_arrays`` of a ``trim: vad`` recipe) and the
    serving path (``Preprocessing.features`` on the decoded audio) give the same model input."""
    from ser.audio import load_audio, sha256_file
    from ser.jobs.train import feature_kinds
    from ser.train.cv import load_frame_features, utterance_arrays

    spec = ModelSpec(name="c", model="cnn", features="logmel", trim="vad")
    assert feature_kinds(spec) == ("logmel", "vad")
    paths = sorted(ravdess_dir.glob("Actor_01/03-01-05-0*-01-01-01.*"))[:2]
    assert paths
    manifest = pd.DataFrame(
        {"utt_id": [p.stem for p in paths], "path": [str(p) for p in paths], "sha256": [sha256_file(p) for p in paths]}
    )
    cache = tmp_path / "cache"
    feats = load_frame_features(manifest, feature_kinds(spec), cache_dir=cache, workers=1)
    assert (cache / "vad" / CFG.kind_hash("vad")).is_dir()  # cached under its own kind and hash
    again = load_frame_features(manifest, feature_kinds(spec), cache_dir=cache, workers=1)  # read back
    train_x = utterance_arrays(spec, again, list(manifest["utt_id"]))
    pre = Preprocessing(kind="logmel", feature_config=CFG.to_dict(), trim="vad")
    for p, x, u in zip(paths, train_x, manifest["utt_id"], strict=True):
        served = pre.features(load_audio(p, CFG.sr))
        np.testing.assert_array_equal(served, x)
        assert x.shape[1] < feats[u]["logmel"].shape[1]  # it did trim


def test_recipes_trim_field_fingerprint_and_shipped_input():
    level = ModelSpec(name="a", model="cnn")
    assert level.trim == "level"
    assert ModelSpec(name="a", model="cnn", trim="level").fingerprint() == level.fingerprint()
    vad = ModelSpec(name="a", model="cnn", trim="vad")
    assert vad.fingerprint() != level.fingerprint()
    assert model_input([vad]) == {"kind": "logmel", "trim": "vad", "trim_db": 40.0}
    with pytest.raises(ConfigError, match="same trimming"):
        model_input([vad, ModelSpec(name="b", model="rnn", features="mfcc")])
    with pytest.raises(ValueError, match="trim"):
        ModelSpec(name="a", model="cnn", trim="loud")
