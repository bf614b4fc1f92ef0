"""Several sources in one manifest: ids kept apart, a source column, and the data version over every source."""

from __future__ import annotations

import pandas as pd

from ser.data.ingest import combine_sources
from ser.data.schema import conform
from ser.jobs.data import data_version, source_fingerprints


def _m(corpus: str, n: int) -> pd.DataFrame:
    return conform(
        pd.DataFrame(
            {
                "utt_id": [f"{corpus}:{i}" for i in range(n)],
                "path": [f"/{corpus}/{i}.wav" for i in range(n)],
                "corpus": corpus,
                "speaker": [f"{corpus}:{i % 2}" for i in range(n)],
                "emotion": "angry",
                "sha256": [f"{corpus}{i}" for i in range(n)],
            }
        )
    )


def test_combine_sources_prefixes_ids_only_with_several_sources():
    one = combine_sources({"folder": _m("folder", 3)})
    assert list(one["utt_id"]) == ["folder:0", "folder:1", "folder:2"] and set(one["source"]) == {"folder"}
    two = combine_sources({"a": _m("folder", 3), "b": _m("folder", 2)})  # the same adapter twice: same native ids
    assert two["utt_id"].is_unique and len(two) == 5
    assert set(two["speaker"]) == {"a/folder:0", "a/folder:1", "b/folder:0", "b/folder:1"}
    assert list(two["source"]) == ["a"] * 3 + ["b"] * 2


def test_data_version_changes_with_any_source_and_only_then():
    a, b = _m("x", 3), _m("y", 2)
    v = data_version(source_fingerprints(combine_sources({"a": a, "b": b})))
    assert v == data_version(source_fingerprints(combine_sources({"a": a, "b": b})))
    b2 = b.copy()
    b2.loc[0, "emotion"] = "sad"  # one label changed in one source
    assert data_version(source_fingerprints(combine_sources({"a": a, "b": b2}))) != v
    fps = source_fingerprints(combine_sources({"a": a, "b": b2}))
    assert fps["a"] == source_fingerprints(combine_sources({"a": a, "b": b}))["a"]  # the other source's is kept
    assert list(source_fingerprints(a)) == [""]  # no source column: one source
