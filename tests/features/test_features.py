"""Features: frame features, functionals, the per-kind cache, parallel extraction, the CLI, real RAVDESS clips."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest

from ser.audio import sha256_file
from ser.data.ingest import RAVDESS_EMOTIONS
from ser.data.schema import conform
from ser.errors import AudioError, ConfigError, ManifestError, SerError
from ser.features import FRAME_KINDS, KIND_PARAMS, FeatureConfig, load_config, make_config
from ser.features import frames as F
from ser.features.cache import FeatureCache
from ser.features.extract import extract_manifest, extract_one
from ser.features.functionals import feature_names, functionals, stat_values
from ser.io import write_parquet
from tests.conftest import tone, write_wav

SR = 16_000


def sine(freq: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---- frame features ----------------------------------------------------------------------------------------


def test_every_kind_has_documented_shape_and_shares_the_hop():
    cfg = FeatureConfig()
    y = tone(1.0)[:16_037]  # not a multiple of the hop
    feats = F.compute(y, cfg)
    t = F.n_frames(y.size, cfg.hop_length)
    assert t == 1 + 16_037 // 160
    assert set(feats) == set(FRAME_KINDS)
    expected_rows = {
        "logmel": cfg.n_mels,
        "mfcc": 3 * cfg.n_mfcc,
        "zcr": 1,
        "rms": 1,
        "chroma": 12,
        "centroid": 1,
        "contrast": cfg.contrast_bands + 1,
        "f0": 3,
    }
    for kind, arr in feats.items():
        assert arr.dtype == np.float32, kind
        assert arr.shape == (expected_rows[kind], t), kind
        assert len(F.row_names(kind, cfg)) == expected_rows[kind]
    # the standalone functions agree with compute()
    assert np.allclose(F.logmel(y, SR), feats["logmel"])
    assert np.allclose(F.zcr(y), feats["zcr"])


def test_f0_of_a_220_hz_tone_and_of_silence():
    out = F.f0(tone(1.0, freq=220.0), SR)
    hz, voiced, prob = out
    assert voiced.mean() > 0.9
    assert abs(np.nanmedian(hz[voiced > 0]) - 220.0) < 0.02 * 220.0
    assert np.all(np.isnan(hz[voiced == 0]))
    assert np.all((prob >= 0) & (prob <= 1))
    silent = F.f0(np.zeros(SR // 2, dtype=np.float32), SR)
    assert silent[1].sum() == 0 and np.all(np.isnan(silent[0]))


def test_centroid_is_higher_for_a_higher_tone():
    low = F.centroid(sine(300.0), SR)[0, 5:-5]
    high = F.centroid(sine(2000.0), SR)[0, 5:-5]
    assert abs(np.median(low) - 300) < 60 and abs(np.median(high) - 2000) < 100
    assert np.median(high) > np.median(low)


def test_logmel_is_db_with_a_fixed_reference():
    y = sine(1000.0, amp=0.25)
    lm = F.logmel(y, SR)
    assert lm.shape[0] == 64
    assert lm.min() >= -100.01 and lm.max() < 100
    # fixed reference: doubling the amplitude adds 20·log10(2) dB in every bin that is above the floor
    lm2 = F.logmel(2 * y, SR)
    strong = lm > -60
    assert strong.sum() > 100
    assert np.allclose(lm2[strong] - lm[strong], 20 * np.log10(2), atol=0.01)
    # digital silence sits at the floor
    assert np.allclose(F.logmel(np.zeros(SR // 4, dtype=np.float32), SR), -100.0, atol=0.01)


def test_logmel_with_the_cached_mel_basis_equals_librosa_bit_for_bit():
    """The cached filterbank (frames.mel_basis) changes no value: the log-mel is librosa's melspectrogram +
    power_to_db exactly, on speech-like, tonal, silent and short inputs, and on another band layout."""
    rng = np.random.default_rng(0)
    clips = [tone(2.0), sine(300.0, 0.5), rng.standard_normal(SR * 3).astype(np.float32) * 0.1, np.zeros(400, "f4")]
    for y in clips:
        for n_mels, fmin, fmax in ((64, 50.0, 8000.0), (40, 0.0, 7600.0)):
            S = F.spectrogram(y)
            ref = librosa.feature.melspectrogram(S=S**2, sr=SR, n_fft=512, n_mels=n_mels, fmin=fmin, fmax=fmax)
            ref_db = librosa.power_to_db(ref, ref=1.0, amin=1e-10, top_db=None).astype(np.float32)
            assert np.array_equal(F.logmel(y, SR, n_mels=n_mels, fmin=fmin, fmax=fmax), ref_db)
    assert F.mel_basis(SR, 512, 64, 50.0, 8000.0) is F.mel_basis(SR, 512, 64, 50.0, 8000.0)  # built once
    assert not F.mel_basis(SR, 512, 64, 50.0, 8000.0).flags.writeable


def test_mfcc_with_deltas_and_short_clips():
    y = tone(0.5)
    lm = F.logmel(y, SR)
    m = F.mfcc(logmel_db=lm, n_mfcc=13)
    assert m.shape == (39, lm.shape[1])
    assert np.allclose(m[:13], librosa.feature.mfcc(S=lm, n_mfcc=13), atol=1e-4)
    # a stationary tone has (almost) no frame-to-frame change inside the clip
    assert np.abs(m[13:, 10:-10]).max() < 0.05 * np.abs(m[:13]).max()
    short = F.compute(tone(0.03), FeatureConfig(), ("mfcc",))["mfcc"]  # 4 frames < delta width 9
    assert short.shape == (60, 4) and np.all(np.isfinite(short))


def test_zcr_and_rms_units():
    y = sine(1000.0, amp=0.5)
    z = F.zcr(y)[0, 5:-5]
    assert abs(np.median(z) - 2 * 1000 / SR) < 0.01  # two crossings per period
    r = F.rms_db(y)[0, 5:-5]
    assert abs(np.median(r) - 20 * np.log10(0.5 / np.sqrt(2))) < 0.2  # a sine's RMS is amp/√2
    assert F.rms_db(np.zeros(1000, dtype=np.float32)).max() == pytest.approx(-100.0)


def test_unusable_signals_raise_audio_error():
    with pytest.raises(AudioError, match="too short"):
        F.compute(np.zeros(100, dtype=np.float32))
    bad = tone(0.2)
    bad[10] = np.nan
    with pytest.raises(AudioError, match="non-finite"):
        F.compute(bad)
    with pytest.raises(AudioError, match="mono"):
        F.compute(np.zeros((2, 4000), dtype=np.float32))
    with pytest.raises(ConfigError, match="unknown frame kind"):
        F.compute(tone(0.2), kinds=("nope",))


# ---- configuration and hashes ------------------------------------------------------------------------------


def test_config_hash_is_stable_and_kind_hashes_cover_only_their_parameters():
    base = FeatureConfig()
    assert base.hash() == FeatureConfig().hash() and len(base.hash()) == 16
    changed = FeatureConfig(n_mfcc=13)
    assert changed.hash() != base.hash()
    assert changed.kind_hash("mfcc") != base.kind_hash("mfcc")
    assert changed.kind_hash("functionals") != base.kind_hash("functionals")
    for kind in ("logmel", "f0", "zcr", "chroma"):
        assert changed.kind_hash(kind) == base.kind_hash(kind), kind
    # dropping a frame kind from the functionals changes only the functionals
    fewer = FeatureConfig(frame_kinds=("mfcc", "f0"))
    assert fewer.kind_hash("functionals") != base.kind_hash("functionals")
    assert fewer.kind_hash("mfcc") == base.kind_hash("mfcc")


def test_every_parameter_reaches_some_hash():
    used = {p for params in KIND_PARAMS.values() for p in params} | {"frame_kinds", "scalar_stats", "vector_stats"}
    assert set(FeatureConfig.model_fields) == used
    base = FeatureConfig()
    for name in FeatureConfig.model_fields:  # functionals depend on every parameter of their frame kinds
        assert name in base.params_for("functionals")["params"], name


def test_config_validation_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="fmax"):
        make_config({"fmax": 9000})
    with pytest.raises(ConfigError, match="n_mfc"):
        make_config({"n_mfc": 13})
    with pytest.raises(ConfigError, match="statistic"):
        make_config({"scalar_stats": ["mean", "median"]})
    with pytest.raises(ConfigError, match="f0_frame_length"):
        make_config({"f0_fmin": 20})
    path = tmp_path / "features.yaml"
    path.write_text("features:\n  n_mfcc: 13\n  frame_kinds: [mfcc, f0]\n")
    cfg = load_config(path)
    assert cfg.n_mfcc == 13 and cfg.frame_kinds == ("mfcc", "f0")
    path.write_text("n_mels: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


# ---- functionals -------------------------------------------------------------------------------------------


def test_functionals_names_match_vector_and_are_finite():
    cfg = FeatureConfig()
    for y in (tone(1.0), np.zeros(SR // 2, dtype=np.float32), tone(0.05, freq=300)):
        vec, names = functionals(F.compute(y, cfg), cfg)
        assert vec.shape == (len(names),) and vec.dtype == np.float32
        assert names == feature_names(cfg) and len(set(names)) == len(names)
        assert np.all(np.isfinite(vec))
    multi_rows = cfg.n_mels + 3 * cfg.n_mfcc + cfg.n_chroma + cfg.contrast_bands + 1
    one_rows = 5  # zcr, rms, centroid, F0, voicing probability
    assert len(names) == multi_rows * len(cfg.vector_stats) + one_rows * len(cfg.scalar_stats) + 1
    assert 200 <= len(names) <= 600
    small = FeatureConfig(frame_kinds=("rms",), scalar_stats=("mean", "p50", "iqr"))
    assert feature_names(small) == ["rms_mean", "rms_p50", "rms_iqr"]


def test_stat_values_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 50))
    t = np.arange(50) * 0.01
    got = stat_values(x, t, ("mean", "std", "min", "max", "range", "p25", "p99", "iqr", "slope"))
    assert np.allclose(got[:, 0], x.mean(1)) and np.allclose(got[:, 1], x.std(1))
    assert np.allclose(got[:, 4], x.max(1) - x.min(1))
    assert np.allclose(got[:, 5], np.percentile(x, 25, axis=1))
    assert np.allclose(got[:, 7], np.percentile(x, 75, axis=1) - np.percentile(x, 25, axis=1))
    assert np.allclose(got[:, 8], [np.polyfit(t, row, 1)[0] for row in x])
    assert np.all(stat_values(np.zeros((2, 0)), np.zeros(0), ("mean", "slope")) == 0)


def test_slopes_follow_rising_and_falling_signals():
    cfg = FeatureConfig(frame_kinds=("rms", "f0"))
    t = np.arange(SR) / SR
    ramp = np.linspace(0.05, 0.8, SR)
    rising = (ramp * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    vec, names = functionals(F.compute(rising, cfg), cfg)
    assert vec[names.index("rms_slope")] > 5  # dB per second
    assert vec[names.index("rms_slope")] == pytest.approx(20 * np.log10(16), rel=0.3)  # 0.05 → 0.8 in 1 s
    vec, _ = functionals(F.compute(rising[::-1].copy(), cfg), cfg)
    assert vec[names.index("rms_slope")] < -5
    chirp = librosa.chirp(fmin=150, fmax=300, sr=SR, duration=1.0).astype(np.float32) * 0.5
    vec, _ = functionals(F.compute(chirp, cfg), cfg)
    assert vec[names.index("f0_slope")] > 50  # Hz per second
    assert 150 <= vec[names.index("f0_min")] < vec[names.index("f0_max")] <= 310


def test_f0_functionals_use_voiced_frames_only():
    cfg = FeatureConfig(frame_kinds=("f0",))
    y = np.concatenate([np.zeros(SR // 2, dtype=np.float32), tone(0.5, freq=220)])
    vec, names = functionals(F.compute(y, cfg), cfg)
    assert vec[names.index("f0_mean")] == pytest.approx(220, rel=0.02)
    assert vec[names.index("f0_min")] > 200
    assert vec[names.index("voiced_fraction")] == pytest.approx(0.5, abs=0.06)
    with pytest.raises(ConfigError, match="not computed"):
        functionals({"rms": np.zeros((1, 5), dtype=np.float32)}, cfg)


# ---- cache and extraction ----------------------------------------------------------------------------------


def make_manifest(tmp_path: Path, freqs=(180.0, 240.0, 320.0), seconds: float = 0.4) -> pd.DataFrame:
    rows = []
    for i, f in enumerate(freqs):
        path = write_wav(tmp_path / "audio" / f"u{i}.wav", tone(seconds, freq=f))
        rows.append(
            {
                "utt_id": f"synth:u{i}",
                "path": str(path),
                "sha256": sha256_file(path),
                "corpus": "synth",
                "speaker": "synth:s1",
                "gender": "unknown",
                "emotion": "neutral",
            }
        )
    return conform(pd.DataFrame(rows))


def test_cache_roundtrip_and_safety(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    sha = "ab" * 32
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = cache.put("logmel", "h1", sha, {"data": data})
    assert path == tmp_path / "c" / "logmel" / "h1" / "ab" / f"{sha}.npz"
    got, status = cache.lookup("logmel", "h1", sha)
    assert status == "hit" and np.array_equal(got["data"], data)
    assert cache.lookup("logmel", "h2", sha) == (None, "miss")
    path.write_bytes(b"not a zip")
    assert cache.lookup("logmel", "h1", sha) == (None, "corrupt")
    with pytest.raises(SerError, match="content hash"):
        cache.path("logmel", "h1", "../../etc/passwd")
    with pytest.raises(SerError, match="invalid"):
        cache.put("functionals", "h1", sha, {"data": np.zeros(3, dtype=np.float32)})  # no names
    off = FeatureCache(None)
    assert off.put("logmel", "h1", sha, {"data": data}) is None and off.lookup("logmel", "h1", sha) == (None, "miss")
    assert not list(tmp_path.glob("c/**/*.tmp"))


def test_second_run_hits_and_changing_nothing_recomputes_nothing(tmp_path):
    manifest = make_manifest(tmp_path)
    cache = tmp_path / "cache"
    first = extract_manifest(manifest, FeatureConfig(), cache, workers=1)
    n = len(manifest)
    assert first.failures == [] and first.hits == {}
    assert first.misses == {k: n for k in (*FRAME_KINDS, "functionals")}
    table = first.functionals
    assert list(table.index) == list(manifest["utt_id"]) and list(table.columns) == feature_names(FeatureConfig())
    assert table.dtypes.unique().tolist() == [np.float32]
    second = extract_manifest(manifest, FeatureConfig(), cache, workers=1)
    assert second.misses == {} and second.hits == {"functionals": n}
    pd.testing.assert_frame_equal(second.functionals, table)
    params = json.loads((cache / "mfcc" / FeatureConfig().kind_hash("mfcc") / "params.json").read_text())
    assert params["params"]["n_mfcc"] == 20 and "n_chroma" not in params["params"]


def test_changing_n_mfcc_recomputes_mfcc_but_not_logmel(tmp_path, monkeypatch):
    from ser.features import extract as extract_mod

    manifest = make_manifest(tmp_path)
    cache = tmp_path / "cache"
    extract_manifest(manifest, FeatureConfig(), cache, workers=1)
    computed: list[tuple[str, ...]] = []
    real = extract_mod.frames_mod.compute

    def counting(y, cfg, kinds):
        computed.append(tuple(kinds))
        return real(y, cfg, kinds)

    monkeypatch.setattr(extract_mod.frames_mod, "compute", counting)
    res = extract_manifest(manifest, FeatureConfig(n_mfcc=13), cache, workers=1)
    n = len(manifest)
    assert computed == [("mfcc",)] * n  # the only frame computation is MFCC
    assert res.misses == {"mfcc": n, "functionals": n}
    assert res.hits == {k: n for k in FRAME_KINDS if k != "mfcc"}
    assert res.functionals.shape == (n, len(feature_names(FeatureConfig(n_mfcc=13))))
    computed.clear()
    again = extract_manifest(manifest, FeatureConfig(n_mfcc=13), cache, workers=1)
    assert computed == [] and again.misses == {}


def test_corrupt_cache_entries_are_recomputed(tmp_path):
    manifest = make_manifest(tmp_path, freqs=(200.0, 260.0))
    cache_dir = tmp_path / "cache"
    cfg = FeatureConfig()
    first = extract_manifest(manifest, cfg, cache_dir, workers=1)
    cache = FeatureCache(cache_dir)
    sha0 = manifest["sha256"].iloc[0]
    func_path = cache.path("functionals", cfg.kind_hash("functionals"), sha0)
    func_path.write_bytes(func_path.read_bytes()[:100])  # truncated
    logmel_path = cache.path("logmel", cfg.kind_hash("logmel"), sha0)
    logmel_path.write_bytes(b"garbage")
    res = extract_manifest(manifest, cfg, cache_dir, workers=1)
    assert res.failures == []
    assert res.corrupt == {"functionals": 1, "logmel": 1}
    assert res.misses == {"functionals": 1, "logmel": 1}
    assert res.hits["functionals"] == 1  # the other utterance
    pd.testing.assert_frame_equal(res.functionals, first.functionals)
    assert cache.lookup("logmel", cfg.kind_hash("logmel"), sha0)[1] == "hit"  # repaired


def test_parallel_extraction_equals_serial(tmp_path):
    manifest = make_manifest(tmp_path, freqs=(150.0, 210.0, 290.0, 400.0))
    serial = extract_manifest(manifest, FeatureConfig(), None, workers=1)
    parallel = extract_manifest(manifest, FeatureConfig(), None, workers=2, kinds=("functionals", "logmel"))
    pd.testing.assert_frame_equal(parallel.functionals, serial.functionals)
    for u in manifest["utt_id"]:
        assert parallel.features[u]["logmel"].shape[0] == 64
    assert parallel.hits == {} and parallel.misses["functionals"] == 4


def test_features_are_the_same_bits_however_many_blas_threads_the_process_runs(tmp_path):
    """A worker (Ray, loky) runs BLAS on one thread; this process may run more. The mel projection's rounding
    depends on that count (up to 4e-6 dB on noise), so extraction pins it: a cache filled anywhere is the same."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    manifest = make_manifest(tmp_path)
    for path in manifest["path"]:  # broadband noise: every mel band and frame carries energy
        write_wav(Path(path), rng.normal(0, 0.1, 16_000).astype(np.float32))
    manifest = manifest.assign(sha256=[sha256_file(p) for p in manifest["path"]])
    kinds = ("logmel", "mfcc")
    with threadpool_limits(limits=2, user_api="blas"):
        two = extract_manifest(manifest, FeatureConfig(), None, workers=1, kinds=kinds)
    with threadpool_limits(limits=1, user_api="blas"):
        one = extract_manifest(manifest, FeatureConfig(), None, workers=1, kinds=kinds)
    for u in manifest["utt_id"]:
        for k in kinds:
            np.testing.assert_array_equal(two.features[u][k], one.features[u][k])


