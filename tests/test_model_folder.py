"""The model-folder contract: format versions a reader accepts, and the files export writes."""

from __future__ import annotations

import json

import pytest

from ser.errors import ConfigError, SerError
from ser.model_folder import FORMAT, FORMAT_VERSION, READABLE_FORMATS, check_model_dir, read_metadata
from tests.conftest import export_tiny_model


def _write(folder, meta) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps(meta))


def test_export_writes_the_current_format(tmp_path):
    folder = export_tiny_model(tmp_path / "m")
    raw = json.loads((folder / "metadata.json").read_text())
    assert raw["format"] == FORMAT == f"ser-model/{FORMAT_VERSION}"
    assert raw["format_version"] == FORMAT_VERSION
    assert read_metadata(folder)["format_version"] == FORMAT_VERSION
    assert check_model_dir(folder) == folder


@pytest.mark.parametrize("version", sorted(READABLE_FORMATS.values()))
def test_every_older_format_is_read_with_its_version(tmp_path, version):
    _write(tmp_path, {"format": f"ser-model/{version}", "labels": ["a", "b"]})
    meta = read_metadata(tmp_path)
    assert meta["format_version"] == version
    assert READABLE_FORMATS["ser-model/1"] == 1  # folders written before the version field still load


@pytest.mark.parametrize("fmt", [f"ser-model/{FORMAT_VERSION + 1}", "ser-train/1", None, 3])
def test_a_newer_or_foreign_format_is_refused(tmp_path, fmt):
    _write(tmp_path, {"format": fmt, "labels": ["a", "b"]})
    with pytest.raises(SerError, match="format"):
        read_metadata(tmp_path)


def test_a_folder_without_onnx_is_not_a_model_folder(tmp_path):
    _write(tmp_path, {"format": FORMAT, "labels": ["a", "b"]})
    with pytest.raises(ConfigError, match=r"model\.onnx"):
        check_model_dir(tmp_path)
    with pytest.raises(SerError, match="no labels"):
        _write(tmp_path / "x", {"format": FORMAT, "labels": []})
        read_metadata(tmp_path / "x")


def test_temperature_defaults_to_one_and_is_checked():
    from ser.model_folder import temperature

    assert temperature({"labels": ["a"]}) == 1.0  # a folder written before calibration existed
    assert temperature({"calibration": {"method": "temperature", "temperature": 1.7, "ece_before": 0.1}}) == 1.7
    for bad in (
        {"method": "temperature", "temperature": 0},
        {"method": "temperature", "temperature": "2"},
        {"method": "platt", "temperature": 2.0},
        {"method": "temperature", "temperature": float("nan")},
        3,
    ):
        with pytest.raises(SerError, match="calibration"):
            temperature({"calibration": bad})
