"""Two data sources in one pipeline (the synthetic corpus and feedback labels joined to clips), the gate set held
out before splitting, the data version and trained-on content hashes in the model folder, and the promotion gate
end to end: a better candidate is promoted over the champion on the gate set, a worse one is not, and a champion
that trained on gate utterances is caught."""

from __future__ import annotations

import json

import pytest

from ser.pipeline.config import parse_config
from tests.monitor.conftest import feedback_for_clips

WORSE = {"train": {"epochs": 1, "lr": 1e-5}}
GOOD = {"train": {"epochs": 6}}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Feedback for 6 speakers' clips (the synthetic corpus, seed 1) in a prediction log; the clips folder."""
    from ser.data.synth import synthesize

    root = tmp_path_factory.mktemp("gate-pipeline")
    clips = synthesize(root / "clips", n_speakers=6, per_emotion=2, seed=1)
    (clips / "SYNTHETIC_CORPUS.json").unlink()  # user-supplied clips: just audio files
    feedback_for_clips(clips, root / "log")
    return root, clips


def _cfg(sources, overrides, **register):
    root, clips = sources
    feedback = {"name": "fb", "corpus": "feedback", "log": str(root / "log"), "path": str(clips), "gate_share": 0.5}
    base = {"name": "base", "corpus": "synthetic", "synth_speakers": 6, "synth_per_emotion": 2}
    return parse_config(
        {
            "data": {"sources": [base, feedback]},
            "split": {"k": 2},
            "evaluate": {"n_boot": 100},
            "train": {"overrides": overrides},
            "register": {"max_group_gap": None, "n_boot": 500, **register},
        }
    )


@pytest.fixture(scope="module")
def runs(sources):
    from ser.pipeline import run

    wd = sources[0] / "wd"
    out = {}
    for name, overrides in (("worse", WORSE), ("good", GOOD), ("worse2", {"train": {"epochs": 1, "lr": 2e-5}})):
        summary = run(_cfg(sources, overrides), wd)
        assert summary.ok, summary.to_dict()
        out[name] = summary
    return wd, out


@pytest.mark.slow
def test_two_sources_one_manifest_a_held_out_gate_set_and_the_data_version(runs):
    from ser.io import read_parquet
    from ser.model_folder import read_trained_on

    wd, out = runs
    s = out["good"]
    ingest = s.record("ingest")
    m = read_parquet(ingest["outputs"]["manifest"])
    assert set(m["source"]) == {"base", "fb"} and m["utt_id"].is_unique
    assert [x["name"] for x in ingest["sources"]] == ["base", "fb"] and len(ingest["data_version"]) == 16
    assert set(m.loc[m["source"] == "fb", "corpus"]) == {"feedback"}
    split = s.record("split")
    gate = read_parquet(split["outputs"]["gate"])
    pool = read_parquet(split["outputs"]["manifest"])
    splits = read_parquet(split["outputs"]["splits"])
    assert split["gate"]["utterances"] == len(gate) == 48 and split["gate"]["speakers"] == 3
    assert split["gate"]["by_source"] == {"fb": 48}
    assert not set(gate["speaker"]) & set(pool["speaker"]) and not set(gate["speaker"]) & set(splits["speaker"])
    assert len(pool) + len(gate) == len(m)
    folder = wd / "registry" / "ser-emotion" / "2"
    trained = read_trained_on(folder)
    assert trained == set(pool["pcm_hash"]) and not trained & set(gate["pcm_hash"])
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["data_version"] == ingest["data_version"]
    assert [x["name"] for x in meta["data_sources"]] == ["base", "fb"] and meta["data_sources"][1]["gate_share"] == 0.5
    card = (folder / "MODEL_CARD.md").read_text()
    assert f"Data version `{ingest['data_version']}`" in card
    from ser.tracking import open_tracker

    run = open_tracker(wd).client.get_run(s.to_dict()["result"]["mlflow_run_id"])
    assert run.data.tags["data_version"] == ingest["data_version"]
    assert run.data.metrics["gate_n_unseen"] == 48 and "gate_uar_diff_low" in run.data.metrics


@pytest.mark.slow
def test_a_better_candidate_is_promoted_on_the_gate_set_and_a_worse_one_is_not(runs):
    from ser import registry

    wd, out = runs
    first, good, worse = (out[k].to_dict()["result"] for k in ("worse", "good", "worse2"))
    assert first["alias"] == "champion" and "no champion yet; gate UAR" in first["reason"]
    assert good["version"] == 2 and good["alias"] == "champion", good["reason"]
    assert good["gate"]["outcome"] == "better" and good["gate"]["basis"] == "gate"
    d = good["gate"]["uar_diff"]
    assert d["low"] > 0 and d["diff"] == pytest.approx(
        good["gate"]["candidate_score"]["uar"] - good["gate"]["champion_score"]["uar"]
    )
    assert "on the gate set (48 utterances, 3 speakers)" in good["reason"] and "95 % CI" in good["reason"]
    assert worse["version"] == 3 and worse["alias"] == "challenger"
    assert worse["gate"]["outcome"] == "not_better" and "does not reach the margin" in worse["reason"]
    assert registry.read_aliases(wd, "ser-emotion") == {"champion": 2, "challenger": 3}
    gates = [e for e in registry.events(wd) if e["event"] == "gate"]
    assert [(e["version"], e["outcome"]) for e in gates] == [(1, "first"), (2, "better"), (3, "not_better")]
    assert gates[1]["gate"]["n"] == 48 and gates[1]["champion_score"]["version"] == "1"
    card = (wd / "registry" / "ser-emotion" / "2" / "MODEL_CARD.md").read_text()
    assert "## Registry decision" in card and "Promotion gate: 48 held-out utterances" in card
    assert (wd / "registry" / "ser-emotion" / "2" / "gate" / "champion" / "confusion_matrix.png").is_file()


@pytest.mark.slow
def test_a_champion_that_trained_on_gate_utterances_is_caught(runs, sources):
    from ser.pipeline import run

    wd, _ = runs
    # another gate draw: some of the new gate speakers were in the champion's (v2) training data
    s = run(_cfg(sources, WORSE, gate_seed=3), wd)
    assert s.ok, s.to_dict()
    res = s.to_dict()["result"]
    ov = res["gate"]["gate"]["overlap"]
    assert ov["champion_seen"] > 0 and ov["candidate_seen"] == 0
    assert f"the champion v2 was trained on {ov['champion_seen']} of the 48 gate utterances" in res["reason"]
    assert res["gate"]["gate"]["n_unseen"] == 48 - ov["champion_seen"]
    assert res["alias"] == "challenger"