def test_compute_gives_the_same_bits_however_many_blas_threads_the_process_runs():
    """Every caller of ``compute`` (extraction, training variants, serving) gets the same bits: it pins BLAS itself."""
    from threadpoolctl import threadpool_limits

    from ser.features.frames import compute

    y = np.random.default_rng(1).normal(0, 0.1, 16_000).astype(np.float32)  # every band and frame has energy
    with threadpool_limits(limits=2, user_api="blas"):
        two = compute(y, FeatureConfig(), ("logmel", "chroma"))
    with threadpool_limits(limits=1, user_api="blas"):
        one = compute(y, FeatureConfig(), ("logmel", "chroma"))
    for k in one:
        np.testing.assert_array_equal(two[k], one[k])


def test_broken_files_are_failures_while_the_rest_extract(tmp_path):
    manifest = make_manifest(tmp_path, freqs=(200.0, 300.0))
    text = tmp_path / "audio" / "text.wav"
    text.write_text("this is not audio")
    changed = write_wav(tmp_path / "audio" / "changed.wav", tone(0.3))
    stale_sha = sha256_file(text)
    extra = pd.DataFrame(
        [
            {"utt_id": "synth:text", "path": str(text), "sha256": sha256_file(text)},
            {"utt_id": "synth:gone", "path": str(tmp_path / "nope.wav"), "sha256": ""},
            {"utt_id": "synth:changed", "path": str(changed), "sha256": stale_sha},
            {"utt_id": "synth:short", "path": str(write_wav(tmp_path / "s.wav", tone(0.01))), "sha256": ""},
        ]
    )
    full = pd.concat([manifest[["utt_id", "path", "sha256"]], extra], ignore_index=True)
    res = extract_manifest(full, FeatureConfig(), tmp_path / "cache", workers=1)
    reasons = {f["utt_id"]: f["reason"] for f in res.failures}
    assert set(reasons) == {"synth:text", "synth:gone", "synth:changed", "synth:short"}
    assert "undecodable" in reasons["synth:text"]
    assert "not found" in reasons["synth:gone"]
    assert "sha256 differs" in reasons["synth:changed"]
    assert "too short" in reasons["synth:short"]
    assert {f["path"] for f in res.failures} >= {str(text), str(changed)}
    assert list(res.functionals.index) == list(manifest["utt_id"])
    q = res.quarantine()
    assert list(q.columns) == ["path", "stage", "reason"] and (q["stage"] == "features").all()


