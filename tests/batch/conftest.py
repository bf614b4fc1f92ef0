"""An archive of small synthetic calls (mono WAV, FLAC in a sub-folder, a stereo call, silence, a corrupt file)
and a tiny exported model (untrained: these tests check rows, resume and executors, not accuracy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import export_tiny_model, write_wav

SR = 16_000
CORRUPT = "broken/corrupt.wav"
STEREO = "stereo.wav"
GOOD = ["a.wav", "silence.wav", "sub/b.flac", STEREO]
ALL = sorted([*GOOD, CORRUPT])
VOLATILE = ["processing_s"]


def voice(seconds: float, f0: float = 140.0, amp: float = 0.3) -> np.ndarray:
    """A speech-like burst webrtcvad accepts: harmonics of a vibrato f0, amplitude-modulated at 4 Hz."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) / SR
    y = sum(amp / k * np.sin(k * phase) for k in range(1, 20))
    return (y * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def make_archive(root: Path) -> Path:
    """The test archive under ``root``: 4 good recordings, 1 corrupt one, and files that are not listed."""
    write_wav(root / "a.wav", np.concatenate([silence(0.5), voice(2.0), silence(0.7), voice(1.5, 220.0)]))
    write_wav(root / "silence.wav", silence(1.5))
    write_wav(root / "sub" / "b.flac", np.concatenate([voice(1.2, 180.0), silence(0.5)]))
    left = np.concatenate([voice(1.5), silence(2.0)])  # the agent speaks first, then the customer
    right = np.concatenate([silence(2.0), voice(1.5, 250.0)])
    write_wav(root / STEREO, np.stack([left, right], axis=1))
    (root / "broken").mkdir(parents=True, exist_ok=True)
    (root / CORRUPT).write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio at all" * 4)
    (root / "notes.txt").write_text("not audio\n")
    write_wav(root / ".hidden" / "x.wav", voice(1.0))
    return root


@pytest.fixture(scope="package")
def archive(tmp_path_factory) -> Path:
    return make_archive(tmp_path_factory.mktemp("calls"))


@pytest.fixture(scope="package")
def model_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("batch-model") / "m", "3")


@pytest.fixture(scope="package")
def baseline(archive, model_dir, tmp_path_factory):
    """One complete in-process run (downmixed): ``(outcome, out)``, the reference other runs are compared with."""
    from ser.jobs.batch import BatchJob

    out = tmp_path_factory.mktemp("baseline") / "out"
    return BatchJob(str(archive), out, model_dir).run(), out


def frames(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(segments, files)`` of the output folder ``out``, sorted, without the timing column."""
    from ser.batch.store import read_table

    seg = read_table(out, "segments").to_pandas()
    files = read_table(out, "files").to_pandas().drop(columns=VOLATILE)
    seg = seg.sort_values(["file", "channel", "segment"]).reset_index(drop=True)
    files = files.sort_values(["file", "channel"], na_position="first").reset_index(drop=True)
    return seg, files


def assert_same_rows(out: Path, reference: Path) -> None:
    """The two output folders hold the same rows (timing aside), whatever the order they were written in."""
    for got, want in zip(frames(out), frames(reference), strict=True):
        pd.testing.assert_frame_equal(got, want)
