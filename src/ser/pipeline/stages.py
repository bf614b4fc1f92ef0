"""The pipeline's stage functions: each reads its inputs' records, calls a job (:mod:`ser.jobs`), writes its record.

ingest → validate → split → features → tune → train → evaluate → export → card → register

The same functions run in the local runner (:func:`ser.pipeline.run`) and as Airflow tasks (``dags/``). The card
is written before registration so that a registered folder is complete the moment it appears (its version number
is filled in when it is registered).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ser.errors import SerError
from ser.executor import Executor
from ser.io import read_parquet, write_json, write_parquet
from ser.jobs.data import IngestJob, SplitJob, ValidateJob
from ser.jobs.evaluate import CVReportJob, load_folds
from ser.jobs.train import CrossValidateJob, FeatureSource, ShipJob, feature_kinds, member_specs
from ser.pipeline.config import PipelineConfig, SourceConfig, config_hash
from ser.pipeline.runner import Stage, StageContext

if TYPE_CHECKING:
    from ser.features import FeatureConfig
    from ser.train.spec import EnsembleSpec, ModelSpec

# ----------------------------------------------------------------------------------------------------------------
# helpers


def source_fingerprint(source: SourceConfig) -> str | None:
    """A cheap fingerprint of one source's files (relative path, size, mtime), so new or changed audio re-runs
    ingest; a feedback source also lists its log's files (new feedback re-runs it). ``None`` for the synthetic
    corpus (made from the config alone)."""
    if source.corpus == "synthetic" or not source.path:
        return None
    from ser.uri import is_remote

    if is_remote(source.path):
        return source.path  # remote listings are fetched by the stage; the URI names the snapshot
    roots = [Path(source.path)] + ([Path(source.log)] if source.corpus == "feedback" and source.log else [])
    h = hashlib.sha256()
    for root in roots:
        if not root.exists():
            raise SerError(f"data path of source {source.label!r} not found: {root}")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            st = p.stat()
            h.update(f"{p.relative_to(root) if p != root else p.name}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def corpus_fingerprint(cfg: PipelineConfig) -> str | dict[str, str | None] | None:
    """The ingest stage's run-time key material: the fingerprint of the one source (as it has always been), or
    ``{source: fingerprint}`` of several (:func:`source_fingerprint`)."""
    sources = cfg.data.all_sources()
    if cfg.data.sources is None:
        return source_fingerprint(sources[0])
    return {s.label: source_fingerprint(s) for s in sources}


def recipe(cfg: PipelineConfig, extra: dict[str, Any] | None = None) -> ModelSpec | EnsembleSpec:
    from ser.train.recipes import get_recipe

    assert cfg.train.model is not None  # PipelineConfig fills in the default recipe
    overrides = dict(cfg.train.overrides)
    for key, value in (extra or {}).items():
        overrides[key] = {**overrides.get(key, {}), **value} if isinstance(value, dict) else value
    return get_recipe(cfg.train.model, overrides)


def _feature_config(cfg: PipelineConfig) -> FeatureConfig:
    from ser.features import make_config

    return make_config(cfg.features)


def _features(ctx: StageContext) -> FeatureSource:
    """The feature cache every stage shares, under the workdir."""
    return FeatureSource(
        ctx.workdir / "cache" / "features",
        _feature_config(ctx.cfg),
        ctx.cfg.workers,
        progress=ctx.progress,
        executor=_executor(ctx.cfg),
        noise_dir=None if ctx.cfg.train.noise_dir is None else Path(ctx.cfg.train.noise_dir),
    )


def _executor(cfg: PipelineConfig) -> Executor:
    """Where training, tuning and feature tasks run (``train.executor``); each task reserves ``train.threads``."""
    return Executor(cfg.train.executor, cfg.train.ray_address, cpus_per_task=cfg.train.threads)


RUN_ONLY = {"threads", "executor", "ray_address"}
"""``train`` fields that change where and how fast training runs, not its results: not in the stage keys."""


def _recipe_dump(cfg: PipelineConfig) -> list[dict[str, Any]]:
    from ser.train.distil import teacher_members

    spec = recipe(cfg)
    specs = member_specs(spec)
    teachers = [t for m in specs if m.distil is not None for t in teacher_members(m.distil)[1]]  # a teacher changed
    return [spec.model_dump(mode="json")] + [m.model_dump(mode="json") for m in [*specs, *teachers] if m is not spec]


def _kinds(cfg: PipelineConfig) -> tuple[str, ...]:
    return feature_kinds(recipe(cfg))


# ----------------------------------------------------------------------------------------------------------------
# stages


def _ingest_source(ctx: StageContext, source: SourceConfig, out: Path):
    """One source → its manifest under ``out`` (:class:`~ser.jobs.data.IngestJob`, or
    :class:`~ser.jobs.data.FeedbackIngestJob` for feedback)."""
    from ser.uri import local_copy

    workers = ctx.cfg.workers
    if source.corpus == "feedback":
        from ser.jobs.data import FeedbackIngestJob

        assert source.path is not None and source.log is not None  # SourceConfig requires both for feedback
        audio = local_copy(source.path, ctx.workdir / "cache" / "remote")
        return FeedbackIngestJob(source.log, audio, out, workers=workers, progress=ctx.progress).run()
    if source.corpus == "synthetic":
        from ser.data.synth import synthesize

        root = synthesize(
            out / "corpus", n_speakers=source.synth_speakers, per_emotion=source.synth_per_emotion, seed=source.seed
        )
        corpus = "ravdess"
    else:
        assert source.path is not None  # SourceConfig requires a path for every corpus but the synthetic one
        root = local_copy(source.path, ctx.workdir / "cache" / "remote")
        corpus = source.corpus
    demographics = Path(source.demographics) if source.demographics else None
    return IngestJob(corpus, root, out, demographics=demographics, workers=workers, progress=ctx.progress).run()


def ingest_stage(ctx: StageContext) -> dict[str, Any]:
    """Every source of ``data`` → one manifest with a ``source`` column (ids prefixed ``<source>/`` when there
    are several), and the run's data version: a hash of every source's content fingerprint."""
    from ser.data.ingest import combine_sources
    from ser.data.schema import QUARANTINE_COLUMNS, conform
    from ser.jobs.data import data_version, source_fingerprints

    sources = ctx.cfg.data.all_sources()
    single = ctx.cfg.data.sources is None
    done = {}
    for source in sources:
        done[source.label] = _ingest_source(ctx, source, ctx.out if single else ctx.out / "sources" / source.label)
    manifest = combine_sources({k: r.result.manifest for k, r in done.items()})
    quarantine = conform(pd.concat([r.result.quarantine for r in done.values()], ignore_index=True), QUARANTINE_COLUMNS)
    write_parquet(ctx.out / "manifest.parquet", manifest)
    write_parquet(ctx.out / "quarantine.parquet", quarantine)
    fingerprints = source_fingerprints(manifest)
    per_source = [
        {
            "name": s.label,
            "corpus": s.corpus,
            "path": s.path,
            "utterances": int(done[s.label].summary["files"]),
            "speakers": int(done[s.label].summary["speakers"]),
            "gate_share": s.gate_share,
            "fingerprint": fingerprints.get(s.label),
        }
        for s in sources
    ]
    n_q = len(quarantine)
    return {
        "outputs": {"manifest": str(ctx.out / "manifest.parquet"), "quarantine": str(ctx.out / "quarantine.parquet")},
        "summary": {
            "files": len(manifest),
            "speakers": int(manifest["speaker"].nunique()),
            "total_hours": round(float(manifest["duration_s"].sum()) / 3600, 4),
            "synthetic": all(r.result.synthetic for r in done.values()),
        },
        "sources": per_source,
        "data_version": data_version(fingerprints),
        "metric": f"{len(manifest)} files, {manifest['speaker'].nunique()} speakers, {n_q} quarantined"
        + (f", {len(sources)} sources" if not single else ""),
    }


def validate_stage(ctx: StageContext) -> dict[str, Any]:
    res = ValidateJob(
        read_parquet(ctx.path("ingest", "manifest")),
        ctx.out,
        thresholds=dict(ctx.cfg.validate_.thresholds),
        workers=ctx.cfg.workers,
        progress=ctx.progress,
    ).run()
    if res.failures and ctx.cfg.validate_.fail_on_thresholds:
        raise SerError(f"validation thresholds crossed: {'; '.join(res.failures)} (see {res.report})")
    return {
        "outputs": {"manifest": str(res.manifest), "quarantine": str(res.quarantine), "report": str(res.report)},
        "failures": res.failures,
        "metric": f"{len(res.result.manifest)} passed, {len(res.result.quarantine)} quarantined",
    }


def split_stage(ctx: StageContext) -> dict[str, Any]:
    c = ctx.cfg.split
    res = SplitJob(
        read_parquet(ctx.path("validate", "manifest")),
        ctx.out,
        method=c.method,
        k=c.k,
        seed=c.seed,
        test_fraction=c.test_fraction,
        profile=ctx.cfg.data.profile,
        gate_shares=_gate_shares(ctx.cfg),
        gate_seed=ctx.cfg.register_.gate_seed,
    ).run()
    gate: dict[str, Any] = {}
    if res.gate is not None:
        g = res.gate
        gate = {"utterances": len(g), "speakers": int(g["speaker"].nunique()), "path": str(res.gate_path)}
        gate["by_source"] = {str(k): int(v) for k, v in g["source"].value_counts().items()} if "source" in g else {}
    return {
        "outputs": {
            "manifest": str(res.manifest_path),
            "splits": str(res.splits_path),
            **({"gate": str(res.gate_path)} if res.gate_path else {}),
        },
        "gate": gate or None,
        "classes": res.classes,
        "dropped_labels": res.dropped_labels,
        "dataset_fingerprint": res.fingerprint,
        "evaluation_key": f"{res.fingerprint}-{config_hash(c.model_dump(mode='json'))}",
        "metric": f"{int(res.splits['fold'].nunique())} folds, {res.manifest['speaker'].nunique()} speakers, "
        "leakage guard ok"
        + (f"; gate set {gate['utterances']} utterances, {gate['speakers']} speakers held out" if gate else ""),
    }


def _gate_shares(cfg: PipelineConfig) -> dict[str, float]:
    """``{source: gate_share}`` of the sources that set one (the new sources the gate set is drawn from)."""
    return {s.label: s.gate_share for s in cfg.data.all_sources() if s.gate_share > 0}


def features_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.features.extract import extract_manifest

    src = _features(ctx)
    manifest = read_parquet(ctx.path("split", "manifest"))
    res = extract_manifest(
        manifest,
        src.feature_cfg,
        src.cache_dir,
        kinds=_kinds(ctx.cfg),
        workers=src.workers,
        progress=ctx.progress,
        executor=src.executor,
    )
    failures = pd.DataFrame(res.failures, columns=["utt_id", "path", "reason"]) if res.failures else None
    if failures is not None:
        write_parquet(ctx.out / "quarantine.parquet", failures)
    return {
        "outputs": {"cache": str(src.cache_dir)},
        "kinds": list(res.kinds),
        "kind_hashes": res.kind_hashes,
        "failed": len(res.failures),
        "metric": f"{res.n_utterances} utterances, {sum(res.hits.values())} cached, {len(res.failures)} failed",
    }


def tune_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.jobs.tune import TuneJob, TuneSettings

    t = ctx.cfg.tune
    if not t.enabled:
        return {"overrides": {}, "metric": "skipped (tune.enabled is false)"}
    settings = TuneSettings(
        member_specs(recipe(ctx.cfg))[0],  # an ensemble tunes its first member; the overrides go to every member
        t.space,
        trials=t.trials,
        sampler=t.sampler,
        pruner=t.pruner,
        fold=t.fold,
        storage=ctx.out / "study.db",
        seed=ctx.cfg.train.seed,
    )
    res = TuneJob(
        read_parquet(ctx.path("split", "manifest")),
        read_parquet(ctx.path("split", "splits")),
        ctx.inputs["split"]["classes"],
        ctx.out,
        _features(ctx),
        settings,
        _executor(ctx.cfg),
    ).run(log=lambda line: ctx.log("trial", line=line))
    best = res.result.best_value
    return {
        "overrides": res.result.overrides(),
        "best_value": best,
        "metric": f"best val UAR {best:.3f} over {res.result.n_complete} trials" if best else "no trial",
    }


def train_stage(ctx: StageContext) -> dict[str, Any]:
    import torch

    torch.set_num_threads(ctx.cfg.train.threads)
    manifest = read_parquet(ctx.path("split", "manifest"))
    classes = ctx.inputs["split"]["classes"]
    spec = recipe(ctx.cfg, ctx.inputs["tune"].get("overrides"))

    def log(name, k, o):
        ctx.log("fold", fold=k, n_test=len(o.y), seconds=o.info.get("seconds"))

    cv = CrossValidateJob(
        manifest,
        read_parquet(ctx.path("split", "splits")),
        spec,
        classes,
        ctx.out / "cv",
        _features(ctx),
        folds=ctx.cfg.split.folds,
        seed=ctx.cfg.train.seed,
        log=log,
        executor=_executor(ctx.cfg),
    ).run()
    info = ShipJob(
        spec,
        manifest,
        cv.feats,
        classes,
        ctx.out / "model.pt",
        ctx.out / "final_ckpt",
        seed=ctx.cfg.train.seed,
        features=cv.features,
        executor=_executor(ctx.cfg),
    ).run()
    metric = info.pop("metric")
    return {
        "outputs": {"cv": str(ctx.out / "cv"), "model": str(ctx.out / "model.pt")},
        "recipe": spec.model_dump(mode="json"),
        "input_spec": member_specs(spec)[0].model_dump(mode="json"),
        "final": info,
        "metric": metric,
    }


def evaluate_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.data.split import n_folds

    manifest = read_parquet(ctx.path("split", "manifest"))
    name = ctx.inputs["train"]["recipe"]["name"]
    folds = ctx.cfg.split.folds or list(range(n_folds(read_parquet(ctx.path("split", "splits")))))
    outputs = load_folds(ctx.path("train", "cv"), name, folds)
    rep = CVReportJob(
        outputs,
        manifest,
        ctx.inputs["split"]["classes"],
        name,
        ctx.out / "report",
        n_boot=ctx.cfg.evaluate.n_boot,
        seed=ctx.cfg.train.seed,
    ).run()
    ev = rep.evaluation
    write_json(ctx.out / "evaluation.json", ev)
    block = _evaluation_block(ctx, ev, len(outputs))
    return {
        "outputs": {
            "report": str(rep.report),
            "report_dir": str(rep.report_dir),
            "evaluation": str(ctx.out / "evaluation.json"),
        },
        "evaluation": block,
        "metric": f"UAR {100 * block['uar']:.1f} % (mean of {len(outputs)} folds), acc {100 * block['accuracy']:.1f} %",
    }


def _evaluation_block(ctx: StageContext, ev: dict[str, Any], n_folds: int) -> dict[str, Any]:
    """What the registry gate and the card read of an evaluation: the key it is comparable under, UAR, CIs, gaps."""
    cv = ev["cv"]["metrics"]
    attrs = ev["fairness"]["attributes"]
    group = ctx.cfg.register_.group
    return {
        "key": ctx.inputs["split"]["evaluation_key"],
        "dataset_fingerprint": ctx.inputs["split"]["dataset_fingerprint"],
        "protocol": f"speaker-independent {ctx.cfg.split.method} cross-validation, {n_folds} folds",
        "uar": cv["uar"]["mean"],
        "uar_std": cv["uar"]["std"],
        "accuracy": cv["accuracy"]["mean"],
        "uar_per_fold": cv["uar"]["values"],
        "pooled": ev["result"]["metrics"],
        "ci": ev["result"]["ci"],
        "group": group,
        "max_group_gap": (attrs.get(group) or {}).get("gap", {}).get("uar"),
        "group_gaps": {a: v["gap"]["uar"] for a, v in attrs.items()},
        "calibration": ev.get("calibration"),
    }


def export_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.jobs.release import ExportJob

    rec = ctx.inputs["train"]
    manifest = read_parquet(ctx.path("split", "manifest"))
    sample = manifest.sample(n=min(8, len(manifest)), random_state=0)
    feats = _features(ctx).load(sample, _kinds(ctx.cfg))
    out, diff, n = ExportJob(
        ctx.path("train", "model"),
        ctx.out / "model",
        rec["final"],
        _feature_config(ctx.cfg),
        input_spec=rec.get("input_spec"),
        parity_feats=[feats[u] for u in sample["utt_id"] if u in feats],
        extra={
            "name": ctx.cfg.name,
            "recipe": rec["recipe"],
            "training": _training_facts(manifest, ctx.cfg, rec["final"]),
            "evaluation": ctx.inputs["evaluate"]["evaluation"],
            "dataset_fingerprint": ctx.inputs["split"]["dataset_fingerprint"],
            "label_profile": ctx.cfg.data.profile,
            "data_version": ctx.inputs["ingest"].get("data_version"),
            "data_sources": ctx.inputs["ingest"].get("sources"),
            "calibration": _calibration(ctx.inputs["evaluate"]["evaluation"]),
        },
    ).run()
    _write_trained_on(out, manifest)
    ref = _reference(ctx, out, manifest)
    return {
        "outputs": {"model_dir": str(out)},
        "parity_max_abs_diff": diff,
        "reference": ref.to_dict(),
        "metric": f"ONNX parity {diff:.1e} on {n} corpus clips; reference of {ref.clips} clips",
    }


def _write_trained_on(model_dir: Path, manifest: pd.DataFrame) -> None:
    """Record in the model folder the content hashes of every utterance it was trained or cross-validated on (the
    split stage's manifest: the gate set is never in it), for the promotion gate's overlap check."""
    from ser.model_folder import write_trained_on

    if "pcm_hash" not in manifest.columns:
        raise SerError("the training manifest has no content hashes (pcm_hash): it did not pass validation")
    write_trained_on(model_dir, manifest["pcm_hash"].astype(str).tolist())


def _calibration(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """The model folder's ``calibration`` (:mod:`ser.model_folder`): the temperature fitted on the evaluation's
    out-of-fold predictions, applied by :class:`ser.inference.Predictor` to the shipped model's logits (trained
    on every speaker with the same recipe, so the folds' over- or under-confidence is the best estimate of its own).
    None (no scaling) for an evaluation made before calibration was measured."""
    cal = evaluation.get("calibration")
    if not cal:
        return None
    return {**cal, "fitted_on": f"out-of-fold predictions: {evaluation.get('protocol')}"}


def _reference(ctx: StageContext, model_dir: Path, manifest: pd.DataFrame):
    """The training reference profile in the model folder: input statistics of (a sample of) the corpus with the
    evaluate stage's out-of-fold predictions (:class:`ser.jobs.monitor.ReferenceJob`)."""
    from ser.data.split import n_folds
    from ser.jobs.monitor import ReferenceJob, oof_predictions

    name = ctx.inputs["train"]["recipe"]["name"]
    folds = ctx.cfg.split.folds or list(range(n_folds(read_parquet(ctx.path("split", "splits")))))
    outputs = load_folds(ctx.path("train", "cv"), name, folds)
    oof = oof_predictions(outputs, ctx.inputs["split"]["classes"])
    return ReferenceJob(model_dir, manifest, oof, seed=ctx.cfg.train.seed, workers=ctx.cfg.workers).run()


def _training_facts(manifest: pd.DataFrame, cfg: PipelineConfig, final: dict[str, Any]) -> dict[str, Any]:
    by_gender = manifest.drop_duplicates("speaker")["gender"].astype(str).value_counts().to_dict()
    hours = float(manifest["duration_s"].sum() / 3600) if "duration_s" in manifest.columns else None
    return {
        "corpora": sorted(manifest["corpus"].astype(str).unique().tolist()) if "corpus" in manifest.columns else [],
        "synthetic": cfg.data.synthetic,
        "utterances": len(manifest),
        "speakers": int(manifest["speaker"].nunique()),
        "speakers_by_gender": by_gender,
        "hours": None if hours is None else round(hours, 4),
        "classes": manifest["emotion"].astype(str).value_counts().to_dict(),
        "final_model": {k: final[k] for k in ("best_epoch", "best_val_uar", "epochs_run", "n_train", "n_val")},
    }


def card_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.jobs.release import CardJob
    from ser.model_folder import CARD_FILE

    dest = CardJob(
        ctx.path("export", "model_dir"),
        ctx.out / "model",
        ctx.inputs["evaluate"]["evaluation"],
        ctx.path("evaluate", "evaluation"),
        ctx.path("evaluate", "report_dir"),
        ctx.cfg,
    ).run()
    return {"outputs": {"model_dir": str(dest), "card": str(dest / CARD_FILE)}, "metric": "MODEL_CARD.md written"}


def register_stage(ctx: StageContext) -> dict[str, Any]:
    from ser.jobs.release import GateRules, RegisterJob

    cfg = ctx.cfg
    r = cfg.register_
    model_dir = ctx.path("card", "model_dir")
    evaluation = ctx.inputs["evaluate"]["evaluation"]
    tracker = run_id = None
    if cfg.tracking.enabled:
        from ser.tracking import Tracker

        tracker = Tracker(cfg.tracking.uri or default_tracking_uri(ctx.workdir), cfg.tracking.experiment)
        run_id = tracker.log_pipeline_run(cfg, ctx.inputs, evaluation, model_dir)
    gate_file = ctx.inputs["split"]["outputs"].get("gate")
    rules = GateRules(
        margin=r.margin,
        max_group_gap=r.max_group_gap,
        group=r.group,
        on_missing_group=r.on_missing_group,
        rule=r.rule,
        min_utterances=r.min_gate_utterances,
        n_boot=r.n_boot,
        seed=cfg.train.seed,
    )
    reg = RegisterJob(
        ctx.workdir,
        model_dir,
        cfg.name,
        evaluation,
        margin=r.margin,
        max_group_gap=r.max_group_gap,
        tracker=tracker,
        run_id=run_id,
        publish=r.publish,
        gate=read_parquet(Path(gate_file)) if gate_file else None,
        rules=rules,
    ).run()
    result = {**reg.to_dict(), "uar": evaluation["uar"], "mlflow_run_id": run_id}
    result = {
        k: result[k] for k in ("name", "version", "alias", "reason", "uar", "model_dir", "mlflow_run_id", "published")
    }
    from ser.model_folder import read_metadata

    decision = read_metadata(reg.model_dir)["decision"]
    result["gate"] = {
        k: decision.get(k) for k in ("outcome", "basis", "gate", "candidate_score", "champion_score", "uar_diff")
    }
    result["data_version"] = ctx.inputs["ingest"].get("data_version")
    return {
        "outputs": {"model_dir": str(reg.model_dir)},
        "result": result,
        "metric": f"v{reg.version} → {reg.alias}: {reg.reason}",
    }


def default_tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


# ----------------------------------------------------------------------------------------------------------------
# the DAG


def _ingest_key(cfg: PipelineConfig) -> dict[str, Any]:
    """The config ingest reads: the single-source fields as before (its key is unchanged), or every source but its
    ``gate_share`` (read by split)."""
    if cfg.data.sources is None:
        return cfg.data.model_dump(mode="json", exclude={"sources"})
    return {
        "profile": cfg.data.profile,
        "sources": [s.model_dump(mode="json", exclude={"gate_share"}) for s in cfg.data.sources],
    }


STAGES: list[Stage] = [
    Stage("ingest", ingest_stage, (), lambda c: {"data": _ingest_key(c)}, fingerprint=corpus_fingerprint),
    Stage("validate", validate_stage, ("ingest",), lambda c: c.validate_.model_dump(mode="json")),
    Stage(
        "split",
        split_stage,
        ("validate",),
        lambda c: (
            {"split": c.split.model_dump(mode="json", exclude={"folds"}), "profile": c.data.profile}
            | ({"gate": _gate_shares(c), "gate_seed": c.register_.gate_seed} if _gate_shares(c) else {})
        ),
    ),
    Stage("features", features_stage, ("split",), lambda c: {"features": c.features, "kinds": _kinds(c)}),
    Stage(
        "tune",
        tune_stage,
        ("split", "features"),
        lambda c: (
            {
                "tune": c.tune.model_dump(mode="json"),
                "train": c.train.model_dump(mode="json", exclude=RUN_ONLY),
                "recipes": _recipe_dump(c),
                # parallel trials sample in another order: a study on Ray is not the local one
                **({"parallel": True} if c.train.executor == "ray" else {}),
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
            "train": c.train.model_dump(mode="json", exclude=RUN_ONLY),  # Ray or not: the same folds
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
        version="2",  # 2: the temperature scaling (calibration) of the out-of-fold predictions
    ),
    Stage(
        "export",
        export_stage,
        ("ingest", "split", "features", "train", "evaluate"),
        lambda c: {"name": c.name},
        # 2: reference.parquet (the monitoring reference profile); 3: trained_on.txt, data version; 4: calibration
        version="4",
    ),
    Stage("card", card_stage, ("export", "evaluate"), lambda c: None, version="3"),  # 3: EU AI Act scope
    Stage(
        "register",
        register_stage,
        ("ingest", "split", "card", "evaluate"),
        lambda c: {"name": c.name, "register": c.register_.model_dump(), "tracking": c.tracking.model_dump()},
    ),
]
STAGE_NAMES = [s.name for s in STAGES]
