"""Benchmark helpers that turn runs into recorded results: the GPU sweep's log parsing and its results file."""

from __future__ import annotations

import importlib
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def sweep(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    common = importlib.import_module("_common")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    md = tmp_path / "RESULTS.md"
    real = common.replace_section
    monkeypatch.setattr(common, "replace_section", lambda heading, section: real(heading, section, md))
    module = importlib.import_module("sweep")
    yield module
    sys.modules.pop("sweep", None)


LOG = """\
[1/13 10s] a-s0 fold 3: UAR 0.500 (10.0 s)
[2/13 11s] a-s0 fold 0: UAR 0.600 (12.0 s)
[3/13 11s] b-s0 fold 0: UAR 0.900 (11.0 s)
  warnings.warn('unrelated line')
[4/13 12s] a-s0 fold 1: UAR 0.700 (14.0 s)
[5/13 12s] a-s0 fold 2: UAR 0.400 (10.0 s)
[6/13 13s] a-s0 fold 4: UAR 0.550 (12.0 s)
[7/13 14s] a-s0 fold 5: UAR 0.650 (14.0 s)
[8/13] FAILED: RuntimeError('x')
"""


def test_summary_from_log_keeps_only_complete_variants(sweep, tmp_path):
    log = tmp_path / "run.log"
    log.write_text(LOG)
    rows = sweep.summary_from_log(log)
    assert list(rows) == ["a-s0"]  # b-s0 has 1 of 6 folds
    a = rows["a-s0"]
    assert a["uar_per_fold"] == [0.6, 0.7, 0.4, 0.5, 0.55, 0.65]  # in fold order, not log order
    assert a["uar_mean"] == pytest.approx(0.5667, abs=1e-4) and a["acc_mean"] is None
    assert a["uar_std"] == pytest.approx(statistics.stdev(a["uar_per_fold"]), abs=1e-4)
    assert a["train_seconds_per_fold"] == 12.0 and a["members"] == ["a-s0"]


def test_record_merges_logs_and_summaries_into_json_and_a_section(sweep, tmp_path):
    log = tmp_path / "run.log"
    log.write_text(LOG)
    summary = tmp_path / "summary.json"
    row = {"uar_mean": 0.7, "uar_std": 0.05, "acc_mean": 0.71, "uar_per_fold": [0.7] * 6,
           "train_seconds_per_fold": 30.0, "members": ["c-s0"]}  # fmt: skip
    summary.write_text(json.dumps({"c-s0": row}))
    sweep.record([log, summary], "GPU X", "a note", name="rec", title="Recurrent test")
    doc = json.loads((tmp_path / "rec.json").read_text())
    assert list(doc["variants"]) == ["c-s0", "a-s0"] and doc["device"] == "GPU X"  # ranked by UAR
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## Recurrent test (RAVDESS-8, 6 folds)" in md and "a note" in md
    assert "| c-s0 | 1 | 70.0 ± 5.0 % | 71.0 % |" in md and "| a-s0 | 1 | 56.7 ± 10.8 % | - |" in md
    sweep.record([summary], "GPU Y", "again", name="rec", title="Recurrent test")  # replaces its own section
    md = (tmp_path / "RESULTS.md").read_text()
    assert md.count("## Recurrent test") == 1 and "a-s0" not in md


def test_robustness_conditions_are_seeded_per_clip_and_held_out(robustness):
    import numpy as np

    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(16_000)).astype(np.float32)
    noises = {"factory1": rng.standard_normal(8_000).astype(np.float32)}
    a = robustness.degrade_clip(y, 16_000, "ab" * 32, "noise-10db:factory1", noises)
    np.testing.assert_array_equal(a, robustness.degrade_clip(y, 16_000, "ab" * 32, "noise-10db:factory1", noises))
    assert not np.array_equal(a, robustness.degrade_clip(y, 16_000, "cd" * 32, "noise-10db:factory1", noises))
    seeds = {robustness.condition_seed(sha, c) for sha in ("ab" * 32, "cd" * 32) for c in robustness.CONDITIONS}
    assert len(seeds) == 2 * len(robustness.CONDITIONS)
    for c in robustness.CONDITIONS[1:]:
        robustness.check_test_condition(c)  # every default test condition uses held-out noises only
    with pytest.raises(SystemExit, match="not held out"):
        robustness.check_test_condition("noise-10db:babble")


