"""The file registry: references, the promotion rule, versions, aliases with their reasons, rollback."""

from __future__ import annotations

import json

import pytest

from ser import registry as R
from ser.errors import ConfigError, SerError
from tests.conftest import export_tiny_model


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        (None, ("ser-emotion", "champion", None)),
        ("challenger", ("ser-emotion", "challenger", None)),
        ("@champion", ("ser-emotion", "champion", None)),
        ("4", ("ser-emotion", None, 4)),
        ("calls-v2", ("calls-v2", "champion", None)),
        ("calls-v2@challenger", ("calls-v2", "challenger", None)),
        ("calls-v2/3", ("calls-v2", None, 3)),
    ],
)
def test_parse_ref(ref, want):
    assert R.parse_ref(ref) == want


def test_parse_ref_rejects_garbage():
    with pytest.raises(ConfigError):
        R.parse_ref("a b/c")


EV = {"key": "data-1", "uar": 0.60, "max_group_gap": 0.05}


@pytest.mark.parametrize(
    ("cand", "champ", "kw", "promote", "why"),
    [
        (EV, None, {}, True, "no champion"),
        ({**EV, "uar": 0.62}, EV, {"margin": 0.01}, True, "beats"),
        ({**EV, "uar": 0.605}, EV, {"margin": 0.01}, False, "does not beat"),
        ({**EV, "uar": 0.59}, EV, {}, False, "does not beat"),
        ({**EV, "uar": 0.9, "key": "data-2"}, EV, {}, False, "not comparable"),
        ({**EV, "uar": 0.9, "max_group_gap": 0.3}, EV, {"max_group_gap": 0.2}, False, "gap"),
        ({**EV, "max_group_gap": 0.3}, None, {"max_group_gap": 0.2}, False, "gap"),
        ({**EV, "uar": 0.7, "max_group_gap": None}, EV, {"max_group_gap": 0.2}, True, "beats"),
    ],
)
def test_decide(cand, champ, kw, promote, why):
    d = R.decide(cand, champ, **kw)
    assert d.promote is promote and why in d.reason


@pytest.mark.parametrize(
    ("on_missing", "promote", "outcome", "why"),
    [("block", False, "missing_group", "on_missing_group=block"), ("allow", True, "better", "allowed by")],
)
def test_decide_makes_a_missing_group_gap_an_explicit_outcome(on_missing, promote, outcome, why):
    cand = {**EV, "uar": 0.7, "max_group_gap": None, "group": "gender"}
    d = R.decide(cand, EV, max_group_gap=0.2, on_missing_group=on_missing)
    assert (d.promote, d.outcome) == (promote, outcome)
    assert why in d.reason and "gender UAR gap in cross-validation cannot be computed" in d.reason
    with pytest.raises(ConfigError):
        R.decide(cand, EV, max_group_gap=0.2, on_missing_group="maybe")


def test_unseen_gate_drops_what_either_model_trained_on():
    ov = R.unseen_gate(["a", "b", "c", "d"], {"a", "x"}, {"b", "c"})
    assert ov["keep"] == [False, False, False, True] and ov["n_unseen"] == 1
    assert (ov["candidate_seen"], ov["champion_seen"]) == (1, 2)
    unknown = R.unseen_gate(["a", "b"], set(), None)  # a champion from before trained_on.txt: not checked
    assert unknown["keep"] == [True, True] and unknown["champion_checked"] is False


def _gate(diff, low, high, *, cand_gap=0.05, champion=True, n_unseen=80, champion_seen=0, checked=True):
    return {
        "n": n_unseen + champion_seen,
        "n_unseen": n_unseen,
        "speakers": 4,
        "group": "gender",
        "overlap": {
            "candidate_seen": 0,
            "champion_seen": champion_seen,
            "candidate_checked": True,
            "champion_checked": checked,
        },
        "candidate": {"version": "2", "uar": 0.5 + diff, "group_gap": cand_gap},
        "champion": {"version": "1", "uar": 0.5, "group_gap": 0.1} if champion else None,
        "diff": {"diff": diff, "low": low, "high": high} if champion else None,
        "comparable": True,
    }


