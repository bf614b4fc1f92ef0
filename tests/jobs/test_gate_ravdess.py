"""The promotion gate on real speech: the bundled RAVDESS model against an untrained stand-in, both scored with
onnxruntime on the same RAVDESS gate set (``GateJob`` → ``decide_gate``). The bundled model was trained on these very
clips and records so in ``trained_on.txt`` (the gate then finds no unseen clip); a copy without that record is scored
on every clip (the gate says it cannot check overlap): the test guards the gate's real-audio path (decode, label
folding, paired speaker bootstrap, decision), not the model's accuracy."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from ser import registry
from ser.data.ingest import ingest
from ser.data.validate import validate
from ser.jobs.release import GateJob, GateRules
from ser.pretrained import bundled_dir
from tests.conftest import export_tiny_model

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def gate_set(ravdess_dir):
    """Four actors (two women, two men), 12 clips each across the emotions: validated, so it has content hashes."""
    manifest = ingest("ravdess", ravdess_dir).manifest
    manifest = manifest[manifest["speaker"].isin(sorted(manifest["speaker"].unique())[:4])]
    sample = pd.concat([g.iloc[:: max(1, len(g) // 12)][:12] for _, g in manifest.groupby("speaker")])
    return validate(sample.reset_index(drop=True)).manifest


def test_the_gate_promotes_the_real_model_over_an_untrained_one_on_ravdess(gate_set, tmp_path):
    untrained = export_tiny_model(tmp_path / "untrained", "1")
    rules = GateRules(n_boot=200, min_utterances=20)
    # the bundled folder records what it trained on: the gate finds every gate clip among them, none unseen
    seen = GateJob(bundled_dir(), untrained, gate_set, tmp_path / "seen", rules).run()
    assert seen["n_unseen"] == 0
    # a copy without that record: the gate cannot check the overlap and scores every clip
    real = tmp_path / "bundled"
    shutil.copytree(bundled_dir(), real)
    (real / "trained_on.txt").unlink()
    better = GateJob(real, untrained, gate_set, tmp_path / "up", rules).run()
    assert better["n_unseen"] == len(gate_set) >= 40 and better["speakers"] == 4
    assert better["candidate"]["uar"] > better["champion"]["uar"] + 0.2
    decision = registry.decide_gate(better, min_utterances=20)
    assert decision.outcome == "better" and decision.promote, decision.reason
    assert "overlap not checked" in decision.reason  # a folder without trained_on.txt: what it saw is unknown

    worse = GateJob(untrained, real, gate_set, tmp_path / "down", rules).run()
    decision = registry.decide_gate(worse, min_utterances=20)
    assert not decision.promote and decision.outcome == "not_better", decision.reason
    assert (tmp_path / "down" / "gate.json").is_file()