def test_robustness_scores_gender_gap_and_paired_difference(robustness):
    import numpy as np

    # 8 speakers (4 female, 4 male), 2 classes, 10 clips each; the model is right on females, half right on males
    speakers = np.repeat(np.arange(8), 10).astype(str)
    genders = np.where(np.repeat(np.arange(8), 10) < 4, "female", "male")
    y = np.tile(np.repeat([0, 1], 5), 8)
    pred = np.where(genders == "female", y, np.tile([0, 1], 40))
    s = robustness.score(y, pred, speakers, genders, n_classes=2, n_boot=200)
    assert s["uar_by_gender"] == {"female": 1.0, "male": pytest.approx(0.6)}
    assert s["gender_gap_uar"] == pytest.approx(0.4)
    assert s["uar"] == pytest.approx(0.8) and s["uar_ci"][0] < 0.8 < s["uar_ci"][1]
    same = robustness.paired_difference(y, pred, pred, speakers, 2, n_boot=200)
    assert same == {"uar_diff": 0.0, "ci": [0.0, 0.0]}
    better = robustness.paired_difference(y, pred, y, speakers, 2, n_boot=200)
    assert better["uar_diff"] == pytest.approx(0.2) and 0 < better["ci"][0] <= 0.2 <= better["ci"][1]


def test_robustness_trim_overlap_sees_noise_fill_the_silence(robustness):
    import numpy as np

    clean = np.full((4, 100), -100.0)
    clean[:, 30:70] = -20.0  # speech in frames 30..69, digital silence around it
    noisy = np.maximum(clean, -35.0)  # noise 15 dB under the speech everywhere: within the 40 dB trim
    assert robustness.trim_overlap(clean, clean, 40.0) == (0.4, 1.0)
    assert robustness.trim_overlap(clean, noisy, 40.0) == (1.0, 0.4)
    assert robustness.trim_overlap(clean, noisy, 10.0) == (0.4, 1.0)  # a tighter trim still finds the speech


