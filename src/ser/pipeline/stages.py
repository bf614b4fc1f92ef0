"""The pipeline's stage functions: each reads its inputs' records, calls the library, writes into its own folder.

ingest → validate → split → features → tune → train → evaluate → export → card → register

The same functions run in the local runner (:func:`ser.pipeline.run`) and as Airflow tasks (``dags/``). The card
is written before registration so that a registered folder is complete the moment it appears (its version number
is filled in when it is registered).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ser.errors import SerError
from ser.io import read_parquet, write_json, write_parquet
from ser.pipeline.config import PipelineConfig, config_hash
from ser.pipeline.runner import Stage, StageContext

# ----------------------------------------------------------------------------------------------------------------
# helpers


def corpus_fingerprint(cfg: PipelineConfig) -> str | None:
    """A cheap fingerprint of the corpus files (relative path, size, mtime), so new or changed audio re-runs
    ingest. ``None`` for the synthetic corpus (made from the config alone)."""
    if cfg.data.corpus == "synthetic" or not cfg.data.path:
        return None
    from ser.uri import is_remote

    if is_remote(cfg.data.path):
        return cfg.data.path  # remote listings are fetched by the stage; the URI names the snapshot
    root = Path(cfg.data.path)
    if not root.exists():
        raise SerError(f"data.path not found: {root}")
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root) if p != root else p.name}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """Hash of the rows a model is trained and evaluated on (utterance, content hash, label, speaker)."""
    cols = [c for c in ("utt_id", "sha256", "emotion", "speaker") if c in manifest.columns]
    rows = manifest[cols].astype(str).sort_values(cols).to_csv(index=False)
    return hashlib.sha256(rows.encode()).hexdigest()[:16]


def recipe(cfg: PipelineConfig, extra: dict[str, Any] | None = None):
    from ser.train.recipes import get_recipe

    overrides = dict(cfg.train.overrides)
    for key, value in (extra or {}).items():
        overrides[key] = {**overrides.get(key, {}), **value} if isinstance(value, dict) else value
    return get_recipe(cfg.train.model, overrides)


def _classes(manifest: pd.DataFrame, profile: str) -> list[str]:
    from ser.data.labels import get_profile

    present = set(manifest["emotion"].astype(str))
    return [c for c in get_profile(profile).classes if c in present]


def _feature_config(cfg: PipelineConfig):
    from ser.features import make_config

    return make_config(cfg.features)


def _cache_dir(ctx: StageContext) -> Path:
    return ctx.workdir / "cache" / "features"


def _load_features(ctx: StageContext, manifest: pd.DataFrame, kinds: tuple[str, ...]):
    from ser.train.cv import load_frame_features

    return load_frame_features(
        manifest, kinds, feature_cfg=_feature_config(ctx.cfg), cache_dir=_cache_dir(ctx), workers=ctx.cfg.workers
    )


def _members(spec) -> list:
    """The model specs that train for ``spec``: itself, or an ensemble's members."""
    from ser.train.recipes import members

    return members([spec])


def _recipe_dump(cfg: PipelineConfig) -> list[dict[str, Any]]:
    spec = recipe(cfg)
    return [spec.model_dump(mode="json")] + [m.model_dump(mode="json") for m in _members(spec) if m is not spec]


def _kinds(cfg: PipelineConfig) -> tuple[str, ...]:
    return tuple(sorted({"logmel"} | {s.features for s in _members(recipe(cfg))}))


# ----------------------------------------------------------------------------------------------------------------
# stages


def ingest_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.data.ingest import ingest, summarize, write_outputs

    d = ctx.cfg.data
    if d.corpus == "synthetic":
        from ser.data.synth import synthesize

        root = synthesize(ctx.out / "corpus", n_speakers=d.synth_speakers, per_emotion=d.synth_per_emotion, seed=d.seed)
        corpus = "ravdess"
    else:
        from ser.uri import local_copy

        root = local_copy(d.path, ctx.workdir / "cache" / "remote")
        corpus = d.corpus
    res = ingest(corpus, root, demographics=d.demographics, workers=ctx.cfg.workers, progress=ctx.progress)
    write_outputs(res, ctx.out)
    s = summarize(res)
    return {
        "outputs": {"manifest": str(ctx.out / "manifest.parquet"), "quarantine": str(ctx.out / "quarantine.parquet")},
        "summary": {k: s[k] for k in ("files", "speakers", "total_hours") if k in s} | {"synthetic": res.synthetic},
        "metric": f"{s['files']} files, {s['speakers']} speakers, {len(res.quarantine)} quarantined",
    }


