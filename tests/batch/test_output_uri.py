"""``--out`` as an fsspec URI: ``memory://`` stands in for an object store (gs://, s3://: a part is one upload,
committed whole), ``file://`` is the local folder by another name. Resume, the clean-up after a run killed
between the two commits of a part and ``retry_failed`` work there as in a local folder; protocols whose writes are
not atomic are refused."""

from __future__ import annotations

import uuid

import fsspec
import pytest

from ser.batch.store import read_table
from ser.errors import ConfigError
from ser.jobs.batch import BatchJob
from tests.batch.conftest import CORRUPT, assert_same_rows, frames


@pytest.fixture
def memory_out():
    """A fresh ``memory://`` output URI, removed afterwards."""
    root = f"/scores-{uuid.uuid4().hex[:8]}"
    yield f"memory://{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_an_object_store_output_resumes_like_a_folder(archive, model_dir, baseline, memory_out):
    fs = fsspec.filesystem("memory")
    first = BatchJob(str(archive), memory_out, model_dir, limit=3, part_files=1).run()
    assert (first.ok + first.failed, first.remaining, first.parts, first.out) == (3, 2, 3, memory_out)
    files_dir = memory_out[len("memory://") :] + "/files/model_version=3"
    seg_dir = memory_out[len("memory://") :] + "/segments/model_version=3"
    assert fs.isfile(f"{files_dir}/_batch.json")
    # killed between the segments upload and the files upload: that part's files were not done
    fs.rm(sorted(fs.glob(f"{files_dir}/part-*.parquet"))[-1])
    second = BatchJob(str(archive), memory_out, model_dir, part_files=2).run()
    assert (second.skipped, second.ok + second.failed, second.remaining) == (2, 3, 0)
    names = {p.rsplit("/", 1)[-1] for p in fs.glob(f"{seg_dir}/part-*.parquet")}
    assert names == {p.rsplit("/", 1)[-1] for p in fs.glob(f"{files_dir}/part-*.parquet")}  # the orphan is gone
    assert_same_rows(memory_out, baseline[1])
    third = BatchJob(str(archive), memory_out, model_dir).run()
    assert (third.skipped, third.ok, third.failed, third.parts) == (5, 0, 0, 0)
    # --retry-failed rewrites the parts holding failed rows (one upload each) and runs those files again
    again = BatchJob(str(archive), memory_out, model_dir, retry_failed=True).run()
    assert (again.skipped, again.failed, again.ok) == (4, 1, 0)
    assert (frames(memory_out)[1]["file"] == CORRUPT).sum() == 1
    assert_same_rows(memory_out, baseline[1])
    assert set(read_table(memory_out, "files", ["model_version"])["model_version"].to_pylist()) == {"3"}


def test_a_file_uri_output_is_the_local_folder(archive, model_dir, baseline, tmp_path):
    out = tmp_path / "out"
    first = BatchJob(str(archive), f"file://{out}", model_dir, limit=2).run()
    assert first.ok + first.failed == 2 and (out / "files" / "model_version=3").is_dir()
    second = BatchJob(str(archive), out, model_dir).run()  # the same folder by its path
    assert (second.skipped, second.ok + second.failed) == (2, 3)
    assert_same_rows(out, baseline[1])


@pytest.mark.parametrize("out", ["ftp://example.invalid/scores", "sftp://host/scores", "hdfs://nn/scores"])
def test_outputs_without_atomic_writes_are_refused(archive, model_dir, out):
    with pytest.raises(ConfigError, match=r"is not supported for output .* use a local folder or gs://"):
        BatchJob(str(archive), out, model_dir)  # refused before anything is listed or connected


def test_cli_out_uri(run_cli, archive, model_dir, baseline, memory_out):
    code, out, err = run_cli("batch", archive, "--out", memory_out, "--model", model_dir, "--json")
    assert code == 1, err  # the corrupt file
    assert '"out": "' + memory_out + '"' in out
    assert_same_rows(memory_out, baseline[1])
    code, _, err = run_cli("batch", archive, "--out", "ftp://example.invalid/x", "--model", model_dir)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "ftp:// is not supported for output" in lines[0], err
