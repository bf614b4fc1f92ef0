"""Per-group metrics with fairlearn: gaps between groups, small groups left out, age bands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ser.evaluate import EvaluationError, age_bands, group_metrics

CLASSES = ["angry", "sad"]


def _crafted() -> tuple[list[str], list[str], pd.DataFrame]:
    """Women: 10 angry all right, 10 sad 8 right → accuracy 0.9, UAR 0.9.

    Men: 15 angry 11 right, 5 sad 1 right → accuracy 12/20 = 0.6, UAR (11/15 + 1/5) / 2.
    Three more utterances of unknown gender (all wrong) from a tiny third corpus.
    """
    y_true, y_pred, gender, corpus, age = [], [], [], [], []

    def add(n, true, pred, g, c, a):
        y_true.extend([true] * n)
        y_pred.extend([pred] * n)
        gender.extend([g] * n)
        corpus.extend([c] * n)
        age.extend([a] * n)

    add(10, "angry", "angry", "female", "cremad", 24.0)
    add(8, "sad", "sad", "female", "cremad", 35.0)
    add(2, "sad", "angry", "female", "cremad", 35.0)
    add(11, "angry", "angry", "male", "emodb", 41.0)
    add(4, "angry", "sad", "male", "emodb", 41.0)
    add(1, "sad", "sad", "male", "emodb", np.nan)
    add(4, "sad", "angry", "male", "emodb", np.nan)
    add(3, "angry", "sad", "unknown", "tiny", 67.0)
    return y_true, y_pred, pd.DataFrame({"gender": gender, "corpus": corpus, "age": age})


FEMALE_UAR = (1.0 + 0.8) / 2
MALE_UAR = (11 / 15 + 1 / 5) / 2


def test_gender_gap_matches_hand_computation():
    y_true, y_pred, groups = _crafted()
    groups.index = np.arange(len(groups))[::-1] + 100  # e.g. the test rows of a manifest: aligned by position
    res = group_metrics(y_true, y_pred, groups, classes=CLASSES)
    gender = res["attributes"]["gender"]
    rows = {g["group"]: g for g in gender["groups"]}
    assert set(rows) == {"female", "male"}  # "unknown" is not a group
    assert rows["female"]["accuracy"] == pytest.approx(0.9) and rows["female"]["count"] == 20
    assert rows["male"]["accuracy"] == pytest.approx(0.6) and rows["male"]["count"] == 20
    assert rows["female"]["uar"] == pytest.approx(FEMALE_UAR)
    assert rows["male"]["uar"] == pytest.approx(MALE_UAR)
    assert gender["gap"]["accuracy"] == pytest.approx(0.3)
    assert gender["gap"]["uar"] == pytest.approx(FEMALE_UAR - MALE_UAR)
    assert gender["worst"] == {"accuracy": "male", "uar": "male"}
    assert gender["best"] == {"accuracy": "female", "uar": "female"}
    json.dumps(res)


def test_small_groups_are_listed_but_not_in_the_gap():
    y_true, y_pred, groups = _crafted()
    corpus = group_metrics(y_true, y_pred, groups, classes=CLASSES, min_group_size=10)["attributes"]["corpus"]
    rows = {g["group"]: g for g in corpus["groups"]}
    assert rows["tiny"] == {"group": "tiny", "accuracy": 0.0, "uar": 0.0, "count": 3, "included": False}
    assert corpus["n_included"] == 2 and corpus["n_ignored"] == 1
    assert corpus["gap"]["accuracy"] == pytest.approx(0.3)  # cremad vs emodb only
    assert corpus["worst"]["accuracy"] == "emodb"
    # with a lower threshold the tiny corpus counts and becomes the worst group
    low = group_metrics(y_true, y_pred, groups, classes=CLASSES, min_group_size=3)["attributes"]["corpus"]
    assert low["gap"]["accuracy"] == pytest.approx(0.9) and low["worst"]["accuracy"] == "tiny"
    # a single large group has no gap; no large group neither
    only = group_metrics(y_true, y_pred, groups, classes=CLASSES, min_group_size=15)["attributes"]["age"]
    assert only["gap"] == {"accuracy": None, "uar": None} and only["n_included"] == 1
    assert only["worst"]["accuracy"] == "40-49"
    alone = group_metrics(y_true, y_pred, groups, classes=CLASSES, min_group_size=21)["attributes"]["gender"]
    assert alone["n_included"] == 0 and alone["gap"]["accuracy"] is None


def test_age_bands():
    bands = age_bands([25, 31.9, 40, np.nan, 95, 105, -1, None])
    assert bands.tolist() == ["20-29", "30-39", "40-49", pd.NA, "90-99", "100-109", pd.NA, pd.NA]
    assert age_bands([37], width=5).tolist() == ["35-39"]
    with pytest.raises(EvaluationError):
        age_bands([30], width=0)


def test_age_band_groups_ignore_missing_ages():
    y_true, y_pred, groups = _crafted()
    age = group_metrics(y_true, y_pred, groups, classes=CLASSES, attributes=["age"], min_group_size=1)
    rows = age["attributes"]["age"]["groups"]
    assert [r["group"] for r in rows] == ["20-29", "30-39", "40-49", "60-69"]
    assert [r["count"] for r in rows] == [10, 10, 15, 3]  # the 5 utterances without an age are left out
    assert rows[1]["accuracy"] == pytest.approx(0.8) and rows[2]["accuracy"] == pytest.approx(11 / 15)
    assert age["attributes"]["age"]["gap"]["accuracy"] == pytest.approx(1.0)  # 20-29 perfect, 60-69 all wrong


def test_bad_group_input():
    y_true, y_pred, groups = _crafted()
    with pytest.raises(EvaluationError, match="rows"):
        group_metrics(y_true, y_pred, groups.iloc[:5], classes=CLASSES)
    with pytest.raises(EvaluationError, match="lacks"):
        group_metrics(y_true, y_pred, groups, classes=CLASSES, attributes=["race"])
    with pytest.raises(EvaluationError, match="min_group_size"):
        group_metrics(y_true, y_pred, groups, classes=CLASSES, min_group_size=0)
    empty = group_metrics(y_true, y_pred, groups.assign(gender="unknown"), attributes=["gender"])
    assert empty["attributes"]["gender"]["groups"] == []


def test_missing_group_values_are_left_out():
    groups = pd.DataFrame({"gender": pd.array(["male", pd.NA, "female", "", "male", "female"], dtype="string")})
    res = group_metrics([0, 1, 0, 1, 0, 1], [0, 1, 1, 1, 0, 0], groups, classes=CLASSES, min_group_size=1)
    rows = res["attributes"]["gender"]["groups"]
    assert [(r["group"], r["count"], r["accuracy"]) for r in rows] == [("female", 2, 0.0), ("male", 2, 1.0)]
    assert res["attributes"]["gender"]["gap"]["accuracy"] == 1.0