def validate_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.data.validate import load_config, validate, write_outputs

    vcfg = load_config(None, **ctx.cfg.validate_.thresholds)
    res = validate(read_parquet(ctx.path("ingest", "manifest")), vcfg, workers=ctx.cfg.workers, progress=ctx.progress)
    write_outputs(res, ctx.out)
    if res.failures and ctx.cfg.validate_.fail_on_thresholds:
        raise SerError(f"validation thresholds crossed: {'; '.join(res.failures)} (see {ctx.out / 'report.json'})")
    return {
        "outputs": {
            "manifest": str(ctx.out / "manifest.parquet"),
            "quarantine": str(ctx.out / "quarantine.parquet"),
            "report": str(ctx.out / "report.json"),
        },
        "failures": list(res.failures),
        "metric": f"{len(res.manifest)} passed, {len(res.quarantine)} quarantined",
    }


def split_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.data.labels import apply_profile
    from ser.data.split import check_leakage, make_splits

    c = ctx.cfg.split
    manifest, dropped = apply_profile(read_parquet(ctx.path("validate", "manifest")), ctx.cfg.data.profile)
    classes = _classes(manifest, ctx.cfg.data.profile)
    if len(classes) < 2:
        raise SerError(f"profile {ctx.cfg.data.profile!r} leaves fewer than two classes")
    splits = make_splits(manifest, c.method, k=c.k, seed=c.seed, test_fraction=c.test_fraction)
    check_leakage(splits)
    write_parquet(ctx.out / "manifest.parquet", manifest)
    write_parquet(ctx.out / "splits.parquet", splits)
    fp = manifest_fingerprint(manifest)
    return {
        "outputs": {"manifest": str(ctx.out / "manifest.parquet"), "splits": str(ctx.out / "splits.parquet")},
        "classes": classes,
        "dropped_labels": dropped,
        "dataset_fingerprint": fp,
        "evaluation_key": f"{fp}-{config_hash(c.model_dump(mode='json'))}",
        "metric": f"{int(splits['fold'].nunique())} folds, {manifest['speaker'].nunique()} speakers, leakage guard ok",
    }


def features_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.features.extract import extract_manifest

    manifest = read_parquet(ctx.path("split", "manifest"))
    res = extract_manifest(
        manifest,
        _feature_config(ctx.cfg),
        _cache_dir(ctx),
        kinds=_kinds(ctx.cfg),
        workers=ctx.cfg.workers,
        progress=ctx.progress,
    )
    failures = pd.DataFrame(res.failures, columns=["utt_id", "path", "reason"]) if res.failures else None
    if failures is not None:
        write_parquet(ctx.out / "quarantine.parquet", failures)
    return {
        "outputs": {"cache": str(_cache_dir(ctx))},
        "kinds": list(res.kinds),
        "kind_hashes": res.kind_hashes,
        "failed": len(res.failures),
        "metric": f"{res.n_utterances} utterances, {sum(res.hits.values())} cached, {len(res.failures)} failed",
    }


def tune_stage(ctx: StageContext) -> dict[str, Any]:
    t = ctx.cfg.tune
    if not t.enabled:
        return {"overrides": {}, "metric": "skipped (tune.enabled is false)"}
    from ser.train.tune import tune, write_outputs

    manifest = read_parquet(ctx.path("split", "manifest"))
    splits = read_parquet(ctx.path("split", "splits"))
    classes = ctx.inputs["split"]["classes"]
    feats = _load_features(ctx, manifest, _kinds(ctx.cfg))
    res = tune(
        manifest,
        splits,
        _members(recipe(ctx.cfg))[0],  # an ensemble tunes its first member; the overrides go to every member
        feats,
        classes,
        fold=t.fold,
        space=t.space,
        n_trials=t.trials,
        sampler=t.sampler,
        pruner=t.pruner,
        storage=ctx.out / "study.db",
        seed=ctx.cfg.train.seed,
        log=lambda line: ctx.log("trial", line=line),
    )
    write_outputs(res, ctx.out)
    return {
        "overrides": res.overrides(),
        "best_value": res.best_value,
        "metric": f"best val UAR {res.best_value:.3f} over {res.n_complete} trials" if res.best_value else "no trial",
    }


