"""The promotion gate at the job level: candidate and champion scored with onnxruntime on the same gate set,
the overlap check against what each model trained on, the missing-group outcome, and where the decision is
recorded (events.jsonl, metadata, model card, the version's gate/ folder). Models are tiny untrained CNNs: these
tests check the flow and the records; the pipeline tests check that a better model wins."""

from __future__ import annotations

import json

import pytest

from ser import registry as R
from ser.errors import SerError
from tests.conftest import export_tiny_model


@pytest.fixture(scope="module")
def gate_set(tmp_path_factory):
    """A validated synthetic manifest (4 speakers, 2 per gender, 32 clips) with content hashes: the gate set."""
    from ser.data.synth import synthesize
    from ser.jobs.data import IngestJob, ValidateJob

    root = tmp_path_factory.mktemp("gate")
    corpus = synthesize(root / "corpus", n_speakers=4, per_emotion=1, seed=5)
    ing = IngestJob("ravdess", corpus, root / "ingest").run()
    val = ValidateJob(ing.manifest, root / "validate", thresholds={"min_files_per_class": 0}).run()
    m = val.result.manifest.assign(source="new")
    assert len(m) == 32 and m["pcm_hash"].str.len().eq(64).all()
    return m


def _model(path, trained_on=()):
    from ser.model_folder import write_trained_on

    folder = export_tiny_model(path, label_profile="ravdess8", evaluation={"uar": 0.5, "key": "k"})
    write_trained_on(folder, list(trained_on))
    (folder / "MODEL_CARD.md").write_text("# a tiny model (version {{version}})\n")
    return folder


def _register(wd, folder, gate, **rules):
    from ser.jobs.release import GateRules, RegisterJob

    r = GateRules(**{"min_utterances": 5, "n_boot": 50, **rules})
    return RegisterJob(wd, folder, "ser-emotion", {"uar": 0.5, "key": "k"}, gate=gate, rules=r).run()


@pytest.mark.slow
def test_a_champion_that_trained_on_gate_utterances_is_detected_and_only_the_unseen_part_counts(gate_set, tmp_path):
    wd = tmp_path / "wd"
    seen = gate_set["pcm_hash"].iloc[:8].tolist()
    first = _register(wd, _model(tmp_path / "a", trained_on=seen), gate_set)
    assert first.alias == "champion" and "no champion yet; gate UAR" in first.reason
    second = _register(wd, _model(tmp_path / "b"), gate_set)
    assert second.version == 2 and second.alias == "challenger"  # the same untrained net: no gain
    assert "the champion v1 was trained on 8 of the 32 gate utterances: only the 24 neither model saw count" in (
        second.reason
    )
    gate = json.loads((second.model_dir / "gate" / "gate.json").read_text())
    assert (gate["n"], gate["n_unseen"], gate["overlap"]["champion_seen"]) == (32, 24, 8)
    assert gate["candidate"]["n"] == gate["champion"]["n"] == 24  # both scored on the same 24
    assert gate["diff"]["diff"] == 0 and gate["diff"]["low"] == 0
    for who in ("candidate", "champion"):
        assert (second.model_dir / "gate" / who / "report.md").is_file()
        assert (second.model_dir / "gate" / who / "confusion_matrix.png").is_file()
    # recorded: events.jsonl, metadata, model card
    ev = [e for e in R.events(wd) if e["event"] == "gate"]
    assert [e["version"] for e in ev] == [1, 2] and ev[1]["outcome"] == "not_better"
    assert ev[1]["gate"]["n_unseen"] == 24 and ev[1]["champion_score"]["version"] == "1"
    assert ev[1]["candidate_score"]["uar"] == gate["candidate"]["uar"] and ev[1]["uar_diff"]["high"] == 0
    meta = json.loads((second.model_dir / "metadata.json").read_text())
    assert meta["decision"]["alias"] == "challenger" and meta["decision"]["basis"] == "gate"
    card = (second.model_dir / "MODEL_CARD.md").read_text()
    assert "## Registry decision" in card and "24 of them, from 3 speakers, were seen by neither model" in card
    assert "UAR difference (this model − champion): +0.0 points" in card
    # every gate utterance seen by the champion: nothing fair is left, so the gate blocks
    third = _register(wd, _model(tmp_path / "c"), gate_set.iloc[:8])
    assert third.alias == "challenger" and "gate set too small: 0 utterances" in third.reason
    # a gate that fails (the champion's graph is gone) registers nothing and leaves nothing behind
    (wd / "registry" / "ser-emotion" / "1" / "model.onnx").rename(tmp_path / "moved.onnx")
    with pytest.raises(SerError, match=r"model\.onnx"):
        _register(wd, _model(tmp_path / "d"), gate_set)
    assert R.versions(wd) == [2, 3] and not list((wd / "registry" / "ser-emotion").glob(".gate-*"))


@pytest.mark.slow
@pytest.mark.parametrize(("choice", "alias"), [("block", "challenger"), ("allow", "champion")])
def test_a_missing_group_is_an_explicit_recorded_outcome(gate_set, tmp_path, choice, alias):
    wd = tmp_path / "wd"
    men = gate_set[gate_set["gender"] == "male"]  # one gender in the gate set: no gender gap
    reg = _register(wd, _model(tmp_path / "a"), men, max_group_gap=0.2, on_missing_group=choice)
    assert reg.alias == alias
    assert "the gender UAR gap on the gate set cannot be computed" in reg.reason
    assert f"register.on_missing_group={choice}" in reg.reason
    ev = [e for e in R.events(wd) if e["event"] == "gate"][-1]
    assert ev["outcome"] == ("missing_group" if choice == "block" else "first")
    assert ev["candidate_score"]["group_gap"] is None


def test_without_a_gate_set_the_same_evaluation_rule_applies_and_says_so(tmp_path):
    wd = tmp_path / "wd"
    reg = _register(wd, _model(tmp_path / "a"), None)
    assert reg.alias == "champion" and reg.reason.startswith("no gate set")
    again = _register(wd, _model(tmp_path / "b"), None)
    assert again.alias == "champion" and "beats the champion's" in again.reason  # same key, same UAR, margin 0
    assert [e["basis"] for e in R.events(wd) if e["event"] == "gate"] == ["cross-validation"] * 2
