"""benchmarks/calibration.py: which folds it uses (and says so), honest cross-fitted temperatures, the section and
the plot, on small synthetic probability folders laid out as the robustness and cross-validation runs write them."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def cal(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("calibration")
    written: list[str] = []
    monkeypatch.setattr(module, "replace_section", lambda heading, text: written.append((heading, text)))
    module.written = written  # type: ignore[attr-defined]
    yield module
    sys.modules.pop("calibration", None)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _fold(k: int, seed: int, sharpen: float = 1.0, per_actor: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold ``k`` of 4 actors (as ravdess6): logits, labels drawn from softmax(logits) (calibrated at T = 1), the
    probabilities sharpened by ``sharpen`` (over-confident above 1) and RAVDESS utt ids."""
    rng = np.random.default_rng(1000 * k + seed)
    actors = [4 * k + a + 1 for a in range(4)]
    n = 4 * per_actor
    z = rng.normal(0.0, 1.5, (n, 8))
    y = (_softmax(z).cumsum(1) > rng.random((n, 1))).argmax(1)
    ids = np.array(
        [f"ravdess:Actor_{a:02d}/03-01-{e:02d}-01-01-{r:02d}-{a:02d}" for a in actors
         for e, r in zip(np.arange(per_actor) % 8 + 1, np.arange(per_actor) // 8 + 1, strict=True)]
    )  # fmt: skip
    return _softmax(sharpen * z), y, ids


def _save(path: Path, fold) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, proba=fold[0], y=fold[1], utt_ids=fold[2])


def test_speaker_of_reads_the_actor_as_ingest_does(cal, tmp_path):
    assert cal.speaker_of("ravdess:Actor_07/03-01-05-01-02-01-07") == "ravdess:07"
    for bad in (
        "emodb:03a01Fa",
        "03-01-05-01-02-01-07",
        "ravdess:Actor_07/03-01-05",
        "ravdess:Actor_08/03-01-05-01-02-01-07",
    ):
        with pytest.raises(ValueError):
            cal.speaker_of(bad)
    from ser.data.ingest import ingest
    from ser.data.synth import synthesize

    manifest = ingest("ravdess", synthesize(tmp_path / "corpus", n_speakers=3, per_emotion=1, seed=0)).manifest
    assert len(manifest) > 0
    assert [cal.speaker_of(u) for u in manifest["utt_id"]] == list(manifest["speaker"])


def test_fold_temperatures_never_see_the_fold_they_scale(cal):
    clean = {0: _fold(0, 0, sharpen=4.0), 1: _fold(1, 0), 2: _fold(2, 0), 3: _fold(3, 0)}
    temps, mode = cal.fold_temperatures(clean, [0, 1, 2, 3])
    assert mode == "cross-fitted by fold"
    assert temps[0] == pytest.approx(1.0, abs=0.2)  # fitted on the calibrated folds only
    assert all(temps[k] > temps[0] + 0.3 for k in (1, 2, 3))  # each of these saw the over-confident fold 0
    one, mode = cal.fold_temperatures({0: clean[0]}, [0])
    assert mode == "in-sample" and one[0] == pytest.approx(4.0, rel=0.2)


def test_main_uses_what_exists_and_says_so(cal, tmp_path, monkeypatch):
    rob, cv = tmp_path / "robustness", tmp_path / "cv"
    conditions = ["clean", "telephone", "noise-10db:factory1"]
    for k in range(3):  # recipe a: folds 0-2 clean and telephone; fold 2 lacks the noise run; fold 1 lacks nothing
        clean = _fold(k, 0, sharpen=2.0)
        _save(rob / "a" / f"fold_{k}" / "clean.npz", clean)
        tel = _fold(k, 1, sharpen=6.0)  # far more over-confident on the telephone than clean
        _save(rob / "a" / f"fold_{k}" / "telephone.npz", (tel[0], clean[1], clean[2]))
        if k < 2:
            _save(rob / "a" / f"fold_{k}" / "noise-10db:factory1.npz", (_fold(k, 2, 3.0)[0], clean[1], clean[2]))
    for k in range(5):  # the same training's cross-validation: folds 0-2 agree, 3-4 join the calibration set
        _save(cv / "a" / f"fold_{k}.npz", _fold(k, 0, sharpen=2.0))
    _save(rob / "b" / "fold_0" / "clean.npz", _fold(0, 5))
    _save(rob / "b" / "fold_0" / "telephone.npz", _fold(0, 5))
    (rob / "b" / "fold_0" / "noise-10db:factory1.npz").write_bytes(b"PK\x03\x04 half-written")  # being written
    _save(cv / "b" / "fold_1.npz", _fold(1, 9))
    _save(cv / "b" / "fold_0.npz", _fold(0, 9))  # another training: not adopted
    out = tmp_path / "res" / "calibration.json"
    argv = ["--robustness-root", str(rob), "--cv-root", f"a={cv / 'a'}", "--cv-root", f"b={cv / 'b'}",
            "--recipes", "a,b,none", "--conditions", ",".join(conditions), "--thresholds", "0,0.5,0.9",
            "--abstain-conditions", "clean,telephone", "--n-boot", "200", "--out", str(out)]  # fmt: skip
    assert cal.main(argv) == 0
    doc = json.loads(out.read_text())
    a, b = doc["recipes"]["a"], doc["recipes"]["b"]
    assert a["clean_folds"] == [0, 1, 2, 3, 4] and a["condition_folds"] == [0, 1]
    assert a["clean_sources"] == {"0": "robustness", "1": "robustness", "2": "robustness", "3": "cv", "4": "cv"}
    assert a["clean"]["after"] == "cross-fitted by fold" and a["clean"]["n"] == 5 * 240
    assert a["clean"]["temperature"] == pytest.approx(2.0, rel=0.2)
    assert a["clean"]["ece"]["after"] < a["clean"]["ece"]["before"]
    tel = a["conditions"]["telephone"]
    assert tel["folds"] == [0, 1] and tel["n_clusters"] == 8
    # the clean-fitted T fixes part of the telephone's over-confidence, not all: its own T would be about 6
    assert tel["ece"]["after"] < tel["ece"]["before"] and tel["own_temperature_in_sample"] > 4.0
    assert tel["ece_after_vs_clean"]["diff"] > 0.05 and tel["ece_after_vs_clean"]["diff_ci"][0] > 0
    assert list(a["conditions"]) == ["clean", "telephone", "noise-10db:factory1"]  # clean on the condition folds
    assert b["clean_folds"] == [0] and b["condition_folds"] == [] and b["clean"]["after"] == "in-sample"
    assert any("differ from the robustness run's" in n for n in doc["notes"])
    assert doc["recipes"]["none"] == {"skipped": "no clean fold found"}
    assert "a: 5 of 6 clean folds, 2 with every condition" in doc["cut"]
    curve = a["abstention"]["telephone"]["curve"]
    assert [c["threshold"] for c in curve] == [0.0, 0.5, 0.9] and curve[0]["coverage"] == 1.0
    assert curve[0]["coverage"] >= curve[1]["coverage"] >= curve[2]["coverage"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    (heading, text), = cal.written  # fmt: skip
    assert heading == cal.heading(None) and text.startswith(heading + "\n") and "**Cut**" in text
    assert "| b | clean (calibration set) | 0 in-sample | 240 |" in text
    assert "| none | - | - | - | - | no clean fold found |" in text
    assert "| a | telephone | 0,1 | 480 |" in text and "| a | telephone | 100 % / " in text


def test_the_reliability_panels_are_the_first_recipe_clean_and_noisy_and_the_last_on_the_telephone(cal):
    def run(*conditions):
        return {"clean": {k: _fold(k, 0) for k in (0, 1)},
                "conditions": {c: {k: _fold(k, 1) for k in (0, 1)} for c in conditions}}  # fmt: skip

    data = {"base": run("noise-10db:factory1", "telephone"), "mid": run("telephone"),
            "robust": run("telephone"), "none": {"clean": {}, "conditions": {}}}  # fmt: skip
    titles = [p[0].split(" (")[0] for p in cal.plot_inputs(data)]
    assert titles == ["base, clean", "base, noise-10db:factory1", "robust, telephone"]  # robust lacks the noise
    assert [p[0].split(" (")[0] for p in cal.plot_inputs({"only": run("telephone")})] == ["only, clean"]
    assert cal.plot_inputs({"none": {"clean": {}, "conditions": {}}}) == []


def test_a_screen_reads_its_own_run_and_folds_and_writes_its_own_file_and_section(cal, tmp_path, monkeypatch):
    robustness = sys.modules["robustness"]  # imported by calibration: where the screens' runs and results live
    monkeypatch.setattr(robustness, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(robustness, "RESULTS_DIR", tmp_path / "res")
    monkeypatch.setattr(cal, "RESULTS_DIR", tmp_path / "res")
    with pytest.raises(SystemExit, match=r"robustness\.py --screen distil first"):
        cal.main(["--screen", "distil"])
    (tmp_path / "res").mkdir()
    run = {"screen": "distil", "tag": "full", "scores": {"a": {}, "b": {}}}
    (tmp_path / "res" / "robustness_screen_distil.json").write_text(json.dumps(run))
    for k in range(2):  # the screen's folds (b's clean fold 0 only); the record's (ROBUSTNESS_ROOT) are not read
        _save(tmp_path / "runs" / "screen-distil" / "full" / "a" / f"fold_{k}" / "clean.npz", _fold(k, 0, 2.0))
    _save(tmp_path / "runs" / "screen-distil" / "full" / "b" / "fold_0" / "clean.npz", _fold(0, 3))
    _save(tmp_path / "runs" / "full" / "cnn" / "fold_0" / "clean.npz", _fold(0, 4))
    argv = ["--screen", "distil", "--conditions", "clean", "--abstain-conditions", "clean", "--n-boot", "100"]
    assert cal.main(argv) == 0
    doc = json.loads((tmp_path / "res" / "calibration_screen_distil.json").read_text())
    assert list(doc["recipes"]) == ["a", "b"]  # the screen's recipes, not the record's
    assert doc["recipes"]["a"]["clean_folds"] == [0, 1] and doc["recipes"]["b"]["clean_folds"] == [0]
    assert doc["inputs"]["robustness_root"] == str(tmp_path / "runs" / "screen-distil" / "full")
    assert (tmp_path / "res" / "calibration_screen_distil.png").is_file()
    (heading, text), = cal.written  # fmt: skip
    assert heading == cal.heading("distil") != cal.heading(None) and text.startswith(heading)
    assert not cal.heading(None).startswith(heading) and not heading.startswith(cal.heading(None))
    with pytest.raises(SystemExit, match="screen name"):
        cal.main(["--screen", "../x"])
    with pytest.raises(SystemExit, match="RECIPE=DIR"):
        cal.main(["--cv-root", "cnn"])
