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