@pytest.fixture
def closed_loop(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("closed_loop")
    yield module
    sys.modules.pop("closed_loop", None)


def test_closed_loop_links_only_the_chosen_actors_and_labels_them(closed_loop, tmp_path):
    src = tmp_path / "ravdess"
    for actor, emotion in ((1, "05"), (2, "04"), (17, "01")):
        (src / f"Actor_{actor:02d}").mkdir(parents=True)
        (src / f"Actor_{actor:02d}" / f"03-01-{emotion}-01-01-01-{actor:02d}.flac").write_bytes(b"x")
    linked = closed_loop.link_actors(tmp_path / "studio", src, (1, 2))
    assert sorted(p.name for p in linked.iterdir()) == ["Actor_01", "Actor_02"]
    assert all(p.is_symlink() and not p.parent.is_symlink() for p in linked.rglob("*.flac"))
    m = closed_loop.manifest(linked, (1, 2))
    assert m[["emotion", "speaker", "gender"]].values.tolist() == [
        ["angry", "ravdess:1", "male"],
        ["sad", "ravdess:2", "female"],
    ]


def test_closed_loop_section_reports_the_share_won_back(closed_loop):
    def score(uar):
        return {"uar": uar, "uar_ci": [uar - 0.1, uar + 0.1], "gender_gap": 0.05}

    v1 = {"version": 1, "production": score(0.3), "clean": score(0.7)}
    v2 = {"version": 2, "alias": "champion", "outcome": "better", "gate_n": 120, "candidate_gate_uar": 0.5,
          "champion_gate_uar": 0.3, "gate_uar_diff": {"diff": 0.2, "low": 0.1, "high": 0.3},
          "production": score(0.5), "clean": score(0.6)}  # fmt: skip
    protocol = {"recipe": "cnn-small", "epochs": 10, "split": "holdout", "condition": "c", "gate_speakers": ["a"]}
    r = {"cut": True, "date": "d", "machine": "m", "protocol": protocol, "v1": v1, "v2": v2, "lost_uar": 0.4,
         "won_back_uar": 0.2, "won_back_share": 0.5, "promoted": True, "wall_s": {"v1": 10.0}}  # fmt: skip
    md = closed_loop.section(r)
    assert "**(cut run)**" in md and "**50.0 %** of the loss" in md
    assert "| v1 (registry v1) | 30.0 [20.0, 40.0] | 5.0 | 70.0 [60.0, 80.0] | 5.0 |" in md
    assert "won back nothing" in closed_loop.section({**r, "promoted": False})
    assert "no share of the loss computed" in closed_loop.section({**r, "won_back_share": None})


def test_cross_corpus_section_keeps_the_classical_rows_and_flags_cut_runs(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    cc = importlib.import_module("cross_corpus")
    sys.modules.pop("cross_corpus", None)
    row = {"per_class_recall": {"sad": 0.5, "angry": 1.0}, "ci": {"uar": {"low": 0.6, "high": 0.8},
           "accuracy": {"low": 0.5, "high": 0.9}}, "uar": 0.7, "accuracy": 0.7}  # fmt: skip
    classical = {**row, "model": "classical", "train_corpora": ["ravdess"], "test_corpora": ["emodb"],
                 "normalize": "corpus", "n_test": 10, "chance_uar": 0.5}  # fmt: skip
    neural = {**row, "train_corpora": ["ravdess"], "test_corpora": ["emodb"], "n_test": 10, "test_speakers": 3}
    gain = {"uar": {"diff": 0.05, "low": -0.01, "high": 0.1}}
    joint = {**row, "test_corpus": "emodb", "train_corpora": ["ravdess", "emodb"], "folds": [0], "k": 5,
             "n_test": 5, "test_speakers": 2}  # fmt: skip
    rows = [{**neural, "adaptation": "none"}, {**neural, "adaptation": "target", "gain_vs_none": gain}]
    rows.append({**neural, "adaptation": "batchnorm", "gain_vs_none": gain})
    entry = {"model": "cnn", "machine": "m", "date": "d", "seconds": 3.0, "joint": [joint], "cross_corpus": rows}
    both = {"cnn@cut": {**entry, "cut": {"epochs": 1}}, "cnn": {**entry, "cut": None}}
    text = cc.render({"runs": [classical], "machine": "m", "date": "d", "neural": both})
    assert "| classical | ravdess → emodb | standardised per corpus | 10 | 70.0 % (60.0–80.0)" in text
    assert text.count("CUT RUN") == 1 and "--epochs 1" in text and "not findings" in text
    assert text.index("### cnn\n") < text.index("### cnn — CUT RUN")  # full runs first
    assert "+5.0 (-1.0 to +10.0)" in text and "test corpus's own unlabelled" in text
    assert "| emodb | 5 (2) | 70.0 % (60.0–80.0)" in text and "folds 0 of 5" in text
    assert "| ravdess → emodb | AdaBN | 10 (3) |" in text and "Adaptation: AdaBN" in text
    assert "not run for this record" not in text
    alone = cc.render({"neural": {"cnn": {**entry, "cut": None, "joint": []}}})  # --no-joint: said, not hidden
    assert "Joint training: not run for this record (`--no-joint`)." in alone and "pooled" not in alone
    said = {**entry, "cut": None, "command": "benchmarks/cross_corpus.py --model cnn --no-joint", "resumed": True}
    text = cc.render({"neural": {"cnn": said}})  # the command as run, and a resumed run's time said to be partial
    assert "`benchmarks/cross_corpus.py --model cnn --no-joint` (3 s, resumed: an earlier invocation" in text


def test_adabn_benchmark_labels_and_four_class_argmax(monkeypatch, tmp_path):
    """benchmarks/adabn.py's pure parts: EmoDB names → speaker and 4-class label, the arg-max among the four shared
    classes of an 8-class model (not the overall arg-max), and the section from a results document."""
    monkeypatch.syspath_prepend(str(BENCH))
    ab = importlib.import_module("adabn")
    sys.modules.pop("adabn", None)
    (tmp_path / "wav").mkdir()
    for name in ("03a01Wa", "08b02Fc", "16a05Lb", "11a04Tc", "12a01Nb"):
        (tmp_path / "wav" / f"{name}.flac").write_bytes(b"")
    clips = ab.emodb_clips(tmp_path)
    assert [(c["speaker"], c["label"]) for c in clips] == [
        ("03", "angry"), ("08", "happy"), ("11", "sad"), ("12", "neutral"), ("16", None)]  # fmt: skip
    labels = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    logits = np.array([[0.0, 5.0, 1.0, 0.5, 0.2, 9.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0]])
    assert ab.four_class(logits, labels).tolist() == [ab.CLASSES.index("happy"), ab.CLASSES.index("angry")]
    p4 = ab.softmax4(logits, labels)
    assert p4.shape == (2, 4) and np.all(p4.sum(1) < 1)  # the other four classes keep their share
    c = {"uar": 0.5, "low": 0.4, "high": 0.6}
    d = {"diff": 0.05, "low": -0.01, "high": 0.1, "p_not_better": 0.1}
    layer = {"mean_shift_sd": 0.2}
    ctl = {"adapted_on_actors": [5], "test_actors": [1], "uar_before": 0.7, "uar_after": 0.68, "agreement": 0.9,
           "diff": {"diff": -0.02, "low": -0.05, "high": 0.01}, "mean_shift_sd": 0.1}  # fmt: skip
    fold = {"fold": 0, "before": c, "after": c, "transductive": c, "diff_after": d, "diff_transductive": d,
            "agreement_after": 0.7, "adaptation": [{"layers": [layer]}], "source_control": ctl}  # fmt: skip
    res = {"scored_clips": 4, "scored_per_class": {"angry": 1}, "speaker_halves": [["03"], ["08"]],
           "per_fold": [fold], "mean_over_folds": {"before": 0.5, "after": 0.55, "transductive": 0.5},
           "ensemble": {**fold}}  # fmt: skip
    text = ab.render({"date": "d", "machine": "m", "seconds": 1.0, "results": res})
    assert text.startswith(ab.HEADING) and "| fold 0 | 50.0 (40.0–60.0) |" in text and "+5.0 (-1.0 to +10.0)" in text
    assert "| fold 0 | 5 | 1 | 70.0 | 68.0 | -2.0 (-5.0 to +1.0) | 90 % |" in text


def test_trim_vad_measures(monkeypatch):
    """benchmarks/trim_vad.py's pure parts: span masks, the kept share / IoU / recall, the bootstrap CI."""

    monkeypatch.syspath_prepend(str(BENCH))
    tv = importlib.import_module("trim_vad")
    ref = tv.span_mask(10, (2, 6))
    assert ref.tolist() == [False, False, True, True, True, True, False, False, False, False]
    kept, iou, recall = tv.overlap(tv.span_mask(10, (4, 10)), ref)
    assert (kept, iou, recall) == (0.6, 2 / 8, 0.5)
    assert tv.overlap(ref, ref) == (0.4, 1.0, 1.0)
    ci = tv.mean_ci([0.0, 1.0] * 50)
    assert ci["mean"] == 0.5 and 0.35 < ci["low"] < 0.5 < ci["high"] < 0.65
    assert tv.mean_ci([0.3] * 5) == {"mean": 0.3, "low": 0.3, "high": 0.3}
    sys.modules.pop("trim_vad", None)


@pytest.fixture
def ravdess_cv(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("ravdess_cv")
    yield module
    sys.modules.pop("ravdess_cv", None)


def test_ravdess_cv_cut_runs_shorten_a_distilled_recipe_and_its_teacher(ravdess_cv):
    from ser.train.cv import FoldOutput
    from ser.train.distil import teacher_members
    from ser.train.recipes import RECIPES

    full = [RECIPES["cnn-distil"], RECIPES["cnn+crnn+rnn"], RECIPES["crnn"]]
    distil, ens, crnn = ravdess_cv.cut_specs(full, 1)
    assert distil.train["epochs"] == 1 and crnn.train["epochs"] == 1 and ens is full[1]  # members train, not fusion
    assert {m.train["epochs"] for m in teacher_members(distil.distil)[1]} == {1}  # the teacher is cut too
    assert {m.train["epochs"] for m in teacher_members(full[0].distil)[1]} == {40}  # the recipe itself is untouched
    assert distil.distil.alpha == full[0].distil.alpha and distil.train["lr"] == full[0].train["lr"]

    def fold(info):
        return FoldOutput(np.eye(2), np.arange(2), ["a", "b"], info)

    taught = [fold({"seconds": 5.0, "teacher": {"teacher": "cnn+crnn+rnn", "seconds": s}}) for s in (100.0, 200.0)]
    facts = ravdess_cv.distil_facts(taught)
    assert facts == {"distilled_from": "cnn+crnn+rnn", "teacher_seconds_per_fold": 150.0}
    assert ravdess_cv.distil_facts([fold({"seconds": 5.0})]) == {}
    assert ravdess_cv.teacher(facts) == " (distilled from cnn+crnn+rnn)" and ravdess_cv.teacher({}) == ""


def test_cross_corpus_refuses_an_unknown_executor_before_any_work(monkeypatch):
    from ser.errors import ConfigError

    monkeypatch.syspath_prepend(str(BENCH))
    cc = importlib.import_module("cross_corpus")
    sys.modules.pop("cross_corpus", None)
    monkeypatch.setattr(cc, "_load", lambda: pytest.fail("read the results before checking --executor"))
    with pytest.raises(ConfigError, match="--executor must be one of local, ray"):
        cc.main(["--model", "cnn-robust", "--executor", "dask"])


def test_ravdess_cv_refuses_an_unknown_executor_before_any_work(ravdess_cv, monkeypatch):
    from ser.errors import ConfigError

    monkeypatch.setattr(ravdess_cv, "ingest", lambda *a, **k: pytest.fail("ingested before checking --executor"))
    with pytest.raises(ConfigError, match="--executor must be one of local, ray"):
        ravdess_cv.main(["--models", "cnn", "--executor", "dask"])
    with pytest.raises(ConfigError, match="--ray-address"):
        ravdess_cv.main(["--models", "cnn", "--executor", "ray", "--ray-address", " "])


def test_robustness_section_compares_every_recipe_with_the_baseline(robustness, tmp_path, monkeypatch):
    s = {"uar": 0.5, "uar_ci": [0.4, 0.6], "gender_gap_uar": 0.01}
    d = {"uar_diff": 0.1, "ci": [0.02, 0.2]}
    payload = {"machine": "m", "date": "d", "command": "c", "cut": "1 of 6 folds", "folds": [0], "test_actors": "a",
               "scores": {"cnn": {"clean": s}, "r1": {"clean": s}, "r2": {"clean": s}},
               "difference": {"r1": {"of": "r1 - cnn", "clean": d}, "r2": {"of": "r2 - cnn"}}}  # fmt: skip
    written: list[str] = []
    monkeypatch.setattr(robustness, "RESULTS_JSON", tmp_path / "r.json")
    monkeypatch.setattr(robustness, "replace_section", lambda heading, text: written.append(text))
    robustness.write_results(payload)
    header, _, row = written[0].strip().splitlines()[-3:]
    assert "| r1 - cnn [95 % CI] | r2 - cnn [95 % CI] |" in header
    assert row.startswith("| clean | 50.0 [40.0, 60.0] | 1.0 |") and "| +10.0 [+2.0, +20.0] | - | - |" in row


def test_a_robustness_screen_keeps_the_record_the_other_screens_and_their_sections(robustness, tmp_path, monkeypatch):
    s = {"uar": 0.5, "uar_ci": [0.4, 0.6], "gender_gap_uar": 0.01}
    payload = {"machine": "m", "date": "d", "command": "c", "cut": "3 of 6 folds", "folds": [0, 1, 2],
               "test_actors": "a", "scores": {"cnn": {"clean": s}}, "difference": {}}  # fmt: skip
    md = tmp_path / "RESULTS.md"
    monkeypatch.setattr(robustness, "RESULTS_JSON", tmp_path / "r.json")
    monkeypatch.setattr(robustness, "RESULTS_DIR", tmp_path)
    replace_section = importlib.import_module("_common").replace_section  # the real one, on a file of this test
    monkeypatch.setattr(robustness, "replace_section", lambda heading, text: replace_section(heading, text, md))
    robustness.write_results(payload, screen="vad")
    assert (tmp_path / "robustness_screen_vad.json").is_file() and not (tmp_path / "r.json").exists()
    robustness.write_results({**payload, "date": "later"}, screen="va")  # a name that is a prefix of another
    robustness.write_results(payload)
    robustness.write_results({**payload, "date": "again"}, screen="vad")  # a rerun replaces its own section only
    written = {p.name for p in tmp_path.glob("*.json")}
    assert written == {"r.json", "robustness_screen_vad.json", "robustness_screen_va.json"}
    text = md.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [robustness.heading("vad"), robustness.heading("va"), robustness.heading(None)]
    assert "Date: again" in text and "Date: later" in text and "Date: d." in text
    with pytest.raises(SystemExit, match="screen name"):
        robustness.screen_json("../x")


def test_a_robustness_screen_keeps_its_fold_models_apart_from_the_record(robustness):
    record, screen = robustness.runs_dir("full", None), robustness.runs_dir("full", "distil")
    assert record == robustness.RUNS / "full" and screen == robustness.RUNS / "screen-distil" / "full"
    assert not screen.is_relative_to(record) and robustness.runs_dir("epochs3", "distil").parent == screen.parent
    with pytest.raises(SystemExit, match="screen name"):
        robustness.runs_dir("full", "../full")


def test_a_results_file_leads_to_the_fold_folders_of_its_own_run(robustness, tmp_path):
    runs, res = robustness.RUNS, tmp_path
    assert robustness.fold_root({"tag": "full", "screen": "distil"}, res / "x.json") == runs / "screen-distil" / "full"
    assert robustness.fold_root({"tag": "epochs3", "screen": None}, res / "robustness.json") == runs / "epochs3"
    # written before the tag and screen were recorded: the record's full run, or the screen its file name names
    assert robustness.fold_root({}, res / "robustness.json") == runs / "full"
    assert robustness.fold_root({}, res / "robustness_screen_vad.json") == runs / "screen-vad" / "full"


def test_ravdess_cv_screens_keep_their_folds_for_the_full_run_and_cut_runs_apart(ravdess_cv):
    assert ravdess_cv.runs_dir(None) == ravdess_cv.RUNS  # --folds 2,3 at the recipes' epochs: resumed by the full run
    assert ravdess_cv.runs_dir(1) == ravdess_cv.RUNS / "cut"  # --epochs 1: other models, never mixed in


def test_replace_section_rewrites_a_section_where_it_stands_and_appends_a_new_one(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    common = importlib.import_module("_common")
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\n## A\n\nold a\n\n## B\n\nold b\n\n## A again\n\nother\n\n## C\n\nc\n\n## A\n\nstale\n")
    common.replace_section("## B", "## B\n\nnew b\n", md)
    # "## A" is a prefix of another script's "## A again", which stays; a later copy of "## A" itself goes
    common.replace_section("## A", "## A\n\nnew a\n", md)
    assert md.read_text() == "# Results\n\n## A\n\nnew a\n\n## B\n\nnew b\n\n## A again\n\nother\n\n## C\n\nc\n"
    common.replace_section("## C", "## C: reworded\n\nc2\n", md)  # the one section the prefix names
    assert "## C: reworded\n\nc2\n" in md.read_text() and "\n## C\n" not in md.read_text()
    common.replace_section("## A", "## A: reworded\n\na2\n", md)  # two sections start with "## A": neither goes
    assert md.read_text().count("## A") == 3 and md.read_text().endswith("## A: reworded\n\na2\n")
    common.replace_section("## D", "## D\n\nd\n", md)
    assert md.read_text().endswith("## D\n\nd\n")
    before = md.read_text()
    common.replace_section("## B", "## B\n\nnew b\n", md)
    assert md.read_text() == before
