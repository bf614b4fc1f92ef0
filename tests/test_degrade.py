"""Degradations: telephone band and G.711, codecs, reverb, noise at an SNR, level, the grammar, the noise split."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser import TARGET_SR
from ser import degrade as d
from ser.errors import ConfigError, LeakageError
from tests.conftest import _shared

SR = 16_000


@pytest.fixture(scope="session")
def noise_dir() -> Path:
    return _shared("noise")


def sine(freq: float, seconds: float = 1.0, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding 150–250 Hz pitch, syllable-rate amplitude modulation, a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 200 + 50 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    y = 0.2 * y + 0.005 * np.random.default_rng(seed).standard_normal(len(t))
    return y.astype(np.float32)


def level_db(y: np.ndarray, freq: float) -> float:
    """Magnitude (dB) of the Hann-windowed FFT around ``freq`` (1 Hz bins for a 1 s signal)."""
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    k = round(freq * len(y) / SR)
    return float(20 * np.log10(spec[k - 2 : k + 3].max() + 1e-12))


def rms_db(y: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(y, dtype=np.float64))))


# ---- telephone and G.711 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("law", ["mulaw", "alaw", "none"])
def test_telephone_keeps_the_band_and_removes_the_rest(law):
    for freq, lo, hi in ((100, None, -20), (6000, None, -20), (1000, -3, 3)):
        y = sine(freq)
        out = d.telephone(y, SR, law)
        assert out.dtype == np.float32 and out.shape == y.shape and np.all(np.isfinite(out))
        change = level_db(out, freq) - level_db(y, freq)
        assert change < hi and (lo is None or change > lo), (freq, change)
    odd = d.telephone(sine(1000)[:12_345], SR, law)
    assert odd.shape == (12_345,)


def test_g711_decode_tables_match_libsndfile_and_encoding_agrees():
    codes = np.arange(256, dtype=np.uint8)
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    for sub, enc, dec in (("ULAW", d.mulaw_encode, d.mulaw_decode), ("ALAW", d.alaw_encode, d.alaw_decode)):
        ref, _ = sf.read(io.BytesIO(codes.tobytes()), format="RAW", subtype=sub, samplerate=8000, channels=1)
        assert np.array_equal(dec(codes), ref.astype(np.float32))
        buf = io.BytesIO()
        sf.write(buf, pcm, 8000, format="RAW", subtype=sub)
        ref_codes = np.frombuffer(buf.getvalue(), dtype=np.uint8)
        mine = enc(pcm / 32768.0)
        assert mine.dtype == np.uint8
        # libsndfile truncates negative values toward zero where the reference code floors: decision-boundary
        # samples (< 1 %) land on the neighbouring level.
        assert np.mean(mine == ref_codes) > 0.99
        assert np.max(np.abs(dec(mine) - dec(ref_codes))) <= 1024 / 32768


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_g711_round_trip_is_quantised_and_bounded(law):
    x = np.linspace(-1, 1, 100_001, dtype=np.float32)
    out = d.g711(x, law)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert len(np.unique(out)) <= 256
    inside = np.abs(x) <= 0.97
    err = np.abs(out - x)[inside]
    assert np.all(err <= np.abs(x[inside]) / 16 + 3e-4)
    assert err.max() < 0.016
    loud = np.abs(x[inside]) > 0.1
    assert np.all(err[loud] <= np.abs(x[inside][loud]) / 28)
    assert np.max(np.abs(out)) < 0.99
    with pytest.raises(ConfigError, match="law"):
        d.g711(x, "ulaw")  # type: ignore[arg-type]


# ---- codecs ------------------------------------------------------------------------------------------------


def test_installed_libsndfile_has_the_three_codecs():
    assert set(d.available_codecs()) == {"mp3", "opus", "vorbis"}


@pytest.mark.parametrize("codec", ["mp3", "opus", "vorbis"])
def test_codec_round_trip_keeps_length_and_shape(codec):
    if codec not in d.available_codecs():
        pytest.skip(f"{codec} not in this libsndfile")
    y = speechlike()[:15_999]
    for level in (0.5, 0.9):
        out = d.codec_roundtrip(y, SR, codec, level)
        assert out.dtype == np.float32 and out.shape == y.shape and np.all(np.isfinite(out))
        assert np.corrcoef(out, y)[0, 1] > 0.95
        assert not np.array_equal(out, y)
    assert np.array_equal(out, d.codec_roundtrip(y, SR, codec, 0.9))
    other_rate = d.codec_roundtrip(y, 22_050, codec)  # opus and mp3 go through 48 kHz / their own rates
    assert other_rate.shape == y.shape


def test_codec_errors(monkeypatch):
    with pytest.raises(ConfigError, match="unknown codec"):
        d.codec_roundtrip(speechlike(0.1), SR, "aac")
    with pytest.raises(ConfigError, match="compression level"):
        d.codec_roundtrip(speechlike(0.1), SR, "mp3", 1.0)
    monkeypatch.setattr(sf, "available_subtypes", lambda fmt=None: {})
    with pytest.raises(ConfigError, match="not supported by the installed libsndfile"):
        d.codec_roundtrip(speechlike(0.1), SR, "opus")


# ---- reverb ------------------------------------------------------------------------------------------------


def test_reverb_lengthens_the_decay_keeps_length_and_level():
    burst = np.zeros(SR, dtype=np.float32)
    burst[: SR // 10] = np.random.default_rng(0).standard_normal(SR // 10).astype(np.float32) * 0.1
    out = d.reverberate(burst, SR, 0.6)
    assert out.dtype == np.float32 and out.shape == burst.shape and np.all(np.isfinite(out))
    after = slice(SR // 10 + SR // 100, None)  # 10 ms after the burst ends
    tail_in = np.sum(np.square(burst[after], dtype=np.float64))
    tail_out = np.sum(np.square(out[after], dtype=np.float64)) / np.sum(np.square(out, dtype=np.float64))
    assert tail_in == 0 and tail_out > 0.05
    assert abs(rms_db(out) - rms_db(burst)) < 1e-3
    # aligned on the direct path: the reverberant signal correlates best with the dry one at lag 0
    lags = [int(np.dot(out[k:], burst[: SR - k])) for k in range(0, 40)]
    assert int(np.argmax(lags)) <= 2
    shorter = d.reverberate(burst, SR, 0.3)
    assert np.sum(np.square(shorter[after], dtype=np.float64)) < np.sum(np.square(out[after], dtype=np.float64))
    assert np.array_equal(d.reverberate(np.zeros(100, np.float32), SR), np.zeros(100, np.float32))


def test_rir_is_seeded_by_position():
    a = d.room_impulse_response(SR, 0.6, position_seed=0)
    assert np.array_equal(a, d.room_impulse_response(SR, 0.6, position_seed=0))
    assert not np.array_equal(a[:2000], d.room_impulse_response(SR, 0.6, position_seed=1)[:2000])
    with pytest.raises(ConfigError):
        d.room_impulse_response(SR, 0.0)


# ---- noise and level ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 30.0])
def test_mixed_noise_has_the_requested_snr_over_the_clip(snr):
    y = speechlike(1.0)
    for noise in (d.pink_noise(SR // 3, 1), d.white_noise(3 * SR, 2)):  # looped, and cropped at an offset
        out = d.mix_at_snr(y, noise, snr, rng=3)
        assert out.dtype == np.float32 and out.shape == y.shape
        measured = rms_db(y) - rms_db(out.astype(np.float64) - y)
        assert abs(measured - snr) < 0.1


def test_mix_edge_cases():
    silent = np.zeros(1000, np.float32)
    assert np.array_equal(d.mix_at_snr(silent, d.white_noise(500, 0), 10, 0), silent)
    with pytest.raises(ConfigError, match="silent"):
        d.mix_at_snr(speechlike(0.1), np.zeros(500, np.float32), 10, 0)
    with pytest.raises(ConfigError, match="shape"):
        d.mix_at_snr(np.zeros((2, 100), np.float32), d.white_noise(500, 0), 10, 0)
    pink = d.pink_noise(SR, 0)
    spec = np.abs(np.fft.rfft(pink)) ** 2
    assert spec[50:150].mean() > 10 * spec[5000:5100].mean()  # 1/f: 100 Hz has ~50x the power of 5 kHz


def test_load_noise(tmp_path):
    sf.write(tmp_path / "hum.flac", sine(50, 0.5), SR)
    sf.write(tmp_path / "hiss.wav", d.white_noise(SR // 2, 0) * 0.1, SR, subtype="FLOAT")
    assert d.noise_names(tmp_path) == ("hiss", "hum")
    hum = d.load_noise("hum", tmp_path)
    assert hum.dtype == np.float32 and hum.shape == (SR // 2,) and not hum.flags.writeable
    assert d.load_noise("hum", tmp_path, sr=8000).shape == (SR // 4,)
    with pytest.raises(ConfigError, match="available: hiss, hum"):
        d.load_noise("babble", tmp_path)
    with pytest.raises(ConfigError, match="invalid noise name"):
        d.load_noise("../hum", tmp_path)


def test_gain_is_exact_in_db():
    y = speechlike()
    for db in (-30.0, -6.0, 0.0, 3.5):
        out = d.gain(y, db)
        assert out.dtype == np.float32 and out.shape == y.shape
        assert abs(rms_db(out) - rms_db(y) - db) < 1e-4
    clipped = d.gain(y, 40, clip=True)
    assert np.max(np.abs(clipped)) == 1.0
    assert np.max(np.abs(d.gain(y, 40))) > 1.0


# ---- apply, determinism ------------------------------------------------------------------------------------


def test_apply_is_deterministic_per_seed():
    y = speechlike()
    noises = {"babble": d.pink_noise(2 * SR, 7)}
    chain = "reverb+noise:babble@5+noise:generated-white@20+codec:opus+gain:-3"
    a = d.apply(y, SR, chain, 0, noises=noises)
    b = d.apply(y, SR, d.parse(chain), np.random.default_rng(0), noises=noises)
    c = d.apply(y, SR, chain, 1, noises=noises)
    assert a.dtype == np.float32 and a.shape == y.shape and np.all(np.isfinite(a))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    assert np.array_equal(d.apply(y, SR, "clean", None), y)
    with pytest.raises(ConfigError, match="pass noises=<folder>"):
        d.apply(y, SR, "noise:babble@10", 0)
    with pytest.raises(ConfigError, match="not among"):
        d.apply(y, SR, "noise:factory1@10", 0, noises=noises)


# ---- grammar -----------------------------------------------------------------------------------------------


def test_grammar_parses_named_and_generic_steps():
    assert d.parse("clean") == ()
    assert d.parse(" telephone + noise:babble@10 ") == (d.Telephone(), d.Noise(noise="babble", snr_db=10))
    assert d.parse("noise-0db:factory1") == (d.Noise(noise="factory1", snr_db=0),)
    assert d.parse("level-30db") == (d.Gain(gain_db=-30),)
    assert d.parse("gain:+6:clip+reverb:0.8@2") == (d.Gain(gain_db=6, clip=True), d.Reverb(rt60_s=0.8, position_seed=2))
    assert d.parse("codec:mp3@0.5") == (d.Codec(codec="mp3", compression_level=0.5),)
    assert d.parse("reverb") == (d.Reverb(rt60_s=0.6),)
    for text in (*d.BENCHMARK_CONDITIONS, "telephone:alaw+codec:vorbis@0.25+noise:generated-pink@-2.5+gain:-1.5"):
        chain = d.parse(text)
        assert d.parse(d.format_chain(chain)) == chain
    assert d.format_chain(d.parse("noise-10db:babble+level-30db")) == "noise:babble@10+gain:-30"
    assert d.degradation_from_dict(d.Noise(noise="babble", snr_db=5).model_dump()) == d.Noise(noise="babble", snr_db=5)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("telephone+", "empty step"),
        ("clean+telephone", "stand alone"),
        ("noise:babble", "unknown degradation step 'noise:babble'"),
        ("noise:babble@loud", "unknown degradation step"),
        ("codec:aac", "'codec:aac'"),
        ("codec:mp3@1", "mp3 compression level"),
        ("gain:500", "gain:500"),
        ("reverb:0", "reverb:0"),
        ("telephone:gsm", "telephone:gsm"),
        ("echo", "'echo'"),
    ],
)
def test_grammar_rejects_bad_strings(text, match):
    with pytest.raises(ConfigError, match=match):
        d.parse(text)


# ---- training draws and the noise split --------------------------------------------------------------------


def test_noise_split_and_training_draws():
    assert not set(d.TRAIN_NOISES) & set(d.HELD_OUT_NOISES)
    with pytest.raises(LeakageError, match="factory1"):
        d.sample_training_degradation(0, noises=["babble", "factory1"])
    with pytest.raises(LeakageError):
        d.check_training_noises(d.HELD_OUT_NOISES)
    assert d.sample_training_degradation(0, noises=["factory1"], allow_held_out=True) is not None
    cfg = d.TrainingDegradationConfig(p_noise=1.0, p_reverb=0.5, p_gain=0.5, p_channel=0.5)
    chains = [d.sample_training_degradation(seed, config=cfg) for seed in range(200)]
    assert chains == [d.sample_training_degradation(seed, config=cfg) for seed in range(200)]
    used = {s.noise for c in chains for s in c if isinstance(s, d.Noise)}
    assert used <= set(d.TRAIN_NOISES) and len(used) >= 4
    kinds = {s.kind for c in chains for s in c}
    assert kinds == {"reverb", "noise", "gain", "telephone", "codec"}
    order = ["reverb", "noise", "gain", "telephone", "codec"]
    for c in chains:
        assert [s.kind for s in c] == sorted((s.kind for s in c), key=order.index)
    nothing = d.TrainingDegradationConfig(p_noise=0, p_reverb=0, p_gain=0, p_channel=0)
    assert d.sample_training_degradation(0, config=nothing) == ()
    with pytest.raises(ConfigError, match="snr_db"):
        d.make_training_config({"snr_db": (20, 0)})
    with pytest.raises(ConfigError, match="not one telephone or codec step"):
        d.make_training_config({"channels": ["noise:babble@3"]})


def test_training_rooms_never_place_the_held_out_test_room():
    """benchmarks/robustness.py tests reverb in ``reverb:0.7@7``: the training draws use position seeds below
    ``room_positions`` (4), so that room impulse response is never seen in training, whatever the RT60."""
    cfg = d.TrainingDegradationConfig(p_reverb=1.0, p_noise=0, p_gain=0, p_channel=0)
    rooms = {c[0] for seed in range(300) for c in [d.sample_training_degradation(seed, config=cfg)]}
    assert {r.position_seed for r in rooms} == {0, 1, 2, 3}
    assert d.parse("reverb:0.7@7")[0] not in rooms
    assert {round(r.rt60_s, 6) for r in rooms} <= {0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}


# ---- real recordings ---------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_every_named_condition_on_a_real_clip(ravdess_dir, noise_dir):
    from ser.audio import load_audio

    recorded = {n for n in (*d.TRAIN_NOISES, *d.HELD_OUT_NOISES) if n not in d.GENERATED_NOISES}
    assert set(d.noise_names(noise_dir)) >= recorded
    clip = load_audio(sorted((ravdess_dir / "Actor_01").glob("*.flac"))[20])
    conditions = [
        *d.BENCHMARK_CONDITIONS,
        "telephone:alaw",
        "noise-10db:babble+telephone",
        "reverb+noise:volvo_car@5+codec:mp3",
        "gain:20:clip",
    ]
    for i, text in enumerate(conditions):
        out = d.apply(clip, TARGET_SR, text, i, noises=noise_dir)
        assert out.dtype == np.float32 and out.shape == clip.shape and np.all(np.isfinite(out)), text
        assert (text == "clean") == np.array_equal(out, clip), text
    for seed in range(3):
        chain = d.sample_training_degradation(seed, config=d.TrainingDegradationConfig(p_noise=1.0))
        out = d.apply(clip, TARGET_SR, chain, seed, noises=noise_dir)
        assert out.shape == clip.shape and np.all(np.isfinite(out))
    noisy = d.apply(clip, TARGET_SR, "noise-0db:factory1", 5, noises=noise_dir)
    snr = rms_db(clip) - rms_db(noisy - clip.astype(np.float64))
    assert abs(snr) < 0.1
