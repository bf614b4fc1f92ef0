"""Data and artefact locations as URIs (fsspec): fetched corpora and published model folders, tested on fsspec's
in-memory filesystem (the same code path as s3:// or gs://)."""

from __future__ import annotations

import fsspec
import pytest

from ser.errors import SerError
from ser.uri import is_remote, local_copy, local_path, publish_folder


def test_scheme_detection():
    assert is_remote("s3://bucket/x") and is_remote("memory://x") and is_remote("gs://b/c")
    assert not is_remote("/data/ravdess") and not is_remote("file:///data/x")
    assert str(local_path("file:///data/x")) == "/data/x"


def test_local_copy_fetches_a_remote_folder_once(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe({"/corpus/Actor_01/a.wav": b"RIFF1", "/corpus/Actor_02/b.wav": b"RIFF2"})
    got = local_copy("memory://corpus", tmp_path / "cache")
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*.wav")) == ["Actor_01/a.wav", "Actor_02/b.wav"]
    fs.rm("/corpus", recursive=True)
    assert local_copy("memory://corpus", tmp_path / "cache") == got  # read from the local copy, not fetched again
    with pytest.raises(SerError, match="not found"):
        local_copy(tmp_path / "missing", tmp_path / "cache")


def test_publish_folder_uploads_every_file_then_a_marker(tmp_path):
    src = tmp_path / "m"
    (src / "sub").mkdir(parents=True)
    (src / "model.onnx").write_bytes(b"onnx")
    (src / "sub" / "x.json").write_text("{}")
    publish_folder(src, "memory://models/ser-emotion/3")
    fs = fsspec.filesystem("memory")
    assert fs.cat("/models/ser-emotion/3/model.onnx") == b"onnx"
    assert fs.cat("/models/ser-emotion/3/sub/x.json") == b"{}"
    assert fs.exists("/models/ser-emotion/3/_COMPLETE")
