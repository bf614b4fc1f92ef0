"""Cross-corpus evaluation: train on one corpus, test on another, through a shared label profile.

Both manifests are mapped through the same profile (e.g. ``four``: angry / happy / neutral (+calm) / sad), only
classes present in both are kept (rows of other classes are dropped and counted), validation speakers for early
stopping come out of the *training* corpus, and every utterance of the test corpus is predicted. No speaker can
be on both sides (different corpora have different speaker ids; the leakage guard checks it anyway, and also
content hashes).

:func:`cross_corpus` runs one spec through the cross-validation runner (the classical model, optionally with
per-corpus standardisation). For torch recipes and their ensembles, :func:`neural_cross_corpus` trains each member
once and scores the test corpus with and without unsupervised target-domain adaptation (:mod:`ser.adaptation`, the
map ``ser model adapt`` writes into a model folder), and :func:`joint_corpus` trains on several corpora pooled with
speaker-independent folds (:func:`joint_splits`) and scores each corpus's held-out speakers separately.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ser.errors import ConfigError, SerError

if TYPE_CHECKING:
    from ser.adaptation import Adaptation
    from ser.executor import Executor


def align(train: pd.DataFrame, test: pd.DataFrame, profile: str) -> tuple[pd.DataFrame, pd.DataFrame, list, dict]:
    """Map both manifests through ``profile``; keep the classes both have. Returns (train, test, classes, dropped)."""
    from ser.data.labels import apply_profile, get_profile

    tr, d_tr = apply_profile(train, profile)
    te, d_te = apply_profile(test, profile)
    shared = set(tr["emotion"]) & set(te["emotion"])
    classes = [c for c in get_profile(profile).classes if c in shared]
    if len(classes) < 2:
        raise SerError(f"profile {profile!r}: the corpora share fewer than two classes ({sorted(shared)})")
    only = {
        "train_only_classes": int((~tr["emotion"].isin(classes)).sum()),
        "test_only_classes": int((~te["emotion"].isin(classes)).sum()),
    }
    tr = tr[tr["emotion"].isin(classes)].reset_index(drop=True)
    te = te[te["emotion"].isin(classes)].reset_index(drop=True)
    return tr, te, classes, {"train": d_tr, "test": d_te, **only}


def corpus_normalize(
    feats: dict[str, dict[str, np.ndarray]], corpus_of: dict[str, str], eps: float = 1e-6
) -> dict[str, dict[str, np.ndarray]]:
    """Standardise every feature row per corpus (mean 0, std 1 over that corpus' utterances / frames).

    Unsupervised (no labels), the classic cross-corpus baseline (Schuller et al., 2010): it removes recording-level
    differences (microphone, level, bandwidth) that otherwise swamp emotion cues. ``feats`` ``{utt: {kind: array}}``
    with arrays ``(D,)`` (utterance functionals) or ``(F, T)`` (frames); returns new arrays, same shapes.
    """
    by_corpus: dict[str, list[str]] = {}
    for u in feats:
        by_corpus.setdefault(corpus_of[u], []).append(u)
    out: dict[str, dict[str, np.ndarray]] = {u: {} for u in feats}
    for utts in by_corpus.values():
        for kind in feats[utts[0]]:
            arrays = [np.asarray(feats[u][kind], dtype=np.float64) for u in utts]
            if arrays[0].ndim == 1:
                stack = np.stack(arrays)
                mu, sd = np.nanmean(stack, axis=0), np.nanstd(stack, axis=0)
            else:
                frames = np.concatenate(arrays, axis=1)
                mu, sd = frames.mean(axis=1, keepdims=True), frames.std(axis=1, keepdims=True)
            for u, a in zip(utts, arrays, strict=True):
                out[u][kind] = ((a - mu) / (sd + eps)).astype(np.float32)
    return out


def cross_corpus_splits(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """One fold: every row of ``train`` in role train, every row of ``test`` in role test; leakage-checked."""
    from ser.data.split import SPLIT_COLUMNS, check_leakage

    rows = pd.concat([train.assign(role="train"), test.assign(role="test")], ignore_index=True)
    if "sha256" not in rows.columns:
        rows["sha256"] = ""
    splits = rows.assign(fold=0, method="cross_corpus")[SPLIT_COLUMNS]
    check_leakage(splits)
    return splits


def cross_corpus(
    train: pd.DataFrame,
    test: pd.DataFrame,
    spec: Any,
    *,
    profile: str = "four",
    out_dir: str | Path,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    normalize: str = "corpus",
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``spec`` (a :class:`~ser.train.spec.ModelSpec`) on ``train``, evaluate on ``test``; writes the report
    (JSON + Markdown + confusion matrix) to ``out_dir/report`` and returns the evaluation summary.

    ``normalize``: ``corpus`` standardises features per corpus (:func:`corpus_normalize`), ``none`` keeps them.
    """
    if normalize not in ("corpus", "none"):
        raise SerError(f"normalize must be corpus or none, got {normalize!r}")
    from ser.evaluate.cv_report import cv_evaluation, write_cv_report
    from ser.train.cv import cross_validate, load_frame_features

    tr, te, classes, dropped = align(train, test, profile)
    both = pd.concat([tr, te], ignore_index=True)
    splits = cross_corpus_splits(tr, te)
    from ser.model_folder import input_bounds, trim_kinds

    kinds = tuple(sorted({*trim_kinds(spec.trim), spec.features}))
    feats = load_frame_features(both, kinds, cache_dir=cache_dir, workers=workers, progress=progress)
    if normalize == "corpus":
        if spec.features != "functionals" and spec.trim != "none":  # trim on the raw dB log-mel first
            trimmed = {}
            for u, f in feats.items():
                lo, hi = input_bounds(f, spec.trim, spec.trim_db)
                trimmed[u] = {k: (a[:, lo:hi] if a.ndim == 2 else a) for k, a in f.items()}
            feats, spec = trimmed, spec.model_copy(update={"trim": "none"})
        corpus_of = dict(zip(both["utt_id"].astype(str), both["corpus"].astype(str), strict=True))
        feats = corpus_normalize(feats, corpus_of)
    outs = cross_validate(both, splits, spec, feats, classes, out_dir, seed=seed)
    ev = cv_evaluation(outs, both, classes, n_boot=n_boot, seed=seed)
    corpora = {
        "train": sorted(tr["corpus"].astype(str).unique()) if "corpus" in tr else [],
        "test": sorted(te["corpus"].astype(str).unique()) if "corpus" in te else [],
    }
    title = f"{spec.name}: cross-corpus {'+'.join(corpora['train'])} → {'+'.join(corpora['test'])} ({profile})"
    write_cv_report(Path(out_dir) / "report", ev, title=title, meta={"profile": profile, "classes": classes, **corpora})
    m = ev["result"]["metrics"]
    return {
        "model": spec.name,
        "profile": profile,
        "normalize": normalize,
        "classes": classes,
        **{f"{k}_corpora": v for k, v in corpora.items()},
        "n_train": len(tr),
        "n_test": len(outs[0].y),
        "uar": m["uar"],
        "accuracy": m["accuracy"],
        "ci": {k: ev["result"]["ci"].get(k) for k in ("uar", "accuracy")},
        "chance_uar": 1.0 / len(classes),
        "dropped": dropped,
        "per_class_recall": {
            c: float(r)
            for c, r in zip(classes, np.diag(np.asarray(ev["result"]["confusion"]["normalized"])), strict=True)
        },
        "report": str(Path(out_dir) / "report" / "report.md"),
    }


# ----------------------------------------------------------------------------------------------------------------
# neural recipes: cross-corpus with and without target-domain adaptation, and joint training


ADAPT_MODES = ("none", "target", "batchnorm")
"""Cross-corpus adaptation settings: ``none`` (the model as trained), ``target`` (its log-mel input rows mapped
from the test corpus' statistics, estimated on its own unlabelled audio, onto the training corpus' statistics:
:mod:`ser.adaptation`, what ``ser model adapt --method rows`` writes into a model folder) and ``batchnorm`` (AdaBN:
the exported graph's batch-norm statistics re-estimated on the test corpus' own unlabelled model inputs,
:func:`adabn_proba`, what ``ser model adapt --method batchnorm`` does)."""


def adabn_proba(model: Any, xs: list[np.ndarray], cfg: Any, path: str | Path) -> tuple[np.ndarray, int]:
    """Probabilities ``(N, n_classes)`` of torch frame ``model`` on inputs ``xs`` (each ``(F, T)``) after AdaBN on
    those same inputs (transductive, as the ``target`` mode), through the ONNX graph that would ship
    (:func:`ser.export.export_onnx` to ``path``, :func:`ser.adabn.adapt_batchnorm`, one clip or its evaluation windows
    per run as served, :func:`ser.inference.graph_batch`), and the number of batch-norm layers re-estimated (0: the
    graph has none, the unadapted graph's answers are returned)."""
    import onnx
    import onnxruntime as ort

    from ser.adabn import adapt_batchnorm, batchnorm_nodes
    from ser.export import export_onnx
    from ser.inference import graph_batch, softmax
    from ser.model_folder import INPUT_NAME, OUTPUT_NAME, Preprocessing

    graph = onnx.load(str(export_onnx(model, path)))
    # the windows of the unadapted rows' predict_proba call (eval_mode only: 300 frames every 150), so the paired
    # difference to ``none`` is AdaBN's alone
    pre = Preprocessing(kind="logmel", feature_config={}, eval_mode=cfg.eval_mode, window=300, hop=150)
    batches = [graph_batch(pre, x) for x in xs]
    n_bn = len(batchnorm_nodes(graph))
    if n_bn:
        graph, _ = adapt_batchnorm(graph, batches, input_name=INPUT_NAME)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    logits = np.stack([sess.run([OUTPUT_NAME], {INPUT_NAME: b})[0].mean(axis=0) for b in batches])
    return softmax(logits, axis=1), n_bn


def _members(spec: Any) -> list[Any]:
    from ser.train.recipes import members
    from ser.train.spec import ModelSpec

    return [spec] if isinstance(spec, ModelSpec) else members([spec])


def _trim(member_specs: list[Any]) -> tuple[str, float | None]:
    """The members' shared silence trim ``(trim, trim_db)``, as the model that ships would apply it."""
    from ser.train.spec import model_input

    try:
        inp = model_input(member_specs)
    except ConfigError as exc:  # members that could not ship as one model
        raise SerError(f"cross-corpus: {exc}") from None
    return inp["trim"], inp["trim_db"]


def _summary(ev: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    m = ev["result"]["metrics"]
    return {
        "uar": m["uar"],
        "accuracy": m["accuracy"],
        "ci": {k: ev["result"]["ci"].get(k) for k in ("uar", "accuracy")},
        "ci_method": ev["result"]["ci"].get("method"),
        "per_class_recall": {  # None: the class has no test utterance (a cut run's small sample)
            c: None if r is None else float(r)
            for c, r in zip(classes, np.diag(np.asarray(ev["result"]["confusion"]["normalized"], dtype=object)),
                            strict=True)
        },
    }  # fmt: skip


def domain_adaptation(train_inputs: list[np.ndarray], test_inputs: list[np.ndarray], n_mels: int) -> Adaptation:
    """The :class:`~ser.adaptation.Adaptation` of log-mel model inputs ``(n_mels, T)`` (trimmed, as served): the
    source statistics from the training corpus' inputs, the target ones from the test corpus' inputs (no labels),
    pooled exactly as the model folder's reference profile and ``ser model adapt`` pool them."""
    from ser.adaptation import Adaptation, stats_of_inputs

    rows = (0, n_mels)
    return Adaptation(rows, stats_of_inputs(train_inputs, rows), stats_of_inputs(test_inputs, rows))


def _member_proba(
    mode: str,
    model: Any,
    m: Any,
    x_test: list[np.ndarray],
    y_test: np.ndarray,
    n_classes: int,
    tc: Any,
    adaptation: Adaptation,
    out_dir: Path,
) -> tuple[np.ndarray, int | None]:
    """One member's test probabilities under adaptation ``mode`` and, for ``batchnorm``, its re-estimated layers."""
    from ser.train.data import ArrayDataset
    from ser.train.predict import predict_proba

    if mode == "batchnorm":
        return adabn_proba(model, x_test, tc, out_dir / m.name / "adabn.onnx")
    xs = [adaptation.apply(a) for a in x_test] if mode == "target" and m.features == "logmel" else x_test
    return predict_proba(model, ArrayDataset(xs, y_test, n_classes=n_classes), eval_mode=tc.eval_mode), None


def _adaptation_stats(mode: str, adaptation: Adaptation, bn_layers: dict[str, int], n_test: int) -> dict[str, Any]:
    """What an adapted row records: the row map's clip counts and shifts (``target``), or the batch-norm layers
    re-estimated per member (``batchnorm``)."""
    if mode == "batchnorm":
        return {"batchnorm_layers": bn_layers, "target_clips": n_test}
    return {
        "source_clips": adaptation.source.clips,
        "target_clips": adaptation.target.clips,
        "mean_row_shift_db": float(np.mean(np.abs(adaptation.target.mean - adaptation.source.mean))),
        "mean_std_ratio": float(np.mean(adaptation.target.std / adaptation.source.std)),
    }


def neural_cross_corpus(
    train: pd.DataFrame,
    test: pd.DataFrame,
    spec: Any,
    *,
    profile: str = "four",
    out_dir: str | Path,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    modes: tuple[str, ...] = ADAPT_MODES,
    progress: bool = False,
    variants_for: Callable[[Any], Any] | None = None,
) -> list[dict[str, Any]]:
    """Train a torch recipe ``spec`` (a model or an ensemble of them) on ``train``, predict every utterance of
    ``test`` once per adaptation setting in ``modes`` (:data:`ADAPT_MODES`), each member trained once.

    Validation speakers (``val_speakers`` of each member) come out of the training corpus only. Ensembles fuse the
    members' probabilities (their weights) as cross-validation does. ``target`` maps each log-mel member's input
    rows (:func:`domain_adaptation`); members on MFCC are left as they are (a model folder adapts its log-mel rows
    only). ``batchnorm`` re-estimates each member's batch norms in its exported graph on the test inputs
    (:func:`adabn_proba`; a member without batch norms is left as it is). Each setting is scored with
    :func:`~ser.evaluate.cv_report.cv_evaluation` (UAR and accuracy with 95 % speaker-bootstrap CIs) and its report
    written to ``out_dir/<mode>/report``; ``target`` and ``batchnorm`` also get the paired speaker-bootstrap
    difference to ``none`` (:func:`~ser.evaluate.metrics.paired_bootstrap_diff`). Members train with checkpoints in
    ``out_dir/<member>``, so a killed run resumes.

    ``variants_for(member)``: the robustness variants of a member with a ``robust`` field (of its training rows
    only, :func:`ser.train.cv.add_variants`); such a member without a source is refused, never trained plain.

    Returns one row per mode.
    """
    from ser.evaluate.cv_report import cv_evaluation, write_cv_report
    from ser.evaluate.metrics import paired_bootstrap_diff
    from ser.model_folder import frame_input
    from ser.train.cv import FoldOutput, fit_spec, fuse, load_frame_features, student_targets, utterance_arrays
    from ser.train.recipes import feature_kinds

    bad = [m for m in modes if m not in ADAPT_MODES]
    if bad or not modes:
        raise SerError(f"adaptation modes must be among {', '.join(ADAPT_MODES)}, got {list(modes)}")
    member_specs = _members(spec)
    if any(m.model == "classical" for m in member_specs):
        raise SerError("neural_cross_corpus trains torch recipes; use cross_corpus for the classical model")
    trim, trim_db = _trim(member_specs)
    out_dir = Path(out_dir)
    tr, te, classes, dropped = align(train, test, profile)
    cross_corpus_splits(tr, te)  # the leakage guard: no speaker or content on both sides
    both = pd.concat([tr, te], ignore_index=True)
    kinds = tuple(sorted({"logmel"} | feature_kinds(member_specs)))  # a vad trim reads the "vad" kind too
    feats = load_frame_features(both, kinds, cache_dir=cache_dir, workers=workers, progress=progress)
    tr = tr[tr["utt_id"].isin(feats.keys())].reset_index(drop=True)
    te = te[te["utt_id"].isin(feats.keys())].reset_index(drop=True)
    index = {c: i for i, c in enumerate(classes)}
    test_ids = te["utt_id"].tolist()
    y_test = np.array([index[e] for e in te["emotion"]])
    n_mels = int(next(iter(feats.values()))["logmel"].shape[0])
    adaptation = domain_adaptation(
        [frame_input(feats[u], "logmel", trim_db, trim=trim) for u in tr["utt_id"]],
        [frame_input(feats[u], "logmel", trim_db, trim=trim) for u in test_ids],
        n_mels,
    )
    probas: dict[str, list[np.ndarray]] = {m: [] for m in modes}
    bn_layers: dict[str, int] = {}
    infos = {}
    for m in member_specs:
        m_seed = seed + m.seed
        x, y, fit_rows, val_rows, sources = _member_inputs(
            m, tr, te, feats, index, m_seed, None if variants_for is None else variants_for(m)
        )
        # a distilled member: its teacher trains first, on the training corpus's clips only (kept beside it)
        roles = {"train": fit_rows, "val": val_rows}
        ids = {r: df["utt_id"].tolist() for r, df in roles.items()}
        teacher, logits = student_targets(
            m, roles, ids, y, sources, feats, len(classes), seed, out_dir / f"{m.name}_teacher", progress
        )
        result, cfg = fit_spec(
            m, x, y, len(classes), m_seed, out_dir / m.name, progress=progress, teacher_logits=logits
        )
        x_test = utterance_arrays(m, feats, test_ids)
        for mode in modes:
            proba, n_bn = _member_proba(mode, result.model, m, x_test, y_test, len(classes), cfg, adaptation, out_dir)
            probas[mode].append(proba)
            bn_layers |= {} if n_bn is None else {m.name: n_bn}
        infos[m.name] = {
            "epochs": int(cfg.epochs),
            "epochs_run": int(result.epochs_run),
            "best_epoch": int(result.best_epoch),
            "n_train": len(fit_rows),
            "n_train_variants": len(x["train"]) - len(fit_rows),
            "n_val": len(val_rows),
            "val_speakers": sorted(val_rows["speaker"].astype(str).unique().tolist()),
            **({} if teacher is None else {"distilled_from": teacher.info["teacher"]}),
        }
    weights = getattr(spec, "weights", None)
    corpora = {"train": sorted(tr["corpus"].astype(str).unique()), "test": sorted(te["corpus"].astype(str).unique())}
    rows: list[dict[str, Any]] = []
    preds: dict[str, np.ndarray] = {}
    for mode in modes:
        proba = probas[mode][0] if len(member_specs) == 1 else fuse(probas[mode], weights)
        preds[mode] = proba.argmax(1)
        out = FoldOutput(proba, y_test, test_ids, {})
        ev = cv_evaluation([out], te, classes, n_boot=n_boot, seed=seed)
        title = f"{spec.name}: cross-corpus {'+'.join(corpora['train'])} → {'+'.join(corpora['test'])} ({mode})"
        write_cv_report(out_dir / mode / "report", ev, title=title, meta={"profile": profile, "adaptation": mode})
        row = {
            "model": spec.name,
            "profile": profile,
            "adaptation": mode,
            "classes": classes,
            **{f"{k}_corpora": v for k, v in corpora.items()},
            "n_train": len(tr),
            "n_test": len(test_ids),
            "test_speakers": int(te["speaker"].nunique()),
            **_summary(ev, classes),
            "chance_uar": 1.0 / len(classes),
            "dropped": dropped,
            "members": infos,
            "report": str(out_dir / mode / "report" / "report.md"),
        }
        if mode != "none":
            row["adaptation_stats"] = _adaptation_stats(mode, adaptation, bn_layers, len(test_ids))
        if mode != "none" and "none" in preds and n_boot > 0:
            d = paired_bootstrap_diff(
                y_test, preds[mode], preds["none"], te["speaker"].astype(str).to_numpy(),
                classes=list(range(len(classes))), n_boot=n_boot, seed=seed,
            )  # fmt: skip
            row["gain_vs_none"] = {k: d[k] for k in ("uar", "accuracy")} | {"n_speakers": d["n_clusters"]}
        rows.append(row)
    return rows


def joint_splits(corpora: dict[str, pd.DataFrame], k: int, seed: int = 0) -> pd.DataFrame:
    """Speaker-independent ``k`` folds of several corpora pooled: each corpus is split into ``k`` speaker folds on
    its own (:func:`~ser.data.split.make_splits` ``kfold``), and fold ``i`` of the pool tests fold ``i`` of every
    corpus, so every fold holds out speakers of each corpus. Leakage-checked."""
    from ser.data.split import check_leakage, make_splits

    parts = [make_splits(df, "kfold", k=k, seed=seed) for df in corpora.values()]
    splits = pd.concat(parts, ignore_index=True)
    check_leakage(splits)
    return splits


def _member_inputs(m, tr, te, feats, index, seed, variants) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame, list]:
    """``(x, y, training rows, validation rows, sources)`` of member ``m`` on the training corpus ``tr``: validation
    speakers carved out of it, and a robust member's variants of its training rows beside them
    (:func:`ser.train.cv.add_variants`, which refuses a robust member without a ``variants`` source; ``sources``: the
    clip each variant copies); ``te`` (the test corpus) takes part in the leakage check only."""
    from ser.data.split import carve_validation
    from ser.train.cv import add_variants, utterance_arrays

    fit_rows, val_rows = carve_validation(tr, m.val_speakers, seed)
    x = {r: utterance_arrays(m, feats, df["utt_id"].tolist()) for r, df in (("train", fit_rows), ("val", val_rows))}
    y = {r: np.array([index[e] for e in df["emotion"]]) for r, df in (("train", fit_rows), ("val", val_rows))}
    roles = {"train": fit_rows, "val": val_rows, "test": te}
    sources = add_variants(m, variants, roles, fit_rows["utt_id"].tolist(), x, y)
    return x, y, fit_rows, val_rows, sources


def joint_corpus(
    corpora: dict[str, pd.DataFrame],
    spec: Any,
    *,
    profile: str = "four",
    k: int = 5,
    folds: list[int] | None = None,
    out_dir: str | Path,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    progress: bool = False,
    variants_for: Callable[[Any], Any] | None = None,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """Train ``spec`` on the pooled ``corpora`` (``{name: manifest}``, each mapped through ``profile``, the
    classes all share kept) with :func:`joint_splits` folds (``folds``: which to run, default all ``k``), and score
    the held-out speakers of each corpus separately (UAR and accuracy with 95 % speaker-bootstrap CIs over the
    folds run). Validation speakers are carved out of each fold's pooled training speakers. ``executor``: where the
    folds train (:func:`~ser.train.cv.cross_validate_members`; a ``ray`` one trains them side by side). Returns one
    row per corpus."""
    from ser.data.labels import apply_profile, get_profile
    from ser.evaluate.cv_report import cv_evaluation, write_cv_report
    from ser.train.cv import FoldOutput, cross_validate_members, ensemble_folds, load_frame_features
    from ser.train.recipes import feature_kinds

    member_specs = _members(spec)
    mapped = {n: apply_profile(df, profile)[0] for n, df in corpora.items()}
    shared = set.intersection(*(set(df["emotion"]) for df in mapped.values()))
    classes = [c for c in get_profile(profile).classes if c in shared]
    if len(classes) < 2:
        raise SerError(f"profile {profile!r}: the corpora share fewer than two classes ({sorted(shared)})")
    mapped = {n: df[df["emotion"].isin(classes)].reset_index(drop=True) for n, df in mapped.items()}
    pooled = pd.concat(list(mapped.values()), ignore_index=True)
    kinds = tuple(sorted({"logmel"} | feature_kinds(member_specs)))  # a vad trim reads the "vad" kind too
    feats = load_frame_features(pooled, kinds, cache_dir=cache_dir, workers=workers, progress=progress)
    mapped = {n: df[df["utt_id"].isin(feats.keys())].reset_index(drop=True) for n, df in mapped.items()}
    pooled = pd.concat(list(mapped.values()), ignore_index=True)
    splits = joint_splits(mapped, k, seed)
    run = list(range(k)) if folds is None else folds
    outs = cross_validate_members(pooled, splits, member_specs, feats, classes, out_dir, folds=run, seed=seed,
                                  progress=progress, variants_for=variants_for, executor=executor)  # fmt: skip
    fused = outs[spec.name] if len(member_specs) == 1 else ensemble_folds(
        [outs[m.name] for m in member_specs], getattr(spec, "weights", None)
    )  # fmt: skip
    corpus_of = {str(u): n for n, df in mapped.items() for u in df["utt_id"]}
    speaker_of = pooled.set_index("utt_id")["speaker"]
    rows = []
    for name in mapped:
        parts = []
        for o in fused:
            keep = np.array([corpus_of[str(u)] == name for u in o.utt_ids], dtype=bool)
            if keep.any():
                ids = [u for u, k_ in zip(o.utt_ids, keep, strict=True) if k_]
                parts.append(FoldOutput(o.proba[keep], o.y[keep], ids, {}))
        if not parts:
            continue
        ev = cv_evaluation(parts, pooled, classes, n_boot=n_boot, seed=seed)
        rep = Path(out_dir) / f"report-{name}"
        write_cv_report(rep, ev, title=f"{spec.name}: joint {'+'.join(mapped)} → {name}", meta={"profile": profile})
        rows.append(
            {
                "model": spec.name,
                "profile": profile,
                "train_corpora": list(mapped),
                "test_corpus": name,
                "classes": classes,
                "k": k,
                "folds": run,
                "n_test": int(sum(len(p.y) for p in parts)),
                "test_speakers": int(speaker_of.loc[[u for p in parts for u in p.utt_ids]].nunique()),
                **_summary(ev, classes),
                "chance_uar": 1.0 / len(classes),
                "report": str(rep / "report.md"),
            }
        )  # fmt: skip
    return rows
