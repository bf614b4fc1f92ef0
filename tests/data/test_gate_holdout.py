"""The promotion gate set: a speaker-disjoint, gender-balanced share of the new sources, set aside before any
split."""

from __future__ import annotations

import pandas as pd
import pytest

from ser.data.split import gate_holdout, make_splits
from ser.errors import SerError


def _manifest() -> pd.DataFrame:
    rows = []
    for source, n_spk in (("old", 6), ("new", 8)):
        for s in range(n_spk):
            for u in range(5):
                rows.append(
                    {
                        "utt_id": f"{source}/{s}/{u}",
                        "speaker": f"{source}/{s}",
                        "gender": "male" if s % 2 else "female",
                        "emotion": ("angry", "sad")[u % 2],
                        "sha256": f"{source}{s}{u}",
                        "source": source,
                    }
                )
    return pd.DataFrame(rows)


def test_gate_is_a_speaker_disjoint_gender_balanced_share_of_the_new_source():
    m = _manifest()
    pool, gate = gate_holdout(m, {"new": 0.5}, seed=0)
    assert len(pool) + len(gate) == len(m)
    assert set(gate["source"]) == {"new"} and gate["speaker"].nunique() == 4
    assert gate.drop_duplicates("speaker")["gender"].value_counts().to_dict() == {"female": 2, "male": 2}
    assert not set(gate["speaker"]) & set(pool["speaker"])
    # a byte-identical file shared by new/3 and old/1 puts both speakers on the same side
    m.loc[m["utt_id"] == "new/3/0", "sha256"] = "old10"
    chosen = 0
    for seed in range(6):
        p2, g2 = gate_holdout(m, {"new": 0.5}, seed=seed)
        assert ("new/3" in set(g2["speaker"])) == ("old/1" in set(g2["speaker"]))
        assert not set(g2["sha256"]) & set(p2["sha256"])
        chosen += "new/3" in set(g2["speaker"])
    assert 0 < chosen < 6
    m.loc[m["utt_id"] == "new/3/0", "sha256"] = "new30"
    again, _ = gate_holdout(m, {"new": 0.5}, seed=0)
    assert again.equals(pool)
    _, other = gate_holdout(m, {"new": 0.5}, seed=1)
    assert set(other["speaker"]) != set(gate["speaker"])
    # the folds never see a gate speaker
    splits = make_splits(pool, "kfold", k=3, seed=0)
    assert not set(splits["speaker"]) & set(gate["speaker"])


def test_gate_keeps_one_speaker_on_each_side_and_refuses_what_it_cannot_split():
    m = _manifest()
    pool, gate = gate_holdout(m, {"new": 0.05}, seed=0)  # rounds to none: still one held out
    assert gate["speaker"].nunique() == 1
    pool, gate = gate_holdout(m[m["speaker"].isin(["new/0", "new/1"])], {"new": 0.9}, seed=0)
    assert gate["speaker"].nunique() == 1 and pool["speaker"].nunique() == 1
    with pytest.raises(SerError, match="no utterances"):
        gate_holdout(m, {"nope": 0.3})
    with pytest.raises(SerError, match="needs two"):
        gate_holdout(m[m["speaker"] == "new/0"], {"new": 0.3})
    pool, gate = gate_holdout(m, {})
    assert gate.empty and len(pool) == len(m)
