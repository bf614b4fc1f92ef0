"""Speaker-independent splits and the leakage guard every later stage runs.

``splits.parquet`` is long-format: one row per (fold, utterance) with ``fold``, ``utt_id``, ``speaker``, ``emotion``,
``sha256``, ``role`` (train / val / test) and ``method``. Byte-identical files are grouped with their speakers, so
a duplicate can never sit on two sides of a fold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold

from ser.errors import LeakageError, SerError

METHODS = ("kfold", "loso", "holdout", "ravdess6")
ROLES = ("train", "val", "test")
SPLIT_COLUMNS = ["fold", "utt_id", "speaker", "emotion", "sha256", "role", "method"]


def _groups(manifest: pd.DataFrame) -> np.ndarray:
    """Group id per row: speakers joined with every speaker sharing a byte-identical file (union-find)."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for spk in manifest["speaker"]:
        find(str(spk))
    if "sha256" in manifest.columns:
        for _, spks in manifest.groupby("sha256")["speaker"]:
            spks = [str(s) for s in spks.unique()]
            for other in spks[1:]:
                parent[find(other)] = find(spks[0])
    return np.array([find(str(s)) for s in manifest["speaker"]])


def carve_validation(train: pd.DataFrame, n_speakers: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move ``n_speakers`` whole speakers (alternating genders where known) from ``train`` into a validation set.

    Returns ``(train_rest, val)``; deterministic for ``seed``. At least one training speaker always remains.
    """
    speakers = sorted(train["speaker"].unique())
    if n_speakers <= 0:
        return train.reset_index(drop=True), train.iloc[0:0].reset_index(drop=True)
    if n_speakers >= len(speakers):
        raise SerError(f"cannot carve {n_speakers} validation speakers out of {len(speakers)} training speakers")
    rng = np.random.default_rng(seed)
    gender = train.groupby("speaker")["gender"].first() if "gender" in train.columns else pd.Series(dtype=str)
    pools = [list(rng.permutation([s for s in speakers if gender.get(s, "unknown") == g])) for g in ("female", "male")]
    pools.append(list(rng.permutation([s for s in speakers if gender.get(s, "unknown") not in ("female", "male")])))
    chosen: list[str] = []
    while len(chosen) < n_speakers:
        for pool in sorted(pools, key=len, reverse=True):
            if pool and len(chosen) < n_speakers:
                chosen.append(pool.pop())
    is_val = train["speaker"].isin(chosen)
    return train[~is_val].reset_index(drop=True), train[is_val].reset_index(drop=True)


def _fold_rows(manifest: pd.DataFrame, test_mask: np.ndarray, fold: int, val_speakers: int, seed: int) -> pd.DataFrame:
    train, test = manifest[~test_mask], manifest[test_mask]
    train, val = carve_validation(train, val_speakers, seed + fold)
    parts = [df.assign(role=r) for r, df in (("train", train), ("val", val), ("test", test)) if len(df)]
    return pd.concat(parts, ignore_index=True).assign(fold=fold)


def make_splits(
    manifest: pd.DataFrame,
    method: str,
    *,
    k: int = 5,
    seed: int = 0,
    test_speakers: list[str] | None = None,
    test_fraction: float = 0.2,
    val_speakers: int = 0,
) -> pd.DataFrame:
    """Speaker-independent folds of ``manifest`` (see the module docstring for the table); leakage-checked."""
    if method not in METHODS:
        raise SerError(f"unknown split method {method!r}; known: {', '.join(METHODS)}")
    m = manifest.reset_index(drop=True)
    if "sha256" not in m.columns:
        m = m.assign(sha256="")
    n_spk = m["speaker"].nunique()
    if n_spk < 2:
        raise SerError(f"a speaker-independent split needs at least 2 speakers, the manifest has {n_spk}")
    groups = _groups(m)
    folds: list[np.ndarray] = []
    if method == "kfold":
        if k < 2 or k > len(set(groups)):
            raise SerError(f"--kfold {k} needs 2 ≤ k ≤ {len(set(groups))} (speaker groups in the manifest)")
        sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        for _, test_idx in sgkf.split(m, m["emotion"], groups):
            mask = np.zeros(len(m), bool)
            mask[test_idx] = True
            folds.append(mask)
    elif method == "loso":
        for _, test_idx in LeaveOneGroupOut().split(m, groups=groups):
            mask = np.zeros(len(m), bool)
            mask[test_idx] = True
            folds.append(mask)
    elif method == "ravdess6":
        wanted = [[f"ravdess:{a:02d}" for a in range(4 * i + 1, 4 * i + 5)] for i in range(6)]
        missing = sorted({s for group in wanted for s in group} - set(m["speaker"]))
        if len(missing) == 24:
            raise SerError("preset ravdess6 needs RAVDESS speakers ravdess:01..ravdess:24; the manifest has none")
        folds = [m["speaker"].isin(w).to_numpy() for w in wanted]
    else:
        if test_speakers:
            unknown = sorted(set(test_speakers) - set(m["speaker"]))
            if unknown:
                raise SerError(f"holdout speakers not in the manifest: {', '.join(unknown)}")
            chosen = set(test_speakers)
        else:
            if not 0 < test_fraction < 1:
                raise SerError(f"test fraction must be in (0, 1), got {test_fraction}")
            _, held = carve_validation(m, max(1, round(test_fraction * n_spk)), seed)
            chosen = set(held["speaker"])
        folds = [m["speaker"].isin(chosen).to_numpy()]
    out = pd.concat([_fold_rows(m, mask, i, val_speakers, seed) for i, mask in enumerate(folds)], ignore_index=True)
    out["method"] = method
    out = out[SPLIT_COLUMNS + [c for c in ("pcm_hash", "augmented") if c in out.columns]]
    check_leakage(out)
    return out


def check_leakage(splits: pd.DataFrame) -> None:
    """Raise :class:`LeakageError` if, within a fold, a speaker or content hash spans two roles, an utterance
    repeats, or an augmented row is in val / test."""
    for fold, g in splits.groupby("fold"):
        dup = g["utt_id"].duplicated()
        if dup.any():
            raise LeakageError(f"fold {fold}: utterance {g.loc[dup, 'utt_id'].iloc[0]} appears twice")
        for col in ("speaker", "sha256", "pcm_hash"):
            if col not in g.columns:
                continue
            vals = g[g[col].astype(str) != ""]
            roles = vals.groupby(col)["role"].unique()
            bad = roles[roles.map(len) > 1]
            if len(bad):
                key, where = bad.index[0], sorted(bad.iloc[0])
                raise LeakageError(f"fold {fold}: {col} {key} appears in {' and '.join(where)}")
        if "augmented" in g.columns:
            leaked = g[g["augmented"].astype(bool) & g["role"].isin(["val", "test"])]
            if len(leaked):
                raise LeakageError(
                    f"fold {fold}: augmented copy {leaked['utt_id'].iloc[0]} is in {leaked['role'].iloc[0]}"
                )


def n_folds(splits: pd.DataFrame) -> int:
    return int(splits["fold"].nunique())


def fold_frames(manifest: pd.DataFrame, splits: pd.DataFrame, fold: int) -> dict[str, pd.DataFrame]:
    """Manifest rows of each role of ``fold`` (``val`` is empty when the split carved none)."""
    s = splits[splits["fold"] == fold]
    if s.empty:
        raise SerError(f"fold {fold} is not in the splits (folds: {sorted(splits['fold'].unique())})")
    by_id = manifest.set_index("utt_id", drop=False)
    return {r: by_id.loc[s.loc[s["role"] == r, "utt_id"]].reset_index(drop=True) for r in ROLES}


# ---------------------------------------------------------------------------------------------------------------
# the promotion gate set


def gate_holdout(manifest: pd.DataFrame, shares: dict[str, float], seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Set aside the promotion gate set before any split: from each source named in ``shares`` (the manifest's
    ``source`` column; a manifest without one is the single source ``""``), a speaker-disjoint ``share`` of its
    speaker groups (speakers joined by byte-identical files, as in the folds), drawn per gender so both genders
    are in the gate set when the source has two or more speakers of each. At least one group per source is held
    out and at least one stays in training.

    Returns ``(pool, gate)``: the rows training and cross-validation may see, and the gate rows; a speaker or a
    byte-identical file never sits on both sides. Deterministic for ``seed``.
    """
    m = manifest.reset_index(drop=True)
    source = m["source"].astype(str) if "source" in m.columns else pd.Series("", index=m.index)
    groups = pd.Series(_groups(m), index=m.index)
    gender = m["gender"].astype(str) if "gender" in m.columns else pd.Series("unknown", index=m.index)
    held: set[str] = set()
    for name, share in sorted(shares.items()):
        if share <= 0:
            continue
        rows = source == name
        if not rows.any():
            raise SerError(f"gate source {name!r} has no utterances in the manifest")
        group_gender = gender[rows].groupby(groups[rows]).first()
        n_total = len(group_gender)
        if n_total < 2:
            raise SerError(f"gate source {name!r} has {n_total} speaker: a speaker-disjoint gate share needs two")
        rng = np.random.default_rng([seed, *name.encode()])
        chosen: list[str] = []
        for g in sorted(group_gender.unique()):
            pool = sorted(group_gender.index[group_gender == g])
            n = round(share * len(pool)) if len(pool) >= 2 else 0
            chosen += list(rng.permutation(pool)[:n])
        if not chosen:  # few speakers: still hold one out
            chosen = [str(rng.permutation(sorted(group_gender.index))[0])]
        if len(chosen) >= n_total:
            chosen = chosen[: n_total - 1]
        held |= set(chosen)
    is_gate = groups.isin(held).to_numpy()
    return m[~is_gate].reset_index(drop=True), m[is_gate].reset_index(drop=True)
