"""Core contracts: audio loading, manifest schema, label profiles, atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser.audio import decode_bytes, load_audio, pcm_hash, probe
from ser.data import labels, schema
from ser.errors import AudioError, ConfigError, ManifestError
from ser.io import write_parquet
from tests.conftest import tone, write_wav


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [
        ("WAV", "PCM_16", ".wav"),
        ("FLAC", "PCM_16", ".flac"),
        ("OGG", "VORBIS", ".ogg"),
        ("AIFF", "PCM_24", ".aiff"),
    ],
)
def test_load_any_format_rate_channels(tmp_path, fmt, subtype, ext):
    sr = 44_100
    y = np.stack([tone(0.5, sr), tone(0.5, sr, freq=330)], axis=1)
    path = tmp_path / f"x{ext}"
    sf.write(path, y, sr, format=fmt, subtype=subtype)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 8000) <= 2  # 0.5 s at 16 kHz
    assert probe(path).channels == 2


def test_format_from_content_not_extension(tmp_path):
    path = tmp_path / "really_flac.wav"
    sf.write(path, tone(0.2), 16_000, format="FLAC")
    assert len(load_audio(path)) == 3200


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00", b"hello, this is text not audio\n" * 20])
def test_undecodable_raises_audio_error(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError):
        load_audio(path)
    with pytest.raises(AudioError):
        decode_bytes(content)


def test_nan_samples_rejected(tmp_path):
    y = tone(0.1)
    y[10] = np.nan
    path = write_wav(tmp_path / "nan.wav", y, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(path)
    assert np.isnan(load_audio(path, allow_nonfinite=True)).any()


def test_pcm_hash_same_content_different_container(tmp_path):
    y = (tone(0.3) * 32767).astype(np.int16)  # identical PCM samples in both containers
    a = write_wav(tmp_path / "a.wav", y)
    b = tmp_path / "b.flac"
    sf.write(b, y, 16_000, format="FLAC")
    assert pcm_hash(sf.read(a)[0]) == pcm_hash(sf.read(b)[0])
    assert pcm_hash(sf.read(a)[0]) != pcm_hash(sf.read(a)[0] * 0.5)


def _manifest(n=3):
    return schema.conform(
        pd.DataFrame(
            {
                "utt_id": [f"c:{i}" for i in range(n)],
                "path": [f"/x/{i}.wav" for i in range(n)],
                "corpus": "c",
                "speaker": "c:1",
                "gender": "female",
                "emotion": ["calm", "angry", "boredom"][:n],
            }
        )
    )


def test_schema_conform_and_check(tmp_path):
    df = _manifest()
    assert list(df.columns)[: len(schema.MANIFEST_COLUMNS)] == list(schema.MANIFEST_COLUMNS)
    schema.check(df)
    path = write_parquet(tmp_path / "m.parquet", df)
    assert schema.read_manifest(path)["utt_id"].tolist() == ["c:0", "c:1", "c:2"]
    with pytest.raises(ManifestError, match="not unique"):
        schema.check(pd.concat([df, df]))
    with pytest.raises(ManifestError, match="lacks"):
        schema.check(df.drop(columns=["speaker"]))
    with pytest.raises(ManifestError, match="not found"):
        schema.read_manifest(tmp_path / "nope.parquet")


def test_profiles_fold_and_drop_with_count():
    df = _manifest()
    out, dropped = labels.apply_profile(df, "seven")
    assert out["emotion"].tolist() == ["neutral", "angry"]
    assert dropped == {"boredom": 1}
    out4, dropped4 = labels.apply_profile(df, "four")
    assert out4["emotion"].tolist() == ["neutral", "angry"] and dropped4 == {"boredom": 1}
    assert labels.get_profile("ravdess8").classes == list(labels.UNIFIED[:8])
    assert labels.get_profile("four").classes == ["neutral", "happy", "sad", "angry"]


def test_custom_profile_yaml(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: valence\nmapping: {happy: positive, angry: negative, sad: negative}\n")
    prof = labels.get_profile(path)
    assert prof.classes == ["negative", "positive"]
    path.write_text("name: bad\nmapping: {joy: positive}\n")
    with pytest.raises(ConfigError, match="not unified"):
        labels.get_profile(path)
    with pytest.raises(ConfigError, match="unknown label profile"):
        labels.get_profile("nonexistent")


@pytest.mark.parametrize(("fmt", "subtype", "ext"), [("MP3", "MPEG_LAYER_III", ".mp3"), ("AIFF", "ULAW", ".aifc")])
def test_load_mp3_and_aiff_c(tmp_path, fmt, subtype, ext):
    path = tmp_path / f"x{ext}"
    sf.write(path, tone(1.0, 22_050), 22_050, format=fmt, subtype=subtype)
    out = load_audio(path)
    assert out.dtype == np.float32 and abs(len(out) - 16_000) < 1_600  # MP3 adds encoder padding
    assert np.abs(out).max() > 0.1


def test_decode_keeps_channels_apart_on_request(tmp_path):
    """``split_channels``: one resampled row per channel, each the same as decoding that channel alone (blocks
    smaller than the file, so the streaming resamplers carry state across blocks)."""
    from ser.audio import decode

    left, right = tone(2.0, 44_100, 220.0), tone(2.0, 44_100, 330.0, amp=0.1)
    stereo = write_wav(tmp_path / "st.wav", np.stack([left, right], axis=1), 44_100, "FLOAT")
    d = decode(stereo, 16_000, split_channels=True, block_frames=4096)
    assert d.audio.shape == (2, 32_000) and d.audio.dtype == np.float32 and d.info.channels == 2
    for i, y in enumerate((left, right)):
        alone = decode(write_wav(tmp_path / f"c{i}.wav", y, 44_100, "FLOAT"), 16_000, block_frames=4096).audio
        np.testing.assert_array_equal(d.audio[i], alone)
    mixed = decode(stereo, 16_000, block_frames=4096).audio
    np.testing.assert_allclose(d.audio.mean(axis=0), mixed, atol=1e-6)
