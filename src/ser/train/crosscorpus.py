"""Cross-corpus evaluation: train on one corpus, test on another, through a shared label profile.

Both manifests are mapped through the same profile (e.g. ``four``: angry / happy / neutral (+calm) / sad), only
classes present in both are kept (rows of other classes are dropped and counted), validation speakers for early
stopping come out of the *training* corpus, and every utterance of the test corpus is predicted. No speaker can
be on both sides (different corpora have different speaker ids; the leakage guard checks it anyway, and also
content hashes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser.errors import SerError


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