def train_stage(ctx: StageContext) -> dict[str, Any]:
    import torch

    from ser.models.factory import save_model
    from ser.train.cv import cross_validate, ensemble_folds, fit_shipped, save_fold
    from ser.train.spec import EnsembleSpec

    torch.set_num_threads(ctx.cfg.train.threads)
    manifest = read_parquet(ctx.path("split", "manifest"))
    splits = read_parquet(ctx.path("split", "splits"))
    classes = ctx.inputs["split"]["classes"]
    spec = recipe(ctx.cfg, ctx.inputs["tune"].get("overrides"))
    feats = _load_features(ctx, manifest, _kinds(ctx.cfg))

    def log(name, k, o):
        ctx.log("fold", fold=k, n_test=len(o.y), seconds=o.info.get("seconds"))

    specs = _members(spec)
    outs = {
        s.name: cross_validate(
            manifest,
            splits,
            s,
            feats,
            classes,
            ctx.out / "cv",
            folds=ctx.cfg.split.folds,
            seed=ctx.cfg.train.seed,
            log=log,
        )
        for s in specs
    }
    if isinstance(spec, EnsembleSpec):  # fused fold predictions, read by the evaluate stage like any model's
        fused = ensemble_folds([outs[m] for m in spec.members], spec.weights)
        folds = ctx.cfg.split.folds or list(range(len(fused)))
        for k, out in zip(folds, fused, strict=True):
            save_fold(ctx.out / "cv", spec.name, k, out)
    model, info = fit_shipped(
        spec, specs, manifest, feats, classes, seed=ctx.cfg.train.seed, out_dir=ctx.out / "final_ckpt"
    )
    save_model(ctx.out / "model.pt", model, {"classes": classes, "recipe": spec.model_dump(mode="json")})
    if info["best_val_uar"] is None:
        metric = f"final model: {info['n_train']} clips, last of {info['epochs_run']} epochs (no validation)"
    else:
        metric = f"final model: best val UAR {info['best_val_uar']:.3f} at epoch {info['best_epoch']}"
    if isinstance(spec, EnsembleSpec):
        metric = f"{len(specs)}-member ensemble; " + metric
    return {
        "outputs": {"cv": str(ctx.out / "cv"), "model": str(ctx.out / "model.pt")},
        "recipe": spec.model_dump(mode="json"),
        "input_spec": specs[0].model_dump(mode="json"),
        "final": info,
        "metric": metric,
    }


def evaluate_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.data.split import n_folds
    from ser.evaluate.cv_report import cv_evaluation, write_cv_report
    from ser.train.cv import load_fold

    manifest = read_parquet(ctx.path("split", "manifest"))
    classes = ctx.inputs["split"]["classes"]
    name = ctx.inputs["train"]["recipe"]["name"]
    cv_dir = ctx.path("train", "cv")
    folds = ctx.cfg.split.folds or list(range(n_folds(read_parquet(ctx.path("split", "splits")))))
    outputs = [load_fold(cv_dir, name, k) for k in folds]
    if any(o is None for o in outputs):
        raise SerError(f"evaluate: fold predictions missing under {cv_dir}")
    ev = cv_evaluation(outputs, manifest, classes, n_boot=ctx.cfg.evaluate.n_boot, seed=ctx.cfg.train.seed)
    write_cv_report(
        ctx.out / "report",
        ev,
        title=f"{name}: speaker-independent cross-validation",
        meta={"model": name, "folds": len(outputs), "classes": classes},
    )
    write_json(ctx.out / "evaluation.json", ev)
    cv = ev["cv"]["metrics"]
    attrs = ev["fairness"]["attributes"]
    group = ctx.cfg.register_.group
    gap = (attrs.get(group) or {}).get("gap", {}).get("uar")
    block = {
        "key": ctx.inputs["split"]["evaluation_key"],
        "dataset_fingerprint": ctx.inputs["split"]["dataset_fingerprint"],
        "protocol": f"speaker-independent {ctx.cfg.split.method} cross-validation, {len(outputs)} folds",
        "uar": cv["uar"]["mean"],
        "uar_std": cv["uar"]["std"],
        "accuracy": cv["accuracy"]["mean"],
        "uar_per_fold": cv["uar"]["values"],
        "pooled": ev["result"]["metrics"],
        "ci": ev["result"]["ci"],
        "group": group,
        "max_group_gap": gap,
        "group_gaps": {a: v["gap"]["uar"] for a, v in attrs.items()},
    }
    return {
        "outputs": {
            "report": str(ctx.out / "report" / "report.md"),
            "report_dir": str(ctx.out / "report"),
            "evaluation": str(ctx.out / "evaluation.json"),
        },
        "evaluation": block,
        "metric": f"UAR {100 * block['uar']:.1f} % (mean of {len(outputs)} folds), acc {100 * block['accuracy']:.1f} %",
    }