@pytest.mark.parametrize(
    ("gate", "kw", "promote", "outcome", "why"),
    [
        (_gate(0.10, 0.04, 0.16), {"margin": 0.02}, True, "better", "lower end reaches the margin 0.0200"),
        (_gate(0.10, -0.01, 0.2), {}, False, "not_better", "does not reach"),  # better on average, CI crosses 0
        (_gate(0.10, -0.01, 0.2), {"rule": "point"}, True, "better", "the gain +0.1000 reaches"),
        (_gate(0.01, -0.02, 0.05), {"rule": "point", "margin": 0.02}, False, "not_better", "does not reach"),
        (_gate(-0.10, -0.2, -0.03), {}, False, "not_better", "[-0.2000, -0.0300]"),
        (_gate(0.0, 0.0, 0.0), {}, False, "not_better", "does not reach"),  # a tie never promotes under ci
        (_gate(0.10, 0.04, 0.16, cand_gap=0.3), {"max_group_gap": 0.2}, False, "group_gap", "on the gate set"),
        (
            _gate(0.10, 0.04, 0.16, cand_gap=None),
            {"max_group_gap": 0.2, "on_missing_group": "block"},
            False,
            "missing_group",
            "cannot be computed",
        ),
        (_gate(0.10, 0.04, 0.16, cand_gap=None), {"max_group_gap": 0.2}, True, "better", "allowed by"),
        (_gate(0.1, 0.04, 0.16, champion=False), {}, True, "first", "no champion yet; gate UAR 0.6000"),
        (
            _gate(0.10, 0.04, 0.16, n_unseen=5, champion_seen=75),
            {"min_utterances": 20},
            False,
            "gate_too_small",
            "trained on 75 of the 80 gate utterances",
        ),
        (
            _gate(0.10, 0.04, 0.16, n_unseen=60, champion_seen=20),
            {"min_utterances": 20},
            True,
            "better",
            "only the 60 neither model saw count",
        ),
        (_gate(0.10, 0.04, 0.16, checked=False), {}, True, "better", "records no training content"),
    ],
)
def test_decide_gate(gate, kw, promote, outcome, why):
    d = R.decide_gate(gate, **kw)
    assert (d.promote, d.outcome) == (promote, outcome), d.reason
    assert why in d.reason


def test_decide_gate_names_the_scores_the_ci_and_the_gate_size():
    d = R.decide_gate(_gate(0.10, 0.04, 0.16))
    assert "UAR 0.6000 vs the champion v1's 0.5000 on the gate set (80 utterances, 4 speakers)" in d.reason
    assert "95 % CI of the difference [+0.0400, +0.1600] (speaker bootstrap)" in d.reason
    not_comparable = {**_gate(0.1, 0.04, 0.16), "comparable": False, "why": "the models' classes differ"}
    assert R.decide_gate(not_comparable).outcome == "not_comparable"


@pytest.fixture
def model(tmp_path):
    return export_tiny_model(tmp_path / "exported", evaluation=EV)


def test_versions_aliases_events_and_rollback(tmp_path, model):
    wd = tmp_path / "wd"
    assert R.versions(wd) == [] and R.read_aliases(wd) == {}
    with pytest.raises(SerError, match="no champion"):
        R.resolve(wd)
    v1 = R.add_version(wd, model)
    v2 = R.add_version(wd, model)
    assert (v1.name, v2.name) == ("1", "2") and R.versions(wd) == [1, 2]
    meta = json.loads((v2 / "metadata.json").read_text())
    assert meta["version"] == "2" and meta["name"] == "ser-emotion" and meta["registered"]
    R.set_alias(wd, "ser-emotion", "champion", 1, "first")
    R.set_alias(wd, "ser-emotion", "challenger", 2, "worse")
    assert R.resolve(wd) == v1 and R.resolve(wd, "challenger") == v2 and R.resolve(wd, "ser-emotion/2") == v2
    R.set_alias(wd, "ser-emotion", "champion", 2, "by hand")
    assert R.previous_champion(wd) == 1
    reasons = [e.get("reason") for e in R.events(wd) if e["event"] == "alias"]
    assert reasons == ["first", "worse", "by hand"]
    rows = R.list_versions(wd)
    assert [(r.version, sorted(r.aliases), r.uar) for r in rows] == [(1, [], 0.6), (2, ["challenger", "champion"], 0.6)]
    with pytest.raises(SerError, match="not registered"):
        R.set_alias(wd, "ser-emotion", "champion", 9, "nope")
    with pytest.raises(ConfigError, match="alias"):
        R.set_alias(wd, "ser-emotion", "king", 1, "nope")
    # a half-copied version (killed registration) is not a version
    (R.model_root(wd) / "3").mkdir()
    assert R.versions(wd) == [1, 2] and R.next_version(wd, "ser-emotion") == 4
