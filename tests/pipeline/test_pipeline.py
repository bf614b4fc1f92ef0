"""The pipeline: config validation, the cached DAG runner, and end to end on the synthetic corpus (registered
champion, model card, ONNX that predicts, a fully cached second run, resume after kill -9, a worse challenger kept
out, MLflow mirror, ser model list / show / promote / rollback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from ser.errors import ConfigError, SerError
from ser.pipeline.config import load_config, parse_config
from ser.pipeline.runner import Stage, run_pipeline, stage_keys, topological

# ----------------------------------------------------------------------------------------------------------------
# config


def test_default_config_is_the_synthetic_demo():
    cfg = load_config(None)
    assert cfg.data.corpus == "synthetic"
    assert cfg.train.model == "cnn-small"
    assert parse_config({"data": {"corpus": "ravdess", "path": "/x"}}).train.model == "cnn"


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_name_known_recipes(path):
    from ser.pipeline.stages import _kinds, _recipe_dump

    cfg = load_config(path)
    dumps = _recipe_dump(cfg)  # resolves the recipe and, for an ensemble, every member
    assert dumps[0]["name"] == cfg.train.model
    assert "logmel" in _kinds(cfg)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"train": {"threads": 0}}, "train.threads"),
        ({"split": {"method": "random"}}, "split.method"),
        ({"trian": {}}, "trian"),
        ({"data": {"corpus": "ravdess"}}, "data"),
        ({"register": {"max_group_gap": 2}}, "register.max_group_gap"),
        ({"train": {"executor": "spark"}}, "train.executor"),
        ({"train": {"executor": "ray", "ray_address": ""}}, "train.ray_address"),
    ],
)
def test_bad_config_names_the_field(data, field):
    with pytest.raises(ConfigError, match=rf"config: {field}"):
        parse_config(data)


def test_train_executor_changes_where_training_runs_not_the_train_key():
    from ser.pipeline.stages import STAGES, _executor

    local = parse_config({})
    ray = parse_config({"train": {"executor": "ray", "ray_address": "auto", "threads": 1}})
    assert local.train.executor == "local" and ray.train.ray_address == "auto"
    ex = _executor(ray)
    assert ex.is_ray and ex.address == "auto" and ex.cpus_per_task == 1 and ex.task_threads == 1
    assert not _executor(local).is_ray and _executor(local).task_threads is None
    keys = {name: stage_keys(STAGES, c) for name, c in (("local", local), ("ray", ray))}
    assert keys["local"]["train"] == keys["ray"]["train"]  # the same folds either way: a Ray run reads them back
    tuned = {"tune": {"enabled": True, "space": {"train.lr": [1e-3, 1e-2]}}}
    tuned_local = stage_keys(STAGES, parse_config(tuned))
    tuned_ray = stage_keys(STAGES, parse_config({**tuned, "train": {"executor": "ray"}}))
    assert tuned_local["tune"] != tuned_ray["tune"]  # parallel trials sample in another order: another study


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    rel = tmp_path / "rel.yaml"
    rel.write_text("data: {corpus: ravdess, path: corpora/ravdess}\n")
    assert load_config(rel).data.path == str((tmp_path / "corpora" / "ravdess").resolve())


# ----------------------------------------------------------------------------------------------------------------
# runner on toy stages


def _toy(calls: list[str], fail: set[str] | None = None):
    fail = fail or set()

    def make(name):
        def fn(ctx):
            calls.append(name)
            if name in fail:
                raise SerError(f"{name} broke")
            value = sum(ctx.inputs[d]["value"] for d in ctx.inputs) + len(name)
            (ctx.out / "artefact.txt").write_text(str(value))
            return {"value": value, "metric": f"value {value}", "outputs": {"artefact": str(ctx.out / "artefact.txt")}}

        return fn

    return [
        Stage("a", make("a"), (), lambda c: c.data.seed),
        Stage("b", make("b"), ("a",), lambda c: c.features),
        Stage("c", make("c"), ("b",), lambda c: c.train.seed),
        Stage("d", make("d"), ("a", "c"), lambda c: None),
    ]


def test_runner_caches_and_reruns_only_what_a_change_affects(tmp_path):
    calls: list[str] = []
    cfg = parse_config({})
    s1 = run_pipeline(_toy(calls), cfg, tmp_path)
    assert calls == ["a", "b", "c", "d"] and s1.ok
    assert [r.status for r in s1.results] == ["ran"] * 4
    calls.clear()
    s2 = run_pipeline(_toy(calls), cfg, tmp_path)
    assert calls == [] and [r.status for r in s2.results] == ["cached"] * 4
    assert s2.record("d")["value"] == s1.record("d")["value"]
    calls.clear()
    changed = parse_config({"train": {"seed": 7}})  # only stage c reads train.seed
    run_pipeline(_toy(calls), changed, tmp_path)
    assert calls == ["c", "d"]
    assert stage_keys(_toy([]), cfg)["a"] == stage_keys(_toy([]), changed)["a"]
    assert stage_keys(_toy([]), cfg)["d"] != stage_keys(_toy([]), changed)["d"]
    log = [json.loads(line) for line in (tmp_path / "logs" / "pipeline.jsonl").read_text().splitlines()]
    assert {e["event"] for e in log} >= {"run_start", "stage_start", "stage_end", "stage_cached", "run_end"}


def test_runner_failure_stops_and_resumes(tmp_path):
    calls: list[str] = []
    cfg = parse_config({})
    s = run_pipeline(_toy(calls, fail={"c"}), cfg, tmp_path)
    assert not s.ok and calls == ["a", "b", "c"]
    assert s.results[-1].status == "failed" and "c broke" in s.results[-1].error
    calls.clear()
    s = run_pipeline(_toy(calls), cfg, tmp_path)
    assert s.ok and calls == ["c", "d"]  # a and b were kept


def test_runner_only_needs_upstream_and_detects_cycles(tmp_path):
    cfg = parse_config({})
    with pytest.raises(SerError, match="upstream"):
        run_pipeline(_toy([]), cfg, tmp_path, only=["b"])
    calls: list[str] = []
    run_pipeline(_toy(calls), cfg, tmp_path, only=["a"])
    run_pipeline(_toy(calls), cfg, tmp_path, only=["b"])
    assert calls == ["a", "b"]
    with pytest.raises(SerError, match="unknown stage"):
        run_pipeline(_toy([]), cfg, tmp_path, only=["zzz"])
    loop = [Stage("x", lambda c: {}, ("y",)), Stage("y", lambda c: {}, ("x",))]
    with pytest.raises(SerError, match="cycle"):
        topological(loop)


# ----------------------------------------------------------------------------------------------------------------
# end to end on the synthetic corpus

TINY = {
    "data": {"synth_speakers": 8, "synth_per_emotion": 3},
    "split": {"k": 2},
    "evaluate": {"n_boot": 200},
    "register": {"max_group_gap": None, "publish": "memory://published"},
}


def _write_cfg(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    from ser.pipeline import run

    wd = tmp_path_factory.mktemp("pipeline")
    summary = run(parse_config(TINY), wd)
    assert summary.ok, summary.to_dict()
    return wd, summary


@pytest.mark.slow
def test_pipeline_registers_a_champion_with_card_and_working_onnx(first_run, ravdess_dir):
    from ser import registry
    from ser.inference import Predictor

    wd, summary = first_run
    res = summary.to_dict()["result"]
    assert res["version"] == 1 and res["alias"] == "champion"
    folder = registry.resolve(wd, "ser-emotion@champion")
    assert {"model.onnx", "metadata.json", "MODEL_CARD.md", "confusion_matrix.png", "reference.parquet"} <= {
        p.name for p in folder.iterdir()
    }
    from ser.monitor.reference import load_reference

    ref = load_reference(folder)  # the monitoring reference: every corpus clip, with its out-of-fold answer
    assert ref is not None and ref.n == summary.record("export")["reference"]["clips"] > 0
    assert ref.meta["with_prediction"] == ref.n and ref.n_mels == 64
    card = (folder / "MODEL_CARD.md").read_text()
    sections = ["## Intended use", "## Out-of-scope uses", "## Training data", "## Evaluation", "### Per class"]
    sections += ["Per group", "## Known limitations", "## Ethical considerations", "SYNTHETIC", "95 % CI"]
    for section in sections:
        assert section in card, section
    assert card.startswith("---\n") and "version 1" in card
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["export"]["parity_max_abs_diff"] <= 1e-4
    cal = meta["calibration"]  # the temperature fitted on the evaluation's out-of-fold predictions, served
    assert cal == {**summary.record("evaluate")["evaluation"]["calibration"], "fitted_on": cal["fitted_on"]}
    assert cal["method"] == "temperature" and cal["temperature"] > 0 and cal["n_folds"] == 2
    assert cal["after"] == "cross-fitted by fold" and 0 <= cal["ece_after"] <= 1
    assert Predictor(folder, warmup=False).temperature == cal["temperature"] and "Calibration: " in card
    assert f"log-loss {cal['nll_before']:.4f} → {cal['nll_after']:.4f}" in card  # what the temperature minimises
    import fsspec  # register.publish copied the version to a URI (fsspec's memory filesystem here)

    mem = fsspec.filesystem("memory")
    assert mem.cat("/published/ser-emotion/1/model.onnx") == (folder / "model.onnx").read_bytes()
    assert json.loads(mem.cat("/published/ser-emotion/aliases.json")) == {"champion": 1}
    assert meta["evaluation"]["uar"] > 0.25  # 8 classes: chance is 0.125
    # onnxruntime only, on a real clip and on the corpus it was trained on
    code = (
        "import sys, json; from ser.inference import Predictor; p = Predictor(sys.argv[1]);"
        "r = p.predict_file(sys.argv[2]).to_dict(); assert 'torch' not in sys.modules; print(json.dumps(r))"
    )
    clip = next(ravdess_dir.rglob("03-01-05-*-01.*"))
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(clip)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["label"] in meta["labels"] and abs(sum(r["probabilities"].values()) - 1) < 1e-6
    p = Predictor(folder)
    from ser.io import read_parquet

    m = read_parquet(summary.record("split")["outputs"]["manifest"]).head(40)
    acc = np.mean([p.predict_file(path).label == emo for path, emo in zip(m["path"], m["emotion"], strict=True)])
    assert acc > 0.3  # the shipped model was trained on these speakers


@pytest.mark.slow
def test_second_run_is_fully_cached(first_run):
    from ser.pipeline import run

    wd, summary = first_run
    t0 = time.perf_counter()
    again = run(parse_config(TINY), wd)
    assert [r.status for r in again.results] == ["cached"] * len(summary.results)
    assert again.to_dict()["result"] == summary.to_dict()["result"]
    assert time.perf_counter() - t0 < 30


@pytest.mark.slow
def test_mlflow_mirror(first_run):
    from ser.tracking import open_tracker

    wd, summary = first_run
    tracker = open_tracker(wd)
    assert tracker is not None and tracker.aliases("ser-emotion") == {"champion": 1}
    rid = summary.to_dict()["result"]["mlflow_run_id"]
    run = tracker.client.get_run(rid)
    assert run.data.tags["dataset_fingerprint"] == summary.record("split")["dataset_fingerprint"]
    assert "code_version" in run.data.tags and run.data.params["train.model"] == "cnn-small"
    folds = tracker.client.get_metric_history(rid, "fold_uar")
    assert sorted(m.step for m in folds) == [0, 1]
    arts = {a.path for a in tracker.client.list_artifacts(rid)}
    assert {"evaluation", "model"} <= arts


@pytest.mark.slow
def test_worse_challenger_is_not_promoted_then_promote_and_rollback(first_run, run_cli):
    from ser import registry
    from ser.pipeline import run

    wd, _ = first_run
    worse = {**TINY, "train": {"overrides": {"train": {"epochs": 1, "lr": 1e-5}}}}
    s = run(parse_config(worse), wd)
    res = s.to_dict()["result"]
    assert res["version"] == 2 and res["alias"] == "challenger"
    assert "does not beat" in res["reason"]
    assert registry.read_aliases(wd, "ser-emotion") == {"champion": 1, "challenger": 2}
    meta = json.loads((registry.resolve(wd, "challenger") / "metadata.json").read_text())
    assert meta["decision"]["alias"] == "challenger" and "does not beat" in meta["decision"]["reason"]
    # by hand: promote v2, then roll back to v1
    code, out, err = run_cli("model", "list", "--workdir", wd, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["version"], r["aliases"]) for r in rows] == [(1, ["champion"]), (2, ["challenger"])]
    code, _, err = run_cli("model", "promote", "ser-emotion/2", "--workdir", wd)
    assert code == 0, err
    assert registry.read_aliases(wd, "ser-emotion") == {"champion": 2}
    code, _, err = run_cli("model", "rollback", "ser-emotion", "--workdir", wd)
    assert code == 0, err
    assert registry.read_aliases(wd, "ser-emotion")["champion"] == 1
    code, out, _ = run_cli("model", "show", "ser-emotion@champion", "--workdir", wd, "--json")
    assert code == 0 and json.loads(out)["version"] == "1"
    from ser.tracking import open_tracker

    assert open_tracker(wd).aliases("ser-emotion")["champion"] == 1
    code, _, err = run_cli("model", "show", "ser-emotion/9", "--workdir", wd)
    assert code != 0 and "not registered" in err


@pytest.mark.slow
def test_killed_mid_features_resumes_to_identical_metrics(first_run, tmp_path):
    _, summary = first_run
    cfg = _write_cfg(tmp_path / "p.yaml", TINY)
    wd = tmp_path / "wd"
    cmd = [sys.executable, "-m", "ser", "pipeline", "run", "--config", str(cfg), "--workdir", str(wd), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = wd / "logs" / "pipeline.jsonl"
    deadline = time.time() + 120
    started = False
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and '"stage": "features"' in log.read_text():
            started = True
            break
        time.sleep(0.05)
    assert started, "the features stage never started"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stages = wd / "stages"
    assert not list((stages / "features").glob("*/stage.json")), "killed stage must not be marked done"
    for f in (wd / "cache" / "features").rglob("*.npz"):  # every artefact in place is whole (temp files aside)
        with np.load(f) as z:
            assert len(z.files) > 0
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    statuses = {s["stage"]: s["status"] for s in out["stages"]}
    assert statuses["ingest"] == statuses["validate"] == statuses["split"] == "cached"
    assert statuses["features"] == "ran"
    ev_new = json.loads(next((stages / "evaluate").glob("*/stage.json")).read_text())
    ev_ref = summary.record("evaluate")
    assert ev_new["evaluation"]["uar_per_fold"] == ev_ref["evaluation"]["uar_per_fold"]
    assert ev_new["evaluation"]["pooled"] == ev_ref["evaluation"]["pooled"]


# ----------------------------------------------------------------------------------------------------------------
# data sources


def test_single_source_form_is_one_source_and_a_gate_share_changes_split_not_ingest(tmp_path):
    from ser.pipeline.runner import stage_keys
    from ser.pipeline.stages import STAGES, corpus_fingerprint

    cfg = parse_config({})
    (only,) = cfg.data.all_sources()
    assert only.corpus == "synthetic" and only.label == "synthetic" and cfg.data.synthetic
    assert corpus_fingerprint(cfg) is None
    listed = parse_config({"data": {"sources": [{"corpus": "synthetic"}]}})
    assert listed.train.model == "cnn-small" and listed.data.synthetic
    csv = tmp_path / "new.csv"
    csv.write_text("path,label\n")

    def keys(share):
        src = [{"corpus": "synthetic"}, {"name": "new", "corpus": "csv", "path": str(csv), "gate_share": share}]
        return stage_keys(STAGES, parse_config({"data": {"sources": src}}))

    a, b = keys(0.3), keys(0.4)
    assert a["ingest"] == b["ingest"] and a["validate"] == b["validate"] and a["split"] != b["split"]
    assert parse_config({"data": {"sources": [{"corpus": "csv", "path": str(csv)}]}}).train.model == "cnn"
    csv.write_text("path,label\nx.wav,angry\n")  # a changed source file (its size) changes the ingest key
    assert keys(0.3)["ingest"] != a["ingest"]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"sources": []}, "data.sources"),
        ({"corpus": "ravdess", "path": "/x", "sources": [{"corpus": "synthetic"}]}, "either sources or"),
        ({"sources": [{"corpus": "synthetic"}, {"corpus": "synthetic"}]}, "must be unique"),
        ({"sources": [{"corpus": "feedback", "path": "/clips"}]}, "needs log"),
        ({"sources": [{"corpus": "csv"}]}, "needs a path"),
        ({"sources": [{"corpus": "synthetic", "gate_share": 1.0}]}, "gate_share"),
        ({"sources": [{"name": "a b", "corpus": "synthetic"}]}, "name"),
        ({"corpus": "feedback", "path": "/x"}, "needs data.sources"),
    ],
)
def test_bad_sources_name_the_problem(data, why):
    with pytest.raises(ConfigError, match="data") as err:
        parse_config({"data": data})
    assert why in str(err.value)


def test_register_gate_options_are_validated():
    assert parse_config({}).register_.on_missing_group == "allow"
    with pytest.raises(ConfigError, match=r"register\.on_missing_group"):
        parse_config({"register": {"on_missing_group": "maybe"}})
    with pytest.raises(ConfigError, match=r"register\.rule"):
        parse_config({"register": {"rule": "vibes"}})


def test_relative_source_paths_are_relative_to_the_config_file(tmp_path):
    cfg_file = _write_cfg(
        tmp_path / "p.yaml",
        {
            "data": {
                "sources": [{"corpus": "feedback", "path": "clips", "log": "runs/monitor"}, {"corpus": "synthetic"}]
            }
        },
    )
    src = load_config(cfg_file).data.all_sources()[0]
    assert src.path == str(tmp_path / "clips") and src.log == str(tmp_path / "runs" / "monitor")


def test_the_noise_folder_is_relative_to_the_config_file_and_reaches_the_variants(tmp_path):
    from ser.pipeline.stages import _features
    from ser.train.recipes import get_recipe

    cfg = load_config(_write_cfg(tmp_path / "p.yaml", {"train": {"model": "cnn-robust", "noise_dir": "noise"}}))
    assert cfg.train.noise_dir == str(tmp_path / "noise")
    assert load_config(_write_cfg(tmp_path / "q.yaml", {})).train.noise_dir is None  # then $SER_NOISE_DIR
    ctx = SimpleNamespace(workdir=tmp_path / "w", cfg=cfg, progress=False)
    source = _features(ctx).variants(get_recipe("cnn-robust"))
    assert source is not None and source.noise_dir == tmp_path / "noise"