def export_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.export import write_model_folder
    from ser.inference import frame_input
    from ser.models.factory import load_model
    from ser.train.spec import ModelSpec

    model, extra = load_model(ctx.path("train", "model"))
    rec = ctx.inputs["train"]
    final = rec["final"]
    inp = final.get("input")  # the model's input: frame kind(s) and trimming
    if inp is None:  # a train record from before ensembles over several feature kinds
        first = ModelSpec.model_validate(rec["input_spec"])
        inp = {"kind": first.features, "trim_db": first.trim_db}
    manifest = read_parquet(ctx.path("split", "manifest"))
    sample = manifest.sample(n=min(8, len(manifest)), random_state=0)
    feats = _load_features(ctx, sample, _kinds(ctx.cfg))
    parity_inputs = [frame_input(feats[u], inp["kind"], inp["trim_db"]) for u in sample["utt_id"] if u in feats]
    split = ctx.inputs["split"]
    training = _training_facts(manifest, ctx.cfg, final)
    out = write_model_folder(
        ctx.out / "model",
        model,
        labels=list(extra["classes"]),
        feature_config=_feature_config(ctx.cfg),
        kind=inp["kind"],
        trim_db=inp["trim_db"],
        eval_mode=final.get("eval_mode", "full"),
        window=final.get("eval_window"),
        hop=final.get("eval_hop"),
        parity_inputs=parity_inputs,
        extra={
            "name": ctx.cfg.name,
            "recipe": rec["recipe"],
            "training": training,
            "evaluation": ctx.inputs["evaluate"]["evaluation"],
            "dataset_fingerprint": split["dataset_fingerprint"],
            "label_profile": ctx.cfg.data.profile,
        },
    )
    from ser.inference import read_metadata

    diff = read_metadata(out)["export"]["parity_max_abs_diff"]
    return {
        "outputs": {"model_dir": str(out)},
        "parity_max_abs_diff": diff,
        "metric": f"ONNX parity {diff:.1e} on {len(parity_inputs)} corpus clips",
    }


def _training_facts(manifest: pd.DataFrame, cfg: PipelineConfig, final: dict[str, Any]) -> dict[str, Any]:
    by_gender = manifest.drop_duplicates("speaker")["gender"].astype(str).value_counts().to_dict()
    hours = float(manifest["duration_s"].sum() / 3600) if "duration_s" in manifest.columns else None
    return {
        "corpora": sorted(manifest["corpus"].astype(str).unique().tolist()) if "corpus" in manifest.columns else [],
        "synthetic": cfg.data.corpus == "synthetic",
        "utterances": len(manifest),
        "speakers": int(manifest["speaker"].nunique()),
        "speakers_by_gender": by_gender,
        "hours": None if hours is None else round(hours, 4),
        "classes": manifest["emotion"].astype(str).value_counts().to_dict(),
        "final_model": {k: final[k] for k in ("best_epoch", "best_val_uar", "epochs_run", "n_train", "n_val")},
    }


def card_stage(ctx: StageContext) -> dict[str, Any]:
    import shutil

    from ser.card import render_card
    from ser.inference import CARD_FILE, read_metadata

    src = ctx.path("export", "model_dir")
    dest = ctx.out / "model"
    tmp = ctx.out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    meta = read_metadata(tmp)
    report_dir = ctx.path("evaluate", "report_dir")
    for png in ("confusion_matrix.png", "reliability.png"):
        if (report_dir / png).is_file():
            shutil.copy2(report_dir / png, tmp / png)
    evaluation = ctx.inputs["evaluate"]["evaluation"]
    full = _read_json(ctx.path("evaluate", "evaluation"))
    (tmp / CARD_FILE).write_text(render_card(meta, evaluation, full, ctx.cfg))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return {"outputs": {"model_dir": str(dest), "card": str(dest / CARD_FILE)}, "metric": "MODEL_CARD.md written"}


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(Path(path).read_text())


