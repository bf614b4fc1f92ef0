"""A synthetic demo corpus made by code: voiced, speech-like signals whose prosody depends on the emotion.

Not real speech, and never reported as such: the root holds ``SYNTHETIC_CORPUS.json`` and ``README.txt``, and the
RAVDESS adapter labels such a folder ``synthetic``. Layout and names follow RAVDESS
(``Actor_NN/03-01-EE-II-SS-RR-NN.wav``) so the same adapter ingests it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from ser import TARGET_SR
from ser.errors import SerError
from ser.io import write_text

EMOTION_CODES = {
    "neutral": "01",
    "calm": "02",
    "happy": "03",
    "sad": "04",
    "angry": "05",
    "fearful": "06",
    "disgust": "07",
    "surprised": "08",
}

# (F0 factor, F0 range in semitones, syllables/s, level dB, jitter, tilt (one-pole a), contour slope st/s)
PROSODY = {
    "neutral": (1.00, 2.0, 4.0, -20, 0.005, 0.90, -1.0),
    "calm": (0.92, 1.2, 3.2, -24, 0.004, 0.94, -1.5),
    "happy": (1.30, 6.0, 4.8, -15, 0.008, 0.80, 1.0),
    "sad": (0.85, 1.0, 2.8, -27, 0.006, 0.96, -2.5),
    "angry": (1.35, 4.5, 5.2, -10, 0.010, 0.65, -0.5),
    "fearful": (1.45, 3.0, 5.8, -17, 0.030, 0.82, 0.5),
    "disgust": (0.88, 2.5, 3.0, -19, 0.012, 0.90, -3.0),
    "surprised": (1.40, 7.0, 4.4, -14, 0.008, 0.78, 5.0),
}
VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410), (300, 870, 2240)]


@dataclass(frozen=True)
class Speaker:
    index: int
    gender: str
    f0: float
    formant_scale: float
    rate: float


def make_speakers(n: int, rng: np.random.Generator) -> list[Speaker]:
    out = []
    for i in range(1, n + 1):
        male = i % 2 == 1  # RAVDESS convention: odd actors are male
        f0 = rng.uniform(100, 130) if male else rng.uniform(190, 230)
        out.append(
            Speaker(
                i,
                "male" if male else "female",
                float(f0),
                float(rng.uniform(0.95, 1.05) * (1.0 if male else 1.15)),
                float(rng.uniform(0.9, 1.1)),
            )
        )
    return out


def _resonator(x: np.ndarray, f: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    a = [1.0, -2 * r * np.cos(2 * np.pi * f / sr), r * r]
    return lfilter([1 - r], a, x)


def synth_utterance(emotion: str, speaker: Speaker, rng: np.random.Generator, sr: int = TARGET_SR) -> np.ndarray:
    """One utterance (mono float32, ``sr`` Hz, ~1.5-3 s) of the emotion's prosody in the speaker's voice."""
    f0k, rng_st, rate, level, jitter, tilt, slope = PROSODY[emotion]
    rate *= speaker.rate * rng.uniform(0.9, 1.1)
    n_syl = int(rng.integers(5, 9))
    dur = n_syl / rate + 0.3
    n = int(dur * sr)
    t = np.arange(n) / sr
    # F0 contour: level, declination/slope, syllable-rate oscillation scaled by the range, jitter
    st = slope * t + rng_st * np.sin(2 * np.pi * rate * 0.5 * t + rng.uniform(0, 2 * np.pi)) / 2
    f0 = speaker.f0 * f0k * rng.uniform(0.95, 1.05) * 2 ** (st / 12) * (1 + jitter * rng.standard_normal(n))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    source = sum(np.sin(k * phase) / k for k in range(1, 30) if k * f0.max() < sr / 2)
    source = lfilter([1.0], [1.0, -tilt], source)  # spectral tilt: larger a → steeper
    # syllable envelope with vowel changes
    out = np.zeros(n)
    seg = int(sr / rate)
    for s in range(n_syl):
        a, b = int(0.15 * sr) + s * seg, min(n, int(0.15 * sr) + (s + 1) * seg)
        if a >= n:
            break
        f1, f2, f3 = (f * speaker.formant_scale for f in VOWELS[int(rng.integers(len(VOWELS)))])
        chunk = source[a:b]
        voiced = sum(_resonator(chunk, f, bw, sr) for f, bw in ((f1, 80), (f2, 100), (f3, 120)))
        env = np.hanning(b - a) ** 0.7 * rng.uniform(0.7, 1.0)
        out[a:b] = voiced * env
    out += 0.02 * rng.standard_normal(n) * (np.abs(out).max() or 1)  # aspiration noise
    out *= 10 ** (level / 20) / (np.sqrt(np.mean(out**2)) + 1e-9)
    return np.clip(out, -0.99, 0.99).astype(np.float32)


def synthesize(
    out_dir: str | Path, n_speakers: int = 8, per_emotion: int = 4, seed: int = 0, sr: int = TARGET_SR
) -> Path:
    """Write the corpus under ``out_dir`` and return it. Same seed → byte-identical files."""
    if not 1 <= per_emotion <= 4:
        raise SerError(f"per_emotion must be 1..4 (distinct RAVDESS file names), got {per_emotion}")
    if n_speakers < 2 or n_speakers > 99:
        raise SerError(f"speakers must be 2..99, got {n_speakers}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    speakers = make_speakers(n_speakers, rng)
    for spk in speakers:
        folder = out / f"Actor_{spk.index:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for emotion, code in EMOTION_CODES.items():
            for i in range(per_emotion):
                intensity = "01" if emotion == "neutral" else ("01", "02")[i % 2]
                statement = ("01", "02")[(i // 2) % 2]
                rep = ("01", "02")[i % 2] if emotion == "neutral" else "01"
                name = f"03-01-{code}-{intensity}-{statement}-{rep}-{spk.index:02d}.wav"
                y = synth_utterance(emotion, spk, rng, sr)
                sf.write(folder / name, y, sr, subtype="PCM_16")
    marker = {
        "corpus": "synthetic",
        "note": "synthetic demo corpus made by `ser data synth`; not real speech",
        "seed": seed,
        "speakers": [asdict(s) for s in speakers],
        "per_emotion": per_emotion,
        "sr": sr,
    }
    write_text(out / "SYNTHETIC_CORPUS.json", json.dumps(marker, indent=2) + "\n")
    write_text(out / "README.txt", "SYNTHETIC demo corpus made by code (ser data synth). Not real speech.\n")
    return out
