"""The promotion gate on real speech: the bundled RAVDESS model against an untrained stand-in, both scored with
onnxruntime on the same RAVDESS gate set (``GateJob`` → ``decide_gate``). The bundled model was trained on these very
clips, and neither folder records ``trained_on.txt`` (the gate says it cannot check overlap): the test guards the
gate's real-audio path (decode, label folding, paired speaker bootstrap, decision), not the model's accuracy."""

from __future__ import annotations

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
    better = GateJob(bundled_dir(), untrained, gate_set, tmp_path / "up", rules).run()
    assert better["n_unseen"] == len(gate_set) >= 40 and better["speakers"] == 4
    assert better["candidate"]["uar"] > better["champion"]["uar"] + 0.2
    decision = registry.decide_gate(better, min_utterances=20)
    assert decision.outcome == "better" and decision.promote, decision.reason
    assert "overlap not checked" in decision.reason  # a folder without trained_on.txt: what it saw is unknown

    worse = GateJob(untrained, bundled_dir(), gate_set, tmp_path / "down", rules).run()
    decision = registry.decide_gate(worse, min_utterances=20)
    assert not decision.promote and decision.outcome == "not_better", decision.reason
    assert (tmp_path / "down" / "gate.json").is_file()