def register_stage(ctx: StageContext) -> dict[str, Any]:
    from ser import registry
    from ser.export import update_metadata
    from ser.inference import read_metadata

    cfg = ctx.cfg
    model_dir = ctx.path("card", "model_dir")
    evaluation = ctx.inputs["evaluate"]["evaluation"]
    tracker = None
    if cfg.tracking.enabled:
        from ser.tracking import Tracker

        tracker = Tracker(cfg.tracking.uri or default_tracking_uri(ctx.workdir), cfg.tracking.experiment)
    run_id = None
    version = None
    if tracker is not None:
        run_id = tracker.log_pipeline_run(cfg, ctx.inputs, evaluation, model_dir)
        version = tracker.create_version(cfg.name, model_dir, run_id)
    dest = registry.add_version(ctx.workdir, model_dir, cfg.name, version)
    version = int(dest.name)
    aliases = registry.read_aliases(ctx.workdir, cfg.name)
    champion = aliases.get("champion")
    champ_eval = (
        read_metadata(registry.model_root(ctx.workdir, cfg.name) / str(champion)).get("evaluation")
        if champion
        else None
    )
    decision = registry.decide(
        evaluation, champ_eval, margin=cfg.register_.margin, max_group_gap=cfg.register_.max_group_gap
    )
    alias = "champion" if decision.promote else "challenger"
    registry.set_alias(ctx.workdir, cfg.name, alias, version, decision.reason)
    update_metadata(dest, decision={"alias": alias, "reason": decision.reason, "previous_champion": champion})
    if tracker is not None:
        tracker.set_alias(cfg.name, alias, version)
        tracker.tag_run(run_id, {"registered_version": str(version), "alias": alias, "decision": decision.reason})
    published = None
    if cfg.register_.publish:
        from ser.uri import publish_file, publish_folder

        base = cfg.register_.publish.rstrip("/")
        published = publish_folder(dest, f"{base}/{cfg.name}/{version}")
        publish_file(registry.model_root(ctx.workdir, cfg.name) / "aliases.json", f"{base}/{cfg.name}/aliases.json")
    result = {
        "name": cfg.name,
        "version": version,
        "alias": alias,
        "reason": decision.reason,
        "uar": evaluation["uar"],
        "model_dir": str(dest),
        "mlflow_run_id": run_id,
        "published": published,
    }
    return {
        "outputs": {"model_dir": str(dest)},
        "result": result,
        "metric": f"v{version} → {alias}: {decision.reason}",
    }


def default_tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


# ----------------------------------------------------------------------------------------------------------------
# the DAG

STAGES: list[Stage] = [
    Stage(
        "ingest", ingest_stage, (), lambda c: {"data": c.data.model_dump(mode="json")}, fingerprint=corpus_fingerprint
    ),
    Stage("validate", validate_stage, ("ingest",), lambda c: c.validate_.model_dump(mode="json")),
    Stage(
        "split",
        split_stage,
        ("validate",),
        lambda c: {"split": c.split.model_dump(mode="json", exclude={"folds"}), "profile": c.data.profile},
    ),
    Stage("features", features_stage, ("split",), lambda c: {"features": c.features, "kinds": _kinds(c)}),
    Stage(
        "tune",
        tune_stage,
        ("split", "features"),
        lambda c: (
            {
                "tune": c.tune.model_dump(mode="json"),
                "train": c.train.model_dump(mode="json", exclude={"threads"}),
                "recipes": _recipe_dump(c),
            }
            if c.tune.enabled
            else None
        ),
    ),
    Stage(
        "train",
        train_stage,
        ("split", "features", "tune"),
        lambda c: {
            "train": c.train.model_dump(mode="json", exclude={"threads"}),
            "folds": c.split.folds,
            "recipes": _recipe_dump(c),  # a recipe changed in code retrains
        },
        version="2",  # 2: ensembles, input_spec, recipe contents in the key
    ),
    Stage(
        "evaluate",
        evaluate_stage,
        ("split", "train"),
        lambda c: {**c.evaluate.model_dump(), "group": c.register_.group},
    ),
    Stage("export", export_stage, ("split", "features", "train", "evaluate"), lambda c: {"name": c.name}),
    Stage("card", card_stage, ("export", "evaluate"), lambda c: None, version="2"),  # 2: per-class table
    Stage(
        "register",
        register_stage,
        ("card", "evaluate"),
        lambda c: {"name": c.name, "register": c.register_.model_dump(), "tracking": c.tracking.model_dump()},
    ),
]
STAGE_NAMES = [s.name for s in STAGES]
