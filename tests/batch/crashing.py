"""A per-file processor that kills its own worker process on chosen recordings, for the worker-died tests.

:class:`CrashingProcessor` sends its process SIGKILL (what the kernel's OOM killer does; a segfault in a decoder
ends a process as abruptly) when the recording has a marker file ``<name>.crash`` beside it (and notes the
process in ``<name>.kills``), and analyses every
other recording as :class:`ser.batch.worker.FileProcessor` does. The tests hand it to ``ser batch`` by import path
(:data:`PROCESSOR`, ``BatchJob.processor``), so it lives in an importable module: spawned pool workers get the test
process' ``sys.path``, Ray workers the driver's working directory (the repository root, where pytest runs).

The marker holds the test process' id: the processor refuses to kill that process (an in-process run) and raises
instead, which the worker records as an ordinary failed file.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from ser.audio import AudioInfo, Decoded
from ser.batch.archive import filesystem
from ser.batch.worker import FileProcessor

MARKER = ".crash"
KILLS = ".kills"
PROCESSOR = "tests.batch.crashing:CrashingProcessor"


def kills(recording: Path) -> list[int]:
    """The ids of the worker processes ``recording`` killed."""
    log = recording.with_name(recording.name + KILLS)
    return [int(line) for line in log.read_text().split()] if log.is_file() else []


def mark(recording: Path) -> Path:
    """Make ``recording`` kill the worker process that analyses it (with :data:`PROCESSOR`)."""
    marker = recording.with_name(recording.name + MARKER)
    marker.write_text(str(os.getpid()))
    return marker


class CrashingProcessor(FileProcessor):
    def decode(self, uri: str, check: Callable[[AudioInfo], None]) -> Decoded:
        fs, path = filesystem(uri)
        if fs.exists(path + MARKER):
            if int(fs.cat_file(path + MARKER)) == os.getpid():
                raise RuntimeError("not killing the test process: run the crash tests with workers or on Ray")
            with fs.open(path + KILLS, "a") as fh:  # one line per process killed, for the tests to count
                fh.write(f"{os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().decode(uri, check)
