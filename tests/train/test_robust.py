"""Robustness augmentation: seeded variant draws, the variant cache, and the guarantee that only training clips
(of their own speakers, on the training side) ever get variants."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ser import degrade as d
from ser.errors import ConfigError, LeakageError
from ser.train import robust
from ser.train.cv import add_variants, training_variants
from ser.train.recipes import get_recipe
from ser.train.robust import RobustConfig, VariantSource, draw_variant, make_robust_config, render_variant
from tests.conftest import synth_run_dir, tone, write_wav

GENERATED = {"noises": ["generated-white", "generated-pink"]}
FAST = {**GENERATED, "degrade": {"p_reverb": 0.0, "p_channel": 0.0}}  # noise and level only: no rooms, no codecs


def _sha(i: int) -> str:
    return hashlib.sha256(f"clip{i}".encode()).hexdigest()


def test_draws_are_seeded_per_clip_and_copy_and_never_use_held_out_noises():
    cfg = make_robust_config({"copies": 3, "degrade": {"p_noise": 1.0}})
    a = [draw_variant(_sha(0), j, cfg) for j in range(3)]
    assert a == [draw_variant(_sha(0), j, cfg) for j in range(3)]  # same clip, copy, seed: same draw
    assert len({v.key for v in a}) == 3  # copies differ
    assert draw_variant(_sha(1), 0, cfg).key != a[0].key
    assert draw_variant(_sha(0), 0, make_robust_config({"seed": 1, "degrade": {"p_noise": 1.0}})).key != a[0].key
    noises = set()
    for i in range(200):
        v = draw_variant(_sha(i), 0, cfg)
        assert v.chain, "an empty chain is redrawn"
        noises |= {s.noise for s in v.chain if isinstance(s, d.Noise)}
    assert noises and not noises & set(d.HELD_OUT_NOISES)
    assert noises <= set(d.TRAIN_NOISES)


def test_config_refuses_held_out_noises_and_bad_ranges():
    with pytest.raises(ConfigError, match="held out"):
        make_robust_config({"noises": ["babble", "factory1"]})
    with pytest.raises(ConfigError, match="tempo_rate"):
        make_robust_config({"tempo_rate": (1.2, 0.9)})
    with pytest.raises(ConfigError, match="p_noise"):
        make_robust_config({"degrade": {"p_noise": 2.0}})
    with pytest.raises(ConfigError):
        get_recipe("cnn", {"robust": {"copies": 0}})
    assert get_recipe("cnn-robust").robust["copies"] == 2


def test_robust_field_keeps_old_fingerprints_and_changes_with_its_settings():
    plain = get_recipe("cnn")
    assert plain.robust is None
    assert "robust" not in plain.model_dump(exclude={"robust"})
    robust_spec = get_recipe("cnn", {"robust": {"copies": 2}})
    assert robust_spec.fingerprint() != plain.fingerprint()
    assert get_recipe("cnn", {"robust": {"copies": 3}}).fingerprint() != robust_spec.fingerprint()
    # defaults spelled out or left out: the same recipe
    assert get_recipe("cnn", {"robust": {"copies": 2, "seed": 0}}).fingerprint() == robust_spec.fingerprint()


def test_speaker_variation_changes_pitch_and_tempo_deterministically():
    y = tone(1.0, freq=220.0)
    cfg = make_robust_config({**FAST, "p_pitch": 1.0, "p_tempo": 1.0, "tempo_rate": (1.25, 1.25)})
    v = draw_variant(_sha(0), 0, cfg)
    assert v.pitch_semitones is not None and v.tempo_rate == 1.25
    out = render_variant(y, 16_000, v)
    np.testing.assert_array_equal(out, render_variant(y, 16_000, v))
    assert abs(len(out) - len(y) / 1.25) < 0.02 * len(y)  # faster: shorter


def _manifest(tmp_path, n: int) -> pd.DataFrame:
    rows = []
    for i in range(n):
        path = write_wav(tmp_path / f"c{i}.wav", tone(0.6, freq=150.0 + 40 * i))
        rows.append({"utt_id": f"u{i}", "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_variant_source_caches_by_clip_draw_and_seed(tmp_path, monkeypatch):
    frame = _manifest(tmp_path, 3)
    source = VariantSource(RobustConfig(copies=2, **FAST), cache_dir=tmp_path / "cache")
    first = source(frame)
    assert set(first) == {"u0", "u1", "u2"} and all(len(v) == 2 for v in first.values())
    assert first["u0"][0]["logmel"].shape[0] == 64
    entries = sorted((tmp_path / "cache" / "variants" / "logmel").rglob("*.npz"))
    assert len(entries) == 6
    keys = {p.stem for p in entries}
    assert keys == {v.key for sha in frame["sha256"] for v in source.draws(sha)}

    def boom(*args, **kwargs):
        raise AssertionError("a cached variant was rendered again")

    monkeypatch.setattr(robust, "render_variant", boom)
    again = source(frame)  # a rerun reads every variant back
    for u in first:
        for a, b in zip(first[u], again[u], strict=True):
            np.testing.assert_array_equal(a["logmel"], b["logmel"])
    # one more copy: the first two still hit, only the new one must be made (here it fails, so the clip keeps two)
    three = VariantSource(RobustConfig(copies=3, **FAST), cache_dir=tmp_path / "cache")
    assert all(len(v) == 2 for v in three(frame).values())
    monkeypatch.undo()
    assert all(len(v) == 3 for v in three(frame).values())
    assert len(list((tmp_path / "cache" / "variants" / "logmel").rglob("*.npz"))) == 9


def test_recorded_noises_need_a_noise_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(robust.NOISE_DIR_ENV, raising=False)
    frame = _manifest(tmp_path, 1)
    cfg = RobustConfig(copies=1, noises=("babble",), degrade={**FAST["degrade"], "p_noise": 1.0})
    source = VariantSource(cfg, cache_dir=None)
    with pytest.raises(ConfigError, match="noise folder"):
        source(frame)
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    write_wav(noise_dir / "babble.wav", 0.1 * np.random.default_rng(0).standard_normal(16_000).astype(np.float32))
    out = VariantSource(source.config, noise_dir=noise_dir)(frame)
    assert len(out["u0"]) == 1


def _roles() -> dict[str, pd.DataFrame]:
    def rows(role, speakers):
        return pd.DataFrame(
            [
                {"utt_id": f"{role}-{s}-{i}", "speaker": s, "emotion": "angry" if i else "sad"}
                for s in speakers
                for i in (0, 1)
            ]
        )

    return {"train": rows("train", ["a", "b"]), "val": rows("val", ["c"]), "test": rows("test", ["d"])}


class Recorder:
    """A variant source that records which clips it was handed and gives each one two feature dicts."""

    def __init__(self):
        self.asked: list[str] = []

    def __call__(self, train_rows):
        self.asked += list(train_rows["utt_id"])
        return {u: [{"logmel": np.full((64, 30), k, np.float32)} for k in (1.0, 2.0)] for u in train_rows["utt_id"]}


def test_only_training_clips_get_variants_and_they_keep_their_label():
    spec = get_recipe("cnn", {"robust": {"copies": 2}})
    roles = _roles()
    train_ids = list(roles["train"]["utt_id"])
    source = Recorder()
    x = {r: [np.zeros((64, 30), np.float32)] * len(df) for r, df in roles.items()}
    y = {r: np.array([1 if e == "angry" else 0 for e in df["emotion"]]) for r, df in roles.items()}
    sources = add_variants(spec, source, roles, train_ids, x, y)
    n = len(sources)
    assert sources == [u for u in train_ids for _ in range(2)]  # the clip each appended row copies, in order
    assert sorted(source.asked) == sorted(train_ids)
    assert not set(source.asked) & (set(roles["val"]["utt_id"]) | set(roles["test"]["utt_id"]))
    assert n == 2 * len(train_ids) and len(x["train"]) == len(y["train"]) == 3 * len(train_ids)
    assert len(x["val"]) == len(roles["val"]) and len(x["test"]) == len(roles["test"])  # untouched
    expected = [1 if u.endswith("-1") else 0 for u in train_ids for _ in range(2)]
    assert y["train"][len(train_ids) :].tolist() == expected
    # a recipe without `robust` asks for nothing
    assert training_variants(get_recipe("cnn"), source, roles, train_ids) == ([], [])
    # a robust recipe without a source would train as its plain twin under the robust name: refused
    with pytest.raises(ConfigError, match="no variant source"):
        training_variants(spec, None, roles, train_ids)


def test_a_variant_of_a_val_or_test_clip_is_refused():
    spec = get_recipe("cnn", {"robust": {"copies": 1}})
    roles = _roles()
    train_ids = list(roles["train"]["utt_id"])
    for role in ("val", "test"):
        leaked = roles[role]["utt_id"].iloc[0]

        def bad(train_rows, leaked=leaked):
            return {leaked: [{"logmel": np.zeros((64, 10), np.float32)}]}

        with pytest.raises(LeakageError, match="outside the training set"):
            training_variants(spec, bad, roles, train_ids)
    # a test clip, or another clip of a test speaker, slipped into the training rows: the check catches its variants
    first_test = roles["test"].iloc[:1]
    for extra, match in ((first_test, "appears twice"), (first_test.assign(utt_id="x"), "speaker d")):
        mixed = {**roles, "train": pd.concat([roles["train"], extra], ignore_index=True)}
        with pytest.raises(LeakageError, match=match):
            training_variants(spec, Recorder(), mixed, list(mixed["train"]["utt_id"]))


def _tiny_robust_run(tmp_path, **robust) -> tuple[tuple, Path]:
    """A synthetic corpus's ``ser train`` arguments and a tiny cnn config with one robust variant per clip
    (``robust``: more fields of the robust config)."""
    import yaml

    run = synth_run_dir(tmp_path / "synth", n_speakers=4, per_emotion=2, k=2)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"params": {"channels": [4, 8], "convs": [1, 1], "time_pool": [2, 2]},
             "train": {"epochs": 1, "crop_frames": 100}, "val_speakers": 1,
             "robust": {"copies": 1, **FAST, **robust}}
        )
    )  # fmt: skip
    args = ("train", run / "m" / "manifest.parquet", "--splits", run / "s" / "splits.parquet", "--json")
    return args, cfg


@pytest.mark.slow
def test_ser_train_robust_recipe_adds_variants_to_training_folds_only(tmp_path, run_cli):
    import json

    args, cfg = _tiny_robust_run(tmp_path)
    code, _, err = run_cli(
        *args, "--model", "cnn-robust", "--config", cfg, "--out", tmp_path / "run", "--folds", "0", "--workers", "1"
    )
    assert code == 0, err
    fold = json.loads((tmp_path / "run" / "cnn-robust" / "fold_0.json").read_text())
    code, _, err = run_cli(*args, "--model", "cnn-robust", "--out", tmp_path / "r2", "--noise-dir", tmp_path / "nope")
    assert code == 2 and "noise folder not found" in err
    assert fold["n_train_variants"] == fold["n_train"] > 0
    made = list((tmp_path / "run" / "cache" / "variants" / "logmel").rglob("*.npz"))
    assert len(made) == fold["n_train"]  # variants of the training clips only: none for val or test


def test_formant_shift_draws_are_seeded_in_range_and_leave_other_draws_and_keys_alone():
    off = make_robust_config({"copies": 2, "p_pitch": 0.5, "p_tempo": 0.5})
    on = make_robust_config({"copies": 2, "p_pitch": 0.5, "p_tempo": 0.5, "p_formant": 1.0, "formant_warp": (0.9, 1.1)})
    for i in range(20):
        a, b = draw_variant(_sha(i), 0, off), draw_variant(_sha(i), 0, on)
        assert a.formant_warp is None and b.formant_warp is not None and 0.9 <= b.formant_warp <= 1.1
        assert b == draw_variant(_sha(i), 0, on)  # seeded by (clip, copy, seed)
        # the formant draw comes last: every other part of the variant is the same draw
        assert (a.pitch_semitones, a.tempo_rate, a.chain, a.apply_seed) == (
            b.pitch_semitones,
            b.tempo_rate,
            b.chain,
            b.apply_seed,
        )
        assert b.key != a.key  # and the formant shift is keyed
        # without a formant shift the key is the one from before the option (no "formant" field in it)
        assert a.key == robust.variant_key(_sha(i), a.chain, a.apply_seed, a.pitch_semitones, a.tempo_rate)
    assert len({draw_variant(_sha(i), 0, on).formant_warp for i in range(20)}) == 20
    with pytest.raises(ConfigError, match="formant_warp"):
        make_robust_config({"formant_warp": (1.1, 0.9)})
    with pytest.raises(ConfigError, match="formant_warp"):
        make_robust_config({"formant_warp": (0.3, 1.0)})


def test_formant_shift_variant_is_rendered_deterministically_and_only_changes_the_spectrum():
    y = tone(1.0, freq=180.0)
    cfg = make_robust_config({**FAST, "p_formant": 1.0, "formant_warp": (1.15, 1.15)})
    v = draw_variant(_sha(3), 0, cfg)
    assert v.formant_warp == 1.15
    out = render_variant(y, 16_000, v)
    np.testing.assert_array_equal(out, render_variant(y, 16_000, v))
    plain = render_variant(y, 16_000, robust.VariantDraw(v.copy, None, None, v.chain, v.apply_seed, "k"))
    assert out.shape == plain.shape == y.shape and not np.allclose(out, plain)


def test_formant_fields_keep_old_fingerprints_and_the_speaker_recipe_uses_them():
    base = get_recipe("cnn", {"robust": {"copies": 2}})
    assert get_recipe("cnn", {"robust": {"copies": 2, "p_formant": 0.0}}).fingerprint() == base.fingerprint()
    assert get_recipe("cnn", {"robust": {"copies": 2, "p_formant": 0.5}}).fingerprint() != base.fingerprint()
    speaker = get_recipe("cnn-robust-speaker")
    assert speaker.robust["p_formant"] > 0 and speaker.robust["formant_warp"] == [0.9, 1.1]
    assert get_recipe("cnn-robust-vad").trim == "vad"


def test_variants_carry_the_vad_frames_a_vad_trim_reads(tmp_path):
    from ser.model_folder import frame_input

    manifest = _manifest(tmp_path, 1)
    source = VariantSource(make_robust_config({**FAST, "copies": 1}), kinds=("logmel", "vad"), cache_dir=tmp_path / "c")
    (v,) = source(manifest)["u0"]
    assert set(v) == {"logmel", "vad"} and v["vad"].shape == (1, v["logmel"].shape[1])
    assert (tmp_path / "c" / "variants" / "vad").is_dir()  # cached apart from the log-mel
    (again,) = source(manifest)["u0"]  # read back from the cache
    np.testing.assert_array_equal(again["vad"], v["vad"])
    assert frame_input(v, "logmel", 40.0, trim="vad").shape[0] == 64


@pytest.mark.slow
def test_ser_train_with_vad_trim_and_formant_shifted_variants(tmp_path, run_cli):
    import json

    args, cfg = _tiny_robust_run(tmp_path, p_formant=1.0)
    out = tmp_path / "run"
    code, _, err = run_cli(*args, "--model", "cnn-robust-vad", "--config", cfg, "--out", out, "--folds", "0")
    assert code == 0, err
    fold = json.loads((out / "cnn-robust-vad" / "fold_0.json").read_text())
    assert fold["n_train_variants"] == fold["n_train"] > 0
    for sub in ("vad", "variants/vad", "variants/logmel"):  # the clean clips' and the variants' voice flags
        assert list((out / "cache" / sub).rglob("*.npz")), sub


def test_noisy_recipe_puts_a_training_noise_in_more_variants_and_keeps_the_other_draws():
    base = make_robust_config(get_recipe("cnn-robust").robust)
    noisy = make_robust_config(get_recipe("cnn-robust-noisy").robust)
    assert noisy.degrade["p_noise"] == 0.8 > d.TrainingDegradationConfig().p_noise
    assert {k: v for k, v in noisy.model_dump().items() if k != "degrade"} == {
        k: v for k, v in base.model_dump().items() if k != "degrade"
    }
    counts = {"base": np.zeros(2), "noisy": np.zeros(2)}  # [variants with noise, with reverb]
    for name, cfg in (("base", base), ("noisy", noisy)):
        for i in range(300):
            for j in range(2):
                chain = draw_variant(_sha(i), j, cfg).chain
                noises = [s.noise for s in chain if isinstance(s, d.Noise)]
                assert not set(noises) & set(d.HELD_OUT_NOISES)
                counts[name] += [bool(noises), any(isinstance(s, d.Reverb) for s in chain)]
    share = {k: v / 600 for k, v in counts.items()}
    # p_noise 0.5 vs 0.8, among non-empty chains (an empty one is drawn again): 0.60 vs 0.86
    assert 0.53 < share["base"][0] < 0.67 and 0.80 < share["noisy"][0] < 0.92
    assert abs(share["noisy"][1] - share["base"][1]) < 0.08  # reverb still p 0.3


def test_long_recipe_is_the_noisy_recipe_trained_longer_on_the_same_variants():
    noisy, long = get_recipe("cnn-robust-noisy"), get_recipe("cnn-robust-noisy-long")
    assert long.train["epochs"] == 25 > noisy.train["epochs"]
    assert long.model_dump(exclude={"name", "train"}) == noisy.model_dump(exclude={"name", "train"})
    assert {**long.train, "epochs": 0} == {**noisy.train, "epochs": 0}
    cfg_long, cfg_noisy = make_robust_config(long.robust), make_robust_config(noisy.robust)
    for i in range(20):  # the same draws, so the same cached variants: only training time grows
        assert draw_variant(_sha(i), 1, cfg_long).key == draw_variant(_sha(i), 1, cfg_noisy).key