def test_frame_kinds_and_bad_arguments(tmp_path):
    manifest = make_manifest(tmp_path, freqs=(220.0,))
    res = extract_manifest(manifest, FeatureConfig(), tmp_path / "c", kinds=("logmel", "f0"), workers=1)
    feats = res.features["synth:u0"]
    assert feats["logmel"].shape[1] == feats["f0"].shape[1] == F.n_frames(int(0.4 * SR))
    assert res.tables == {} and res.functionals is None
    one = extract_one(manifest["path"][0], FeatureConfig(), ("logmel",), cache=FeatureCache(tmp_path / "c"))
    assert one.hits == {"logmel": 1} and np.array_equal(one.data["logmel"], feats["logmel"])
    with pytest.raises(ConfigError, match="unknown feature kind"):
        extract_manifest(manifest, FeatureConfig(), None, kinds=("mfccs",))
    with pytest.raises(ManifestError, match="not unique"):
        extract_manifest(pd.concat([manifest, manifest]), FeatureConfig(), None)
    with pytest.raises(ConfigError, match="workers"):
        extract_manifest(manifest, FeatureConfig(), None, workers=0)


@pytest.mark.skipif(importlib.util.find_spec("opensmile") is not None, reason="opensmile is installed")
def test_opensmile_kinds_explain_how_to_install():
    with pytest.raises(SerError, match=r"pip install opensmile.*research"):
        extract_manifest(pd.DataFrame({"utt_id": ["a"], "path": ["a.wav"]}), FeatureConfig(), None, kinds=("egemaps",))


