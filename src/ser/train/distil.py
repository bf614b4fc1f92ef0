"""Knowledge distillation (Hinton, Vinyals & Dean, 2015, "Distilling the knowledge in a neural network"): one cheap
model, the student, trained towards the softened outputs of an expensive one, the teacher (e.g. the ``cnn+crnn+rnn``
ensemble), as well as towards the hard labels, so that it serves at its own cost.

- :func:`distillation_loss`: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.
- :func:`teacher_members` / :func:`teacher_fingerprint`: the teacher of a recipe's ``distil`` part
  (:class:`~ser.train.spec.DistilConfig`), resolved from the named recipes.
- :func:`fit_teacher`: train the teacher on a set of training rows (early stopping on the validation rows, never on
  anything else) and return its log-probabilities of those training rows: the soft targets. With a folder, the
  targets and the members' checkpoints are kept there, so a killed run does not train a finished teacher again.

The targets are offline: the teacher scores each whole training clip once (eval mode, no augmentation) and the
student, trained on random crops with SpecAugment, is pulled towards its clip's target on every crop. Online
distillation (the teacher scoring each augmented crop) would match crop and target exactly, but put the teacher's
forward passes (three models) into every step of every epoch; offline targets cost one pass and resume trivially.
By default they are the teacher's outputs on clips it was trained on, so they are more confident than on unseen
speakers; the temperature is what exposes how it ranks the other classes (:data:`~ser.train.spec.DISTIL_TEMPERATURE`).
With ``cross_fit`` they are out-of-fold instead: each speaker group labelled by a teacher trained on the others.
A student with robustness variants (``robust``) takes, for each degraded variant, the target of its clean clip
(:func:`variant_targets`); the teacher itself trains on the clean clips only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from ser.errors import ConfigError, SerError
from ser.io import atomic_path, write_json

if TYPE_CHECKING:
    from ser.train.spec import DistilConfig, EnsembleSpec, ModelSpec

TEACHER_TARGETS = "targets.npz"
"""In a teacher folder: the soft targets (``logits`` ``(n_train, n_classes)``, ``utt_ids``, ``val_utt_ids``)."""
TEACHER_RECORD = "teacher.json"
"""In a teacher folder: what the teacher is and which rows it trained on (``key``), ``done`` once the targets are
written, and the facts of the run (speakers, members' epochs, seconds)."""


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    hard_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * hard_loss(s, y)`` (Hinton et al., 2015).

    ``student_logits`` and ``teacher_logits`` ``(B, C)``; the teacher's may be log-probabilities (softmax does not
    change when a row is shifted, so an ensemble's log mean probability works as is). ``target`` ``(B,)``: class
    indices. ``hard_loss``: plain cross-entropy by default (the trainer passes its class-weighted, label-smoothed
    criterion). The KL is the batch mean of each clip's sum over classes (``batchmean``), times ``T^2`` so the soft
    term's gradients keep their size as ``T`` changes (Hinton et al., section 2). ``alpha = 0`` is the hard loss
    alone; ``alpha = 1`` ignores the labels. Returns a scalar tensor.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distil alpha must lie in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ConfigError(f"distil temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise SerError(f"student logits {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}")
    hard = F.cross_entropy(student_logits, target) if hard_loss is None else hard_loss(student_logits, target)
    t = float(temperature)
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits.to(student_logits.dtype) / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * t * t * soft + (1.0 - alpha) * hard


# ----------------------------------------------------------------------------------------------------------------
# the teacher


def teacher_members(distil: DistilConfig) -> tuple[ModelSpec | EnsembleSpec, list[ModelSpec]]:
    """``(teacher recipe, the model specs it trains)``: the named recipe with ``teacher_overrides``, and itself or
    its members. A teacher that is itself distilled, or has robustness variants, is a ConfigError."""
    from ser.train.recipes import get_recipe, members

    spec = get_recipe(distil.teacher, distil.teacher_overrides or None)
    specs = members([spec])
    for m in specs:
        if m.distil is not None:
            raise ConfigError(f"distil: the teacher {distil.teacher} ({m.name}) must not be distilled itself")
        if m.robust is not None:
            raise ConfigError(f"distil: teacher member {m.name} has robust variants, which a teacher does not take")
        if m.model == "classical":
            raise ConfigError(f"distil: teacher member {m.name} is classical; a teacher is made of torch models")
    return spec, specs


def teacher_fingerprint(distil: DistilConfig) -> str:
    """Short hash of what decides the teacher: its members' fingerprints and the ensemble weights."""
    spec, specs = teacher_members(distil)
    data = {"members": [m.fingerprint() for m in specs], "weights": getattr(spec, "weights", None)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def teacher_kinds(distil: DistilConfig) -> set[str]:
    """The feature kinds the teacher's members read (they must be loaded beside the student's)."""
    return {m.features for m in teacher_members(distil)[1]}


@dataclass
class TeacherTargets:
    """The teacher's log-probabilities ``logits`` ``(n_train, n_classes)`` of the training rows ``utt_ids`` (in that
    order), the validation rows its members stopped early on, and the facts of its run (:data:`TEACHER_RECORD`)."""

    logits: np.ndarray
    utt_ids: list[str]
    val_utt_ids: list[str]
    info: dict[str, Any]


def fit_teacher(
    distil: DistilConfig,
    ids: dict[str, list[str]],
    y: dict[str, np.ndarray],
    speakers: dict[str, list[str]],
    feats: dict[str, dict[str, np.ndarray]],
    n_classes: int,
    *,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = False,
    adopt: dict[str, Path] | None = None,
    row_speakers: list[str] | None = None,
) -> TeacherTargets:
    """Train the teacher of ``distil`` on the rows ``ids["train"]`` (labels ``y["train"]``; early stopping on
    ``ids["val"]`` as its members' recipes do, none when it is empty) and return its soft targets on the training rows.

    Nothing else is handed in, so the teacher cannot see a test row. ``speakers``: the speakers of each role, for the
    record. Each member trains with ``seed + member.seed`` (as it would in cross-validation), in ``out_dir/<member>``.
    ``out_dir``: where the targets and the record are kept; the targets are read back when the teacher recipe, the
    seed and the rows are the same, a half-trained teacher resumes from its members' checkpoints, and a folder left
    by another teacher or other rows is cleared first. None: nothing is stored.

    ``distil.cross_fit = k >= 2`` (out-of-fold targets): the training speakers are split into ``k`` seeded groups
    (:func:`speaker_groups`; ``row_speakers``, the speaker of each training row, is then required) and each group's
    rows are soft-labelled by a teacher trained on the other groups' rows (early stopping on the same validation
    rows), in ``out_dir/part_<g>/<member>``: ``k`` teachers, each on ``(k - 1) / k`` of the rows, so the targets are
    what the teacher says of speakers it has not heard, not of clips it has learnt by heart. ``info["parts"]`` names
    each group's speakers; ``train_accuracy`` is then an out-of-fold figure.

    ``adopt``: ``{member name: fold base path}`` of the same members' cross-validation folds in this run folder
    (``<run>/<member>/fold_<k>``, :func:`adopt_member`): a member whose fold there finished with the same recipe, the
    same validation speakers, the same number of training clips, no test speaker among the teacher's training
    speakers and the same seed is not trained again; its checkpoint is copied and read (``info["members"][m]
    ["adopted_from"]`` says from where). A cross-fitted teacher trains on parts of the rows, so it adopts nothing.
    """
    spec, specs = teacher_members(distil)
    key: dict[str, Any] = {
        "teacher": distil.teacher,
        "fingerprint": teacher_fingerprint(distil),
        "seed": seed,
        "rows": _rows_hash(ids),
    }
    if distil.cross_fit:  # in-sample teachers kept before the option existed keep their key
        key["cross_fit"] = distil.cross_fit
    if out_dir is not None:
        done = load_teacher(out_dir, key)
        if done is not None:
            return done
        _claim(out_dir, key)
    first = next(iter(feats.values()), {})
    for m in specs:
        if m.features not in first:
            raise ConfigError(f"distil: teacher member {m.name} reads {m.features} features, which were not loaded")
    start = time.perf_counter()
    info: dict[str, Any] = {"teacher": distil.teacher, "fingerprint": key["fingerprint"], "seed": seed}
    if distil.cross_fit:
        if row_speakers is None or len(row_speakers) != len(ids["train"]):
            raise SerError("a cross-fitted teacher needs the speaker of every training row")
        groups = speaker_groups(row_speakers, distil.cross_fit, seed)
        fused = np.zeros((len(ids["train"]), n_classes))
        train_ids, parts = np.asarray(ids["train"]), []
        for g, group in enumerate(groups):
            held = np.isin(row_speakers, group)
            fit_rows = {"train": train_ids[~held].tolist(), "val": ids["val"]}
            fit_y = {"train": y["train"][~held], "val": y["val"]}
            part_dir = None if out_dir is None else Path(out_dir) / f"part_{g}"
            score = train_ids[held].tolist()
            fused[held], members = _fit_members(spec, specs, fit_rows, fit_y, score, feats, n_classes, seed,
                                                part_dir, progress)  # fmt: skip
            parts.append({"speakers": list(group), "n_train": len(fit_rows["train"]), "n_scored": len(score),
                          "members": members})  # fmt: skip
        info.update(cross_fit=distil.cross_fit, parts=parts)
    else:
        fused, members = _fit_members(
            spec, specs, ids, y, ids["train"], feats, n_classes, seed, out_dir, progress, adopt, speakers
        )
        info["members"] = members
    logits = np.log(np.clip(fused, 1e-12, None)).astype(np.float32)
    info.update(
        train_speakers=list(speakers["train"]),
        val_speakers=list(speakers["val"]),
        n_train=len(ids["train"]),
        n_val=len(ids["val"]),
        seconds=round(time.perf_counter() - start, 2),
        train_accuracy=float((fused.argmax(1) == y["train"]).mean()),
        train_mean_max_proba=float(fused.max(1).mean()),
    )
    out = TeacherTargets(logits, list(ids["train"]), list(ids["val"]), info)
    if out_dir is not None:
        save_teacher(out_dir, key, out)
    return out


def variant_targets(logits: np.ndarray, train_ids: list[str], sources: list[str]) -> np.ndarray:
    """The soft targets of a student that trains on robustness variants beside its clips: ``logits``
    ``(len(train_ids), n_classes)``, the teacher's targets of the clips ``train_ids``, followed by one row per variant
    (``sources``: the clip each variant copies, in the order the variants follow the clips), that clip's target.

    The teacher hears the clean clip and the student its degraded copy: teacher-student learning on parallel
    clean / degraded audio (Li et al., 2017, "Large-scale domain adaptation via teacher-student learning"), so the
    student is pulled towards what the teacher says of the clean speech, not towards a teacher that was never trained
    on noise and guesses on it. Returns ``(len(train_ids) + len(sources), n_classes)``; a source that is not one of
    ``train_ids`` is a SerError (a variant of a clip the teacher did not label)."""
    row = {u: i for i, u in enumerate(train_ids)}
    if len(row) != len(train_ids) or len(logits) != len(train_ids):
        raise SerError(f"{len(logits)} teacher targets for {len(train_ids)} training clips (or a clip twice)")
    missing = [u for u in sources if u not in row]
    if missing:
        raise SerError(f"a robust variant of {missing[0]!r}, which has no teacher target")
    return np.concatenate([logits, logits[[row[u] for u in sources]]]) if sources else logits


def speaker_groups(row_speakers: list[str], k: int, seed: int) -> list[list[str]]:
    """The training speakers dealt into ``k`` groups for a cross-fitted teacher: sorted, shuffled with ``seed``, then
    cut into ``k`` runs of as equal length as can be (``numpy.array_split``). Shuffled, not dealt in name order, which
    in RAVDESS alternates male (odd) and female (even) actors. Fewer than ``k`` speakers is a ConfigError."""
    names = sorted(set(row_speakers))
    if len(names) < k:
        raise ConfigError(f"distil cross_fit {k} needs at least {k} training speakers, got {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    return [sorted(names[i] for i in part) for part in np.array_split(order, k)]


def _fit_members(
    spec: ModelSpec | EnsembleSpec,
    specs: list[ModelSpec],
    ids: dict[str, list[str]],
    y: dict[str, np.ndarray],
    score: list[str],
    feats: dict[str, dict[str, np.ndarray]],
    n_classes: int,
    seed: int,
    out_dir: Path | None,
    progress: bool,
    adopt: dict[str, Path] | None = None,
    speakers: dict[str, list[str]] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train the teacher's members on ``ids["train"]`` (early stopping on ``ids["val"]``), each in
    ``out_dir/<member>``, and return their fused probabilities ``(len(score), n_classes)`` of the rows ``score`` and
    each member's facts. ``adopt`` / ``speakers``: as :func:`fit_teacher` (adoption needs both)."""
    from ser.train.cv import fit_facts, fit_spec, fuse, utterance_arrays
    from ser.train.data import ArrayDataset
    from ser.train.predict import predict_proba

    probas, members = [], {}
    for m in specs:
        x = {r: utterance_arrays(m, feats, ids[r]) for r in ("train", "val")}
        ckpt = None if out_dir is None else Path(out_dir) / m.name
        adopted = None
        if ckpt is not None and adopt and speakers is not None and m.name in adopt:
            adopted = adopt_member(m, adopt[m.name], ckpt, speakers, len(ids["train"]), seed + m.seed)
        result, cfg = fit_spec(m, x, {r: y[r] for r in ("train", "val")}, n_classes, seed + m.seed, ckpt,
                               progress=progress)  # fmt: skip
        x_score = x["train"] if score == ids["train"] else utterance_arrays(m, feats, score)  # in-sample: trimmed once
        scored = ArrayDataset(x_score, np.zeros(len(score), dtype=np.int64), n_classes=n_classes)
        probas.append(
            predict_proba(result.model, scored, eval_mode=cfg.eval_mode, window=cfg.window_frames(), hop=cfg.eval_hop)
        )
        members[m.name] = fit_facts(result)
        if adopted is not None:
            members[m.name]["adopted_from"] = str(adopted)
    fused = fuse(probas, getattr(spec, "weights", None)) if len(probas) > 1 else probas[0]
    return fused, members


def adopt_member(
    member: ModelSpec,
    fold: Path,
    ckpt: Path,
    speakers: dict[str, list[str]],
    n_train: int,
    seed: int,
    n_variants: int = 0,
) -> Path | None:
    """Copy the checkpoint of ``member``'s finished cross-validation fold (``fold``: ``<run>/<member>/fold_<k>``,
    with ``.json`` facts and a ``_ckpt`` folder) into the teacher's ``ckpt`` folder when that fold trained the
    teacher's member on the teacher's rows: the same recipe (fingerprint), the same validation speakers and number of
    training clips (and ``n_variants`` robust variants: none for a teacher member, whose recipe has no ``robust``
    field; the variants themselves are fixed by the recipe's), none of its test speakers among the teacher's training
    speakers, finished (its last epoch checkpoint marked done) and trained with the member's config and ``seed``
    (where it ran aside). Returns the adopted checkpoint, or None (nothing copied) when the fold is missing,
    unfinished or another one; ``ckpt`` already holding a checkpoint (this teacher's own, half-trained) is left
    alone."""
    from ser.train.checkpoint import same_config
    from ser.train.spec import train_config
    from ser.train.trainer import CHECKPOINT

    src = Path(f"{fold}_ckpt") / CHECKPOINT
    if (ckpt / CHECKPOINT).exists() or not src.is_file():
        return None
    try:
        info = json.loads(Path(f"{fold}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = (
        info.get("spec") == member.fingerprint()
        and sorted(info.get("val_speakers", [None])) == sorted(speakers["val"])
        and info.get("n_train") == n_train
        and info.get("n_train_variants", 0) == n_variants
        and not set(info.get("test_speakers", [])) & set(speakers["train"])
        and bool(info.get("test_speakers"))
        # the training speakers themselves where the fold recorded them (older folds: their count and the disjoint
        # test speakers above stand in)
        and sorted(info.get("train_speakers", speakers["train"])) == sorted(speakers["train"])
    )
    if not same:
        return None
    try:
        blob = torch.load(src, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: train the member instead
        return None
    if not (isinstance(blob, dict) and blob.get("done")):
        return None
    if not same_config(blob.get("config") or {}, train_config(member, seed)):
        return None
    ckpt.mkdir(parents=True, exist_ok=True)
    with atomic_path(ckpt / CHECKPOINT) as tmp:
        shutil.copyfile(src, tmp)
    return src


def _rows_hash(ids: dict[str, list[str]]) -> str:
    data = {r: list(ids[r]) for r in ("train", "val")}
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]


def _claim(out_dir: Path, key: dict[str, Any]) -> None:
    """Make ``out_dir`` this teacher's: a folder left by another teacher or other rows is cleared (its checkpoints
    must not be resumed), one left half-done by this teacher is kept (its members resume)."""
    out_dir = Path(out_dir)
    rec = _read_record(out_dir)
    if rec is None or rec.get("key") != key:
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / TEACHER_RECORD, {"key": key, "done": False})


def _read_record(out_dir: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads((Path(out_dir) / TEACHER_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def save_teacher(out_dir: Path, key: dict[str, Any], targets: TeacherTargets) -> None:
    """Write the targets, then the record marked ``done`` (both atomically: a record never names missing targets)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / TEACHER_TARGETS) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            logits=targets.logits,
            utt_ids=np.array(targets.utt_ids),
            val_utt_ids=np.array(targets.val_utt_ids, dtype=str),
        )
    write_json(out_dir / TEACHER_RECORD, {"key": key, "done": True, "info": targets.info})


def load_teacher(out_dir: Path, key: dict[str, Any] | None = None) -> TeacherTargets | None:
    """The finished teacher kept in ``out_dir`` (for ``key``, when given), or None when there is none."""
    rec = _read_record(out_dir)
    if rec is None or not rec.get("done") or (key is not None and rec.get("key") != key):
        return None
    try:
        with np.load(Path(out_dir) / TEACHER_TARGETS) as z:
            out = TeacherTargets(
                z["logits"], [str(u) for u in z["utt_ids"]], [str(u) for u in z["val_utt_ids"]], rec["info"]
            )
    except (OSError, ValueError, KeyError):
        return None
    return out
