"""A recording that kills its worker process (SIGKILL from :mod:`tests.batch.crashing`, handed to the job as its
per-file processor): in a local process pool and on the session's real Ray cluster, that file ends as a failed row
"worker process died", every other file gets the rows an in-process run gives, the run goes on to the end, and
``retry_failed`` runs the file again once it no longer crashes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ser.batch.executors import DIED, RAY_MAX_RETRIES
from ser.batch.worker import processor_class
from ser.errors import ConfigError
from ser.jobs.batch import BatchJob
from tests.batch.conftest import CORRUPT, assert_same_rows, frames, make_archive, silence, voice
from tests.batch.crashing import PROCESSOR, kills, mark
from tests.conftest import write_wav

BOOM = "boom.wav"


def _others(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frames(out)`` without the crashing file's rows."""
    seg, files = frames(out)
    keep = [f[f["file"] != BOOM].reset_index(drop=True) for f in (seg, files)]
    return keep[0], keep[1]


def _check_crash_then_retry(calls, out, model_dir, baseline_out, attempts: int, **executor) -> None:
    marker = mark(calls / BOOM)
    res = BatchJob(str(calls), out, model_dir, processor=PROCESSOR, part_files=2, **executor).run()
    assert (res.files, res.ok, res.failed, res.remaining) == (6, 4, 2, 0)  # the run went on to the end
    assert dict(res.failures) == {BOOM: DIED, CORRUPT: dict(res.failures)[CORRUPT]}
    _, files = frames(out)
    boom = files[files["file"] == BOOM]
    assert len(boom) == 1 and boom.iloc[0]["status"] == "failed" and boom.iloc[0]["reason"] == DIED
    for got, want in zip(_others(out), frames(baseline_out), strict=True):  # the others as in-process
        pd.testing.assert_frame_equal(got, want)
    assert len(set(kills(calls / BOOM))) == attempts  # each attempt in a process of its own

    marker.unlink()  # the file no longer crashes its worker: --retry-failed runs it (and the corrupt one) again
    again = BatchJob(str(calls), out, model_dir, processor=PROCESSOR, retry_failed=True, **executor).run()
    assert (again.skipped, again.ok, again.failed) == (4, 1, 1) and again.failures[0][0] == CORRUPT
    reference = out.parent / "inline"
    BatchJob(str(calls), reference, model_dir).run()
    assert_same_rows(out, reference)  # boom.wav now has its rows, once


def _archive_with_boom(root):
    calls = make_archive(root)
    write_wav(calls / BOOM, np.concatenate([voice(1.0, 200.0), silence(0.3)]))
    return calls


@pytest.mark.slow
def test_a_file_that_kills_its_pool_worker_fails_alone(model_dir, baseline, tmp_path):
    # 2 workers with 2 files each in flight: other files share the broken pool with boom.wav and must not fail;
    # boom.wav kills a worker of the pool, then the one process it runs in alone
    calls = _archive_with_boom(tmp_path / "calls")
    _check_crash_then_retry(calls, tmp_path / "out", model_dir, baseline[1], attempts=2, workers=2)


@pytest.mark.slow
def test_a_file_that_kills_its_ray_worker_fails_after_retries(ray_cluster, model_dir, baseline, tmp_path):
    calls = _archive_with_boom(tmp_path / "calls")
    attempts = 1 + RAY_MAX_RETRIES  # Ray restarts the process and runs the task again, then gives up
    _check_crash_then_retry(calls, tmp_path / "out", model_dir, baseline[1], attempts=attempts, ray=ray_cluster)


def test_in_process_the_crashing_processor_fails_the_file_instead(model_dir, tmp_path):
    """The guard of the test processor itself: an in-process run must not kill pytest."""
    calls = _archive_with_boom(tmp_path / "calls")
    mark(calls / BOOM)
    res = BatchJob(str(calls / BOOM), tmp_path / "out", model_dir, processor=PROCESSOR).run()
    assert res.failed == 1 and "not killing the test process" in res.failures[0][1]


def test_the_processor_setting(archive, model_dir, tmp_path):
    with pytest.raises(ConfigError, match="cannot be imported"):
        BatchJob(str(archive), tmp_path / "out", model_dir, processor="tests.batch.nope:Processor")
    with pytest.raises(ConfigError, match=r"not a ser\.batch\.worker\.FileProcessor"):
        BatchJob(str(archive), tmp_path / "out", model_dir, processor="pathlib:Path")
    assert processor_class(PROCESSOR).__name__ == "CrashingProcessor"
    # the processor is one of the settings a folder's rows were made with
    BatchJob(str(archive / CORRUPT), tmp_path / "out", model_dir, processor=PROCESSOR).run()
    with pytest.raises(ConfigError, match=r"other settings \(processor\)"):
        BatchJob(str(archive / CORRUPT), tmp_path / "out", model_dir).run()


def test_cli_processor_option(run_cli, archive, model_dir, tmp_path):
    from ser.batch.worker import DEFAULT_PROCESSOR
    from ser.cli.batch_cmds import DEFAULT_PROCESSOR as CLI_DEFAULT

    assert CLI_DEFAULT == DEFAULT_PROCESSOR  # the CLI's copy (not imported at start-up) is the worker's
    code, _, err = run_cli("batch", archive, "--out", tmp_path / "o", "--model", model_dir, "--processor", "nope:X")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "batch processor 'nope:X' cannot be imported" in lines[0], err
    code, out, err = run_cli(
        "batch", archive / CORRUPT, "--out", tmp_path / "o", "--model", model_dir, "--processor", PROCESSOR, "--json"
    )
    assert code == 1 and '"failed": 1' in out, err  # the corrupt file
    record = json.loads((tmp_path / "o" / "files" / "model_version=3" / "_batch.json").read_text())
    assert record["settings"]["processor"] == PROCESSOR  # the option reached the job and the folder's settings