@pytest.mark.skipif(importlib.util.find_spec("opensmile") is None, reason="opensmile is not installed")
def test_opensmile_egemaps_when_installed(tmp_path):
    manifest = make_manifest(tmp_path, freqs=(220.0,), seconds=1.0)
    res = extract_manifest(manifest, FeatureConfig(), tmp_path / "c", kinds=("egemaps",), workers=1)
    assert res.tables["egemaps"].shape == (1, 88)


# ---- CLI -----------------------------------------------------------------------------------------------------


@pytest.fixture
def features_cli(run_cli):
    import ser.cli.features_cmds  # noqa: F401  registers `ser features`

    return run_cli


def test_cli_extract_twice_reports_cache_hits(tmp_path, features_cli):
    manifest = make_manifest(tmp_path)
    mpath = write_parquet(tmp_path / "manifest.parquet", manifest)
    out = tmp_path / "feats"
    code, stdout, stderr = features_cli("features", "extract", mpath, "--out", out, "--workers", "1", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["counts"] == {"utterances": 3, "extracted": 3, "failed": 0}
    assert summary["misses"]["functionals"] == 3 and summary["hits"] == {}
    table = pd.read_parquet(out / "functionals.parquet")
    assert list(table.columns[:2]) == ["utt_id", feature_names(FeatureConfig())[0]] and len(table) == 3
    assert json.loads((out / "features.json").read_text())["config_hash"] == FeatureConfig().hash()
    code, stdout, stderr = features_cli("features", "extract", mpath, "--out", out, "--workers", "1")
    assert code == 0, stderr
    assert "3 hit(s), 0 computed" in stdout
    assert json.loads((out / "features.json").read_text())["hits"] == {"functionals": 3}
    # a config that changes only n_mfcc, through --config
    cfg = tmp_path / "f.yaml"
    cfg.write_text("n_mfcc: 13\n")
    code, stdout, _ = features_cli("features", "extract", mpath, "--out", out, "-w", "1", "-c", cfg, "--json")
    assert code == 0 and json.loads(stdout)["misses"] == {"mfcc": 3, "functionals": 3}
    code, stdout, _ = features_cli(
        "features", "extract", mpath, "--out", tmp_path / "nc", "-w", "1", "--no-cache", "--json"
    )
    assert code == 0 and json.loads(stdout)["hits"] == {} and not (tmp_path / "nc" / "cache").exists()


def test_cli_help_and_errors(tmp_path, features_cli):
    code, stdout, _ = features_cli("features", "extract", "--help")
    assert code == 0 and "Example:" in stdout
    code, _, stderr = features_cli("features", "extract", tmp_path / "missing.parquet", "--out", tmp_path / "o")
    assert code == 2 and stderr.startswith("error: manifest not found") and stderr.count("\n") == 1
    manifest = make_manifest(tmp_path, freqs=(220.0,))
    mpath = write_parquet(tmp_path / "manifest.parquet", manifest)
    code, _, stderr = features_cli("features", "extract", mpath, "--out", tmp_path / "o", "--kind", "logmel")
    assert code == 2 and "--kind" in stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("fmax: 20000\n")
    code, _, stderr = features_cli("features", "extract", mpath, "--out", tmp_path / "o", "--config", bad)
    assert code == 2 and "fmax" in stderr
    broken = conform(
        pd.DataFrame([{"utt_id": "x:1", "path": str(tmp_path / "manifest.parquet"), "corpus": "x", "speaker": "x:1"}])
    )
    bpath = write_parquet(tmp_path / "broken.parquet", broken.assign(emotion="neutral", gender="unknown"))
    code, _, stderr = features_cli("features", "extract", bpath, "--out", tmp_path / "o2", "--json")
    assert code == 2 and "no utterance could be extracted" in stderr


# ---- real data -----------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_ravdess_functionals_through_the_cache(ravdess_dir, tmp_path):
    files = (
        sorted((ravdess_dir / "Actor_01").glob("*.flac"))[:10] + sorted((ravdess_dir / "Actor_02").glob("*.flac"))[:10]
    )
    assert len(files) == 20
    manifest = conform(
        pd.DataFrame(
            {
                "utt_id": [f"ravdess:{p.parent.name}/{p.stem}" for p in files],
                "path": [str(p) for p in files],
                "sha256": [sha256_file(p) for p in files],
                "corpus": "ravdess",
                "speaker": [f"ravdess:{p.parent.name[-2:]}" for p in files],
                "gender": ["male" if int(p.parent.name[-2:]) % 2 else "female" for p in files],
                "native_label": [p.stem.split("-")[2] for p in files],
                "emotion": [RAVDESS_EMOTIONS[p.stem.split("-")[2]] for p in files],
            }
        )
    )
    first = extract_manifest(manifest, FeatureConfig(), tmp_path / "cache", workers=2)
    assert first.failures == [] and first.misses["functionals"] == 20
    table = first.functionals
    assert table.shape == (20, len(feature_names(FeatureConfig())))
    assert np.isfinite(table.to_numpy()).all()
    f0_male, f0_female = table["f0_p50"].iloc[:10].median(), table["f0_p50"].iloc[10:].median()
    assert 70 < f0_male < f0_female < 400  # Actor_01 is male, Actor_02 female
    assert (table["voiced_fraction"] > 0.1).all()
    second = extract_manifest(manifest, FeatureConfig(), tmp_path / "cache", workers=1)
    assert second.hits == {"functionals": 20} and second.misses == {}
    pd.testing.assert_frame_equal(second.functionals, table)
