"""The pipeline image as a Cloud Run job or a Vertex AI custom training job: with ``$AIP_MODEL_DIR`` set, ``ser
pipeline run`` also copies the registered model folder there (fsspec's memory filesystem stands in for gs://), and
gs:// data is read through gcsfs (the ``scale`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from ser.errors import SerError
from ser.pipeline import MODEL_DIR_VARIABLE, RunSummary, copy_model_folder
from ser.pipeline.runner import StageResult


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"onnx bytes")
    (path / "metadata.json").write_text('{"version": "4"}')
    (path / "MODEL_CARD.md").write_text("---\n---\n# card\n")
    return path


def _summary(tmp_path: Path, *, ok: bool = True, registered: bool = True) -> RunSummary:
    folder = _model_folder(tmp_path / "registry" / "ser-emotion" / "4")
    result = {"name": "ser-emotion", "version": 4, "alias": "champion", "reason": "first", "model_dir": str(folder)}
    results = [StageResult("train", "k1", "ran" if ok else "failed", 1.0, error=None if ok else "boom")]
    if registered and ok:
        results.append(StageResult("register", "k2", "ran", 0.1, "v4", {"result": result}))
    return RunSummary(tmp_path, results, "2026-12-02T07:00:00+00:00", 1.1)


def test_copy_model_folder_writes_the_folder_flat(tmp_path):
    dest = "memory://aip-test-1/model"
    assert copy_model_folder(_summary(tmp_path), dest) == dest
    fs = fsspec.filesystem("memory")
    assert fs.cat("/aip-test-1/model/model.onnx") == b"onnx bytes"
    assert json.loads(fs.cat("/aip-test-1/model/metadata.json")) == {"version": "4"}
    assert fs.exists("/aip-test-1/model/MODEL_CARD.md") and fs.exists("/aip-test-1/model/_COMPLETE")
    local = tmp_path / "local-dest"  # a plain path works too (a mounted bucket, a volume)
    copy_model_folder(_summary(tmp_path / "again"), str(local))
    assert (local / "model.onnx").read_bytes() == b"onnx bytes"


def test_nothing_to_copy_is_an_error(tmp_path):
    with pytest.raises(SerError, match="no registered model"):
        copy_model_folder(_summary(tmp_path, ok=False), "memory://aip-test-2/model")
    with pytest.raises(SerError, match="no registered model"):
        copy_model_folder(_summary(tmp_path / "b", registered=False), "memory://aip-test-2/model")


def test_pipeline_run_copies_to_aip_model_dir(run_cli, tmp_path, monkeypatch):
    import ser.pipeline

    summaries = iter([_summary(tmp_path / "1"), _summary(tmp_path / "2", ok=False)])
    monkeypatch.setattr(ser.pipeline, "run", lambda cfg, wd, **kw: next(summaries))
    monkeypatch.setenv(MODEL_DIR_VARIABLE, "memory://aip-test-3/model/")
    code, out, err = run_cli("pipeline", "run", "--workdir", tmp_path, "--json")
    assert code == 0, err
    assert json.loads(out)["copied_to"] == "memory://aip-test-3/model/"
    assert fsspec.filesystem("memory").cat("/aip-test-3/model/model.onnx") == b"onnx bytes"
    code, out, _ = run_cli("pipeline", "run", "--workdir", tmp_path, "--json")  # a failed run copies nothing
    assert code == 1 and "copied_to" not in json.loads(out)


def test_pipeline_run_without_aip_model_dir_copies_nothing(run_cli, tmp_path, monkeypatch):
    import ser.pipeline

    monkeypatch.setattr(ser.pipeline, "run", lambda cfg, wd, **kw: _summary(tmp_path))
    monkeypatch.delenv(MODEL_DIR_VARIABLE, raising=False)
    code, out, _ = run_cli("pipeline", "run", "--workdir", tmp_path, "--json")
    assert code == 0 and "copied_to" not in json.loads(out)


def test_gs_uris_go_through_gcsfs():
    gcsfs = pytest.importorskip("gcsfs", reason="the scale extra (gcsfs) is not installed")
    assert fsspec.get_filesystem_class("gs") is gcsfs.GCSFileSystem
