"""``ser batch`` on the command line: exit codes and messages, ``--ray ADDRESS`` against a real local Ray cluster
(the session's ``ray_cluster`` fixture) with the same rows as in-process, and a run killed with SIGKILL that
resumes to the same rows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ser.jobs.batch import BatchJob
from tests.batch.conftest import CORRUPT, STEREO, assert_same_rows, frames
from tests.conftest import ROOT


def ser_process(*args: str) -> subprocess.Popen:
    """``python -m ser ARGS`` in a new process (this tree's sources first)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "ser", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_exit_1_and_one_line_per_failed_file(run_cli, archive, model_dir, tmp_path):
    code, out, err = run_cli("batch", archive, "--out", tmp_path / "out", "--model", model_dir)
    assert code == 1, err
    assert "5 files in" in out and "4 analysed, 1 failed, 0 done before" in out and "ser-emotion v3" in out
    assert f"failed: {CORRUPT}: undecodable audio" in out
    code, out, _ = run_cli("batch", archive, "--out", tmp_path / "out", "--model", model_dir, "--json")
    assert code == 0  # nothing failed in this run: every file was done before
    d = json.loads(out)
    assert (d["files"], d["skipped"], d["ok"], d["failed"]) == (5, 5, 0, 0)


def test_exit_0_when_every_file_is_analysed(run_cli, archive, model_dir, tmp_path):
    code, out, err = run_cli("batch", archive / STEREO, "--out", tmp_path / "o", "--model", model_dir, "--json")
    assert code == 0, err
    assert json.loads(out)["ok"] == 1
    code, out, err = run_cli(
        "batch", archive / STEREO, "--out", tmp_path / "s", "--model", model_dir,
        "--channels", "split", "--channel-names", "agent,customer", "--json",
    )  # fmt: skip
    assert code == 0, err
    _, files = frames(tmp_path / "s")
    assert list(files["channel"]) == ["agent", "customer"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--channels", "both"], "error: --channels must be mix or split"),
        (["--channel-names", "agent,customer"], "error: --channel-names needs --channels split"),
        (["--channels", "split", "--channel-names", "a,a"], "error: channel names must be unique"),
        (["--workers", "0"], "error: --workers must be >= 1"),
        (["--step", "0"], "error: timeline step must be > 0 s"),
    ],
)
def test_bad_options_exit_2_with_one_line(run_cli, archive, model_dir, tmp_path, args, message):
    code, _, err = run_cli("batch", archive, "--out", tmp_path / "out", "--model", model_dir, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(message), err


def test_bad_paths_exit_2(run_cli, archive, model_dir, tmp_path):
    code, _, err = run_cli("batch", tmp_path / "nope", "--out", tmp_path / "out", "--model", model_dir)
    assert code == 2 and "error: archive not found" in err
    code, _, err = run_cli("batch", archive, "--out", tmp_path / "out", "--model", tmp_path)
    assert code == 2 and "error: not a model folder" in err
    code, _, err = run_cli("batch", archive, "--out", tmp_path / "out", "--model", model_dir, "--workdir", tmp_path)
    assert code == 2 and "give --model or --workdir/--ref, not both" in err


@pytest.mark.slow
def test_ray_job_gives_the_same_rows_as_in_process(ray_cluster, archive, model_dir, baseline, tmp_path):
    res = BatchJob(str(archive), tmp_path / "out", model_dir, ray=ray_cluster, part_files=2).run()
    assert res.executor == f"ray ({ray_cluster})" and (res.ok, res.failed) == (4, 1)
    assert_same_rows(tmp_path / "out", baseline[1])
    # another job on the same workers and model, other settings: the workers' cached model takes them
    split = {"channels": "split", "channel_names": ("agent", "customer")}
    BatchJob(str(archive), tmp_path / "split-ray", model_dir, ray=ray_cluster, **split).run()  # type: ignore[arg-type]
    BatchJob(str(archive), tmp_path / "split", model_dir, **split).run()  # type: ignore[arg-type]
    assert_same_rows(tmp_path / "split-ray", tmp_path / "split")
    assert set(frames(tmp_path / "split-ray")[0]["channel"]) == {"agent", "customer"}


@pytest.mark.slow
def test_cli_batch_on_the_ray_cluster_address(ray_cluster, archive, model_dir, baseline, tmp_path):
    """A second driver process connects to the fixture's cluster by its address, as `ser batch --ray ADDRESS` does
    on a real cluster."""
    out_dir = str(tmp_path / "out")
    proc = ser_process(
        "batch", str(archive), "--out", out_dir, "--model", str(model_dir), "--ray", ray_cluster, "--json"
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err  # the corrupt file
    d = json.loads(out)
    assert d["executor"] == f"ray ({ray_cluster})" and (d["ok"], d["failed"]) == (4, 1)
    assert_same_rows(tmp_path / "out", baseline[1])


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_same_rows(archive, model_dir, tmp_path):
    big = tmp_path / "big"
    for i in range(30):  # 30 copies of the archive: long enough to be killed half-way
        shutil.copytree(archive, big / f"day{i:02d}")
    out = tmp_path / "out"
    proc = ser_process("batch", str(big), "--out", str(out), "--model", str(model_dir), "--part-files", "3", "--json")
    files_dir = out / "files" / "model_version=3"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(list(files_dir.glob("part-*.parquet"))) < 2:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done_before = len(frames(out)[1]["file"].unique())
    assert 0 < done_before < 150
    res = BatchJob(str(big), out, model_dir).run()
    assert res.skipped == done_before and res.skipped + res.ok + res.failed == 150
    BatchJob(str(big), tmp_path / "clean", model_dir).run()
    assert_same_rows(out, tmp_path / "clean")


_NO_TORCH = """
import sys

class NoTorch:  # as in an image without torch: any attempt to import it fails
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio", "torchvision"):
            raise ImportError(f"{name} is not installed")

sys.meta_path.insert(0, NoTorch())
from ser.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_batch_runs_without_torch(archive, model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    args = [str(archive), "--out", str(tmp_path / "out"), "--model", str(model_dir), "--json"]  # all in this process
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, "batch", *args], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr  # the corrupt file, nothing else
    assert json.loads(proc.stdout)["ok"] == 4
