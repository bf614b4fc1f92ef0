"""Speaker-independent cross-validation of model specs over a manifest and its splits.

For each fold of ``splits`` (see :mod:`ser.data.split`): validation speakers are carved out of the fold's
*training* speakers (early stopping and model selection never see the test speakers), the leakage guard is run,
the model is trained on the remaining training speakers (augmentation on training data only: SpecAugment on
training crops, and with a recipe's ``robust`` field degraded variants of the training clips, see
:func:`training_variants`) and the test speakers are predicted whole-clip. Each fold's predictions are written
atomically to ``out_dir/<spec name>/fold_<k>.npz`` + ``.json``, so a killed run resumes at the first missing fold.
Ensembles average the members' saved fold probabilities (late fusion). A recipe with a ``distil`` part
(:mod:`ser.train.distil`) first trains its teacher on the fold's training rows (early stopping on its validation
rows), in the same task, and trains towards the teacher's outputs on those rows; the teacher's targets are kept in
``out_dir/<spec name>/fold_<k>_teacher`` so a resumed run does not train it again.

The specs are :mod:`ser.train.spec` objects; :func:`fit_spec` is where one becomes a training run (cross-validation
folds, :func:`fit_shipped` — the model that ships — and every :mod:`ser.train.tune` trial).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ser.errors import ConfigError, SerError
from ser.executor import LOCAL, Executor
from ser.io import atomic_path, write_json
from ser.model_folder import frame_input
from ser.train.spec import EnsembleSpec, ModelSpec, eval_settings, input_rows, model_input, train_config

if TYPE_CHECKING:
    from ser.train.distil import TeacherTargets

VariantFn = Callable[[pd.DataFrame], dict[str, list[dict[str, np.ndarray]]]]
"""``variants(train_rows) -> {utt_id: [{kind: array}, ...]}``: degraded variants of the training clips it is handed
(:class:`ser.train.robust.VariantSource`)."""


@dataclass
class FoldOutput:
    """Predictions of one fold: ``proba`` ``(n_test, n_classes)``, true class indices, utterance ids, facts."""

    proba: np.ndarray
    y: np.ndarray
    utt_ids: list[str]
    info: dict[str, Any]


# ----------------------------------------------------------------------------------------------------------------
# pure helpers


def fuse(probas: list[np.ndarray], weights: list[float] | None = None) -> np.ndarray:
    """Weighted mean of probability matrices of equal shape; rows still sum to 1."""
    w = np.ones(len(probas)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(probas) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError("ensemble weights must be non-negative, one per member, not all zero")
    out = sum(wi * p for wi, p in zip(w, probas, strict=True)) / w.sum()
    return out / out.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------------------------
# features


def load_frame_features(
    manifest: pd.DataFrame,
    kinds: tuple[str, ...],
    *,
    feature_cfg=None,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = False,
    executor: Executor | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """``{utt_id: {kind: array}}`` through the feature cache; undecodable files are left out (reported upstream).
    A ``ray`` ``executor`` extracts on the Ray cluster (:func:`~ser.features.extract.extract_manifest`)."""
    from ser.features.extract import extract_manifest

    kinds = tuple(sorted(set(kinds)))
    res = extract_manifest(
        manifest, feature_cfg, cache_dir, kinds=kinds, workers=workers, progress=progress, executor=executor
    )
    return res.features


def utterance_arrays(spec: ModelSpec, feats: dict[str, dict[str, np.ndarray]], utt_ids: list[str]) -> list:
    """The model input of each utterance: its functionals, or its trimmed frames
    (:func:`~ser.model_folder.frame_input`)."""
    if spec.features == "functionals":
        return [np.asarray(feats[u]["functionals"], dtype=np.float32) for u in utt_ids]
    return [frame_input(feats[u], spec.features, spec.trim_db, trim=spec.trim) for u in utt_ids]


def training_variants(
    spec: ModelSpec, variants: VariantFn | None, roles: dict[str, pd.DataFrame], train_ids: list[str]
) -> tuple[list[np.ndarray], list[str]]:
    """Model inputs of the robustness variants of the training clips, and the ``utt_id`` each one copies.

    Only the training rows (``roles["train"]`` restricted to ``train_ids``) are ever handed to ``variants``, so a
    validation or test clip cannot get a variant; what comes back is checked anyway: a variant of a clip outside
    ``train_ids`` is a :class:`~ser.errors.LeakageError`, and the variants, as augmented rows of their clip's
    speaker, go through :func:`~ser.data.split.check_leakage` with every role. ``([], [])`` when the recipe has no
    ``robust`` field; a ``robust`` recipe without a variant source is a :class:`~ser.errors.ConfigError` (it would
    train as its recipe without the augmentation, under the augmented recipe's name).
    """
    from ser.data.split import check_leakage
    from ser.errors import LeakageError
    from ser.features import FRAME_KINDS

    if spec.robust is None:
        return [], []
    if variants is None:
        raise ConfigError(
            f"recipe {spec.name} trains on robustness variants, but no variant source was given (the noise "
            "recordings and the variant cache: ser.jobs.train.FeatureSource.variants)"
        )
    if spec.model == "classical" or spec.features not in FRAME_KINDS:
        raise ConfigError(f"recipe {spec.name}: robust variants need a torch model on frame features")
    train = roles["train"][roles["train"]["utt_id"].isin(set(train_ids))].reset_index(drop=True)
    made = variants(train)
    outside = sorted(set(made) - set(train_ids))
    if outside:
        raise LeakageError(
            f"robust variants came back for {len(outside)} clip(s) outside the training set: {outside[0]}"
        )
    speaker = dict(zip(train["utt_id"], train["speaker"], strict=True))
    sources = [u for u in train_ids for _ in made.get(u, [])]
    copies = pd.DataFrame(
        {
            "utt_id": [f"{u}#robust{j}" for u in train_ids for j in range(len(made.get(u, [])))],
            "speaker": [speaker[u] for u in sources],
            "role": "train",
            "augmented": True,
        }
    )
    frames = [df[["utt_id", "speaker"]].assign(role=r, augmented=False) for r, df in roles.items() if len(df)]
    check_leakage(pd.concat([*frames, copies], ignore_index=True).assign(fold=0))
    arrays = [frame_input(v, spec.features, spec.trim_db, trim=spec.trim) for u in train_ids for v in made.get(u, [])]
    return arrays, sources


def add_variants(
    spec: ModelSpec,
    variants: VariantFn | None,
    roles: dict[str, pd.DataFrame],
    train_ids: list[str],
    x: dict[str, list],
    y: dict[str, np.ndarray],
) -> list[str]:
    """Append the training clips' variants (:func:`training_variants`) to ``x/y["train"]``, each with its clip's
    label (``train_ids`` in the order of ``x/y["train"]``); returns the ``utt_id`` each appended row copies (as many
    as were appended; a distilled recipe gives each the teacher's target of its clip,
    :func:`ser.train.distil.variant_targets`). ``val`` and ``test`` are untouched."""
    extra, sources = training_variants(spec, variants, roles, train_ids)
    if extra:
        label = dict(zip(train_ids, y["train"], strict=True))
        x["train"] = x["train"] + extra
        y["train"] = np.concatenate([y["train"], np.array([label[u] for u in sources], dtype=y["train"].dtype)])
    return sources


# ----------------------------------------------------------------------------------------------------------------
# one fold


def fold_inputs(
    spec: ModelSpec,
    roles: dict[str, pd.DataFrame],
    feats: dict[str, dict[str, np.ndarray]],
    classes: list[str],
    variants: VariantFn | None = None,
) -> tuple[dict[str, list[str]], dict[str, list], dict[str, np.ndarray], list[str]]:
    """``(ids, x, y, sources)`` of a fold: per role the utterances with features, their model inputs and class
    indices; ``x/y["train"]`` end with the training clips' robustness variants, ``sources`` the clip each one copies
    (:func:`add_variants`)."""
    index = {c: i for i, c in enumerate(classes)}
    ids = {r: [u for u in roles[r]["utt_id"] if u in feats] for r in ("train", "val", "test")}
    y = {r: np.array([index[e] for e in roles[r].set_index("utt_id").loc[ids[r], "emotion"]]) for r in ids}
    x = {r: utterance_arrays(spec, feats, ids[r]) for r in ids}
    return ids, x, y, add_variants(spec, variants, roles, ids["train"], x, y)


def run_fold(
    spec: ModelSpec,
    roles: dict[str, pd.DataFrame],
    feats: dict[str, dict[str, np.ndarray]],
    classes: list[str],
    *,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = False,
    variants: VariantFn | None = None,
    teacher_dir: Path | None = None,
    teacher_adopt: dict[str, Path] | None = None,
) -> FoldOutput:
    """Train ``spec`` on ``roles['train']`` (early stopping on ``roles['val']``), predict ``roles['test']``.
    With ``variants`` and a ``robust`` recipe, the training clips' variants train beside them
    (:func:`training_variants`). A ``distil`` recipe's teacher is trained on the same training rows first
    (:func:`ser.train.distil.fit_teacher`, kept in ``teacher_dir``; ``seed`` less the recipe's own seed plus each
    member's, as the members would have in cross-validation) and its targets on the training rows feed the student;
    ``teacher_adopt``: the members' own cross-validation folds of this fold, adopted instead of trained when they
    trained on the same rows (:func:`ser.train.distil.adopt_member`).
    """
    start = time.perf_counter()
    ids, x, y, sources = fold_inputs(spec, roles, feats, classes, variants)
    teacher, logits = student_targets(
        spec, roles, ids, y, sources, feats, len(classes), seed - spec.seed, teacher_dir, progress, teacher_adopt
    )
    if spec.model == "classical":
        from ser.models.classical import ClassicalModel

        clf = ClassicalModel(len(classes), x["train"][0].shape[0], **{"seed": seed, **spec.params})
        clf.fit(np.stack(x["train"] + x["val"]), np.concatenate([y["train"], y["val"]]))
        proba = clf.predict_proba(np.stack(x["test"]))
        info: dict[str, Any] = {"n_params": int(clf.n_params()), "device": "cpu"}
    else:
        proba, info = _fit_torch(spec, x, y, len(classes), seed, out_dir, progress, logits)
    if teacher is not None:
        info["teacher"] = teacher.info
    info.update(
        # a resumed fold: this call's wall time plus the restored epochs' training time (a killed run's)
        seconds=round(time.perf_counter() - start + info.get("seconds_before_resume", 0.0), 2),
        n_train=len(ids["train"]),
        n_train_variants=len(sources),
        n_val=len(ids["val"]),
        n_test=len(ids["test"]),
        train_speakers=sorted(roles["train"]["speaker"].unique().tolist()),
        val_speakers=sorted(roles["val"]["speaker"].unique().tolist()),
        test_speakers=sorted(roles["test"]["speaker"].unique().tolist()),
    )
    return FoldOutput(proba=proba, y=y["test"], utt_ids=ids["test"], info=info)


def student_targets(
    spec: ModelSpec,
    roles: dict[str, pd.DataFrame],
    ids: dict[str, list[str]],
    y: dict[str, np.ndarray],
    sources: list[str],
    feats: dict[str, dict[str, np.ndarray]],
    n_classes: int,
    seed: int,
    teacher_dir: Path | None,
    progress: bool = False,
    adopt: dict[str, Path] | None = None,
) -> tuple[TeacherTargets | None, np.ndarray | None]:
    """``(teacher, soft targets)`` of a ``distil`` recipe's student, ``(None, None)`` for any other recipe.

    The teacher (:func:`ser.train.distil.fit_teacher`, kept in ``teacher_dir``) is trained on the clips
    ``ids["train"]`` (early stopping on ``ids["val"]``): only the training and validation rows are handed over,
    never the test rows, and never the robust variants that ``y["train"]`` carries after the clips. The targets
    ``(len(ids["train"]) + len(sources), n_classes)`` are its outputs on those clips, then each variant's clip's
    (``sources``: :func:`add_variants`; :func:`ser.train.distil.variant_targets`). ``seed``: the teacher's (the run's,
    without the student recipe's own seed). ``adopt``: the teacher members' cross-validation folds to adopt when
    they match."""
    from ser.train.distil import fit_teacher, variant_targets

    if spec.distil is None:
        return None, None
    y = {"train": y["train"][: len(ids["train"])], "val": y["val"]}  # the clips, not their robust variants after them
    by_id = {r: roles[r].set_index("utt_id")["speaker"].astype(str) for r in ("train", "val")}
    row_speakers = {r: by_id[r].loc[ids[r]].tolist() for r in ("train", "val")}
    speakers = {r: sorted(set(row_speakers[r])) for r in ("train", "val")}
    teacher = fit_teacher(
        spec.distil,
        {r: ids[r] for r in ("train", "val")},
        {r: y[r] for r in ("train", "val")},
        speakers,
        feats,
        n_classes,
        seed=seed,
        out_dir=teacher_dir,
        progress=progress,
        adopt=adopt,
        row_speakers=row_speakers["train"],
    )
    if teacher.utt_ids != ids["train"]:  # pragma: no cover - fit_teacher keys its stored targets on the rows
        raise SerError("the teacher's targets are not those of the fold's training rows")
    return teacher, variant_targets(teacher.logits, ids["train"], sources)


def fit_spec(
    spec: ModelSpec,
    x: dict[str, list],
    y: dict[str, np.ndarray],
    n_classes: int,
    seed: int,
    out_dir: Path | None = None,
    *,
    progress: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    teacher_logits: np.ndarray | None = None,
):
    """Fit the torch model of ``spec`` on ``x/y['train']`` (SpecAugment on training crops only) with early stopping
    on ``x/y['val']`` (none when it is empty); resumes from ``out_dir`` when given. The one place a recipe becomes a
    training run: cross-validation folds, the model that ships and every tuning trial come through here.
    ``on_epoch`` as :func:`ser.train.trainer.fit`. ``teacher_logits`` ``(n_train, n_classes)``: a ``distil``
    recipe's soft targets for ``x["train"]`` (required by one, refused without). Returns ``(TrainResult,
    TrainConfig)``."""
    from ser.augment import make_augment_config, spec_augment
    from ser.train.data import ArrayDataset
    from ser.train.trainer import fit

    if spec.distil is not None and teacher_logits is None:
        raise ConfigError(
            f"recipe {spec.name} distils from {spec.distil.teacher}: train it through cross-validation or the "
            "shipped model (which train its teacher first), not on its own"
        )
    cfg = train_config(spec, seed)
    transform = None
    if spec.augment is not None:
        aug = make_augment_config(spec.augment)

        def transform(arr, rng):
            return spec_augment(arr, aug, rng)

    train_ds = ArrayDataset(
        x["train"], y["train"], n_classes=n_classes, transform=transform, teacher_logits=teacher_logits
    )
    val_ds = ArrayDataset(x["val"], y["val"], n_classes=n_classes) if len(x["val"]) else None
    result = fit(train_ds, val_ds, cfg, out_dir, progress=progress, resume=out_dir is not None, on_epoch=on_epoch)
    return result, cfg


def _fit_torch(spec, x, y, n_classes, seed, out_dir, progress, teacher_logits=None):
    from ser.train.data import ArrayDataset
    from ser.train.predict import predict_proba

    result, cfg = fit_spec(spec, x, y, n_classes, seed, out_dir, progress=progress, teacher_logits=teacher_logits)
    test_ds = ArrayDataset(x["test"], y["test"], n_classes=n_classes)
    proba = predict_proba(result.model, test_ds, eval_mode=cfg.eval_mode)
    return proba, fit_facts(result)


def fit_facts(result) -> dict[str, Any]:
    """The facts of one training (:class:`~ser.train.trainer.TrainResult`) a fold or a teacher member records:
    size, best and last epoch, device, and what a resume restored (epochs, and their training time)."""
    return {
        "n_params": int(result.model.n_params()),
        "best_epoch": int(result.best_epoch),
        "best_val_uar": None if result.best_val_uar is None else float(result.best_val_uar),
        "epochs_run": int(result.epochs_run),
        "device": device_name(result.device),
        "resumed_epochs": result.resumed_epochs,
        "seconds_before_resume": round(result.seconds_before_resume, 2),
    }


def device_name(device: str) -> str:
    """``cpu``, or ``cuda (<GPU name>)`` for a CUDA device: which hardware trained a fold."""
    import torch

    dev = torch.device(device)
    return f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else dev.type


# ----------------------------------------------------------------------------------------------------------------
# folds on disk


def _fold_paths(out_dir: Path, name: str, fold: int) -> tuple[Path, Path]:
    d = out_dir / name
    return d / f"fold_{fold}.npz", d / f"fold_{fold}.json"


def save_fold(out_dir: Path, name: str, fold: int, out: FoldOutput) -> None:
    npz, meta = _fold_paths(out_dir, name, fold)
    npz.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(npz) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, proba=out.proba, y=out.y, utt_ids=np.array(out.utt_ids))
    write_json(meta, out.info)


def load_fold(out_dir: Path, name: str, fold: int) -> FoldOutput | None:
    """A saved fold, or None when it is missing or unreadable (then it is recomputed)."""
    npz, meta = _fold_paths(out_dir, name, fold)
    if not (npz.is_file() and meta.is_file()):
        return None
    try:
        with np.load(npz) as z:
            return FoldOutput(z["proba"], z["y"], [str(u) for u in z["utt_ids"]], json.loads(meta.read_text()))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None


# ----------------------------------------------------------------------------------------------------------------
# the protocol


def fold_roles(manifest: pd.DataFrame, splits: pd.DataFrame, fold: int, val_speakers: int, seed: int) -> dict:
    """Train / val / test manifest rows of ``fold``; val speakers are carved out of training when splits lack val."""
    from ser.data.split import carve_validation, check_leakage, fold_frames

    roles = fold_frames(manifest, splits, fold)
    if roles.get("val") is None or len(roles.get("val", [])) == 0:
        roles["train"], roles["val"] = carve_validation(roles["train"], val_speakers, seed + fold)
    frame = pd.concat([df.assign(role=r, fold=fold) for r, df in roles.items()], ignore_index=True)
    check_leakage(frame)
    return roles


def cross_validate(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    spec: ModelSpec,
    feats: dict[str, dict[str, np.ndarray]],
    classes: list[str],
    out_dir: str | Path,
    *,
    folds: list[int] | None = None,
    seed: int = 0,
    progress: bool = False,
    log=None,
    variants: VariantFn | None = None,
    executor: Executor | None = None,
) -> list[FoldOutput]:
    """Run (or resume) every fold of ``spec``; returns the fold outputs in fold order. ``variants``: the source of
    robustness variants for a ``robust`` recipe (handed each fold's training rows only)."""
    outputs = cross_validate_members(
        manifest,
        splits,
        [spec],
        feats,
        classes,
        out_dir,
        folds=folds,
        seed=seed,
        progress=progress,
        log=log,
        executor=executor,
        variants_for=None if variants is None else (lambda _s: variants),
    )
    return outputs[spec.name]


@dataclass(frozen=True)
class FoldTask:
    """One fold of one spec to train: what :func:`run_fold_task` needs besides the shared features."""

    spec: ModelSpec
    fold: int
    roles: dict[str, pd.DataFrame]
    seed: int
    ckpt: Path
    variants: VariantFn | None = None
    teacher_dir: Path | None = None
    teacher_adopt: dict[str, Path] | None = None


def run_fold_task(
    task: FoldTask,
    *,
    feats: dict[str, dict[str, np.ndarray]],
    classes: list[str],
    threads: int | None = None,
    progress: bool = False,
) -> FoldOutput:
    """:func:`run_fold` of ``task`` (an :meth:`~ser.executor.Executor.map_tasks` task: here or in a Ray worker,
    torch pinned to ``threads``)."""
    pin_threads(threads)
    return run_fold(
        task.spec,
        task.roles,
        feats,
        classes,
        seed=task.seed,
        out_dir=task.ckpt,
        progress=progress,
        variants=task.variants,
        teacher_dir=task.teacher_dir,
        teacher_adopt=task.teacher_adopt,
    )


def pin_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` unless None: a Ray worker uses what its task reserved, not every core."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def cross_validate_members(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    specs: list[ModelSpec],
    feats: dict[str, dict[str, np.ndarray]],
    classes: list[str],
    out_dir: str | Path,
    *,
    folds: list[int] | None = None,
    seed: int = 0,
    progress: bool = False,
    log=None,
    executor: Executor | None = None,
    variants_for: Callable[[ModelSpec], VariantFn | None] | None = None,
) -> dict[str, list[FoldOutput]]:
    """Run (or resume) every fold of every spec (an ensemble's members) as one set of ``executor`` tasks; returns
    ``{spec name: fold outputs in fold order}``. A fold is saved as soon as its task finishes, so a killed run
    resumes at the folds still missing; ``log(name, fold, output)`` is called for each fold read back, then for
    each one trained as it finishes. ``variants_for(spec)``: the source of robustness variants of a spec with a
    ``robust`` field (handed each fold's training rows only, in the task). A ``distil`` spec's fold task trains its
    teacher first (``out_dir/<name>/fold_<k>_teacher``, kept when only the student's recipe changed), adopting a
    teacher member's own fold of this run folder when it finished on the same rows (an ensemble cross-validated here
    before makes its distillation cost only the student)."""
    from ser.data.split import n_folds

    out_dir = Path(out_dir)
    folds = list(range(n_folds(splits))) if folds is None else folds
    executor = executor or LOCAL
    source = variants_for or (lambda _s: None)
    outputs: dict[tuple[str, int], FoldOutput] = {}
    tasks: list[FoldTask] = []
    for spec in specs:
        spec_seed = seed + spec.seed
        fingerprint = spec.fingerprint()
        for k in folds:
            done = load_fold(out_dir, spec.name, k)
            if done is not None and done.info.get("spec", fingerprint) != fingerprint:
                done = None  # saved by another version of this spec: rerun (the checkpoint folder too)
                shutil.rmtree(out_dir / spec.name / f"fold_{k}_ckpt", ignore_errors=True)
            if done is None:
                roles = fold_roles(manifest, splits, k, spec.val_speakers, spec_seed)
                ckpt = out_dir / spec.name / f"fold_{k}_ckpt"
                teacher, adopt = None, None
                if spec.distil is not None:
                    from ser.train.distil import teacher_members

                    teacher = out_dir / spec.name / f"fold_{k}_teacher"
                    adopt = {m.name: out_dir / m.name / f"fold_{k}" for m in teacher_members(spec.distil)[1]}
                tasks.append(FoldTask(spec, k, roles, spec_seed + k, ckpt, source(spec), teacher, adopt))
                continue
            if log is not None:
                log(spec.name, k, done)
            outputs[(spec.name, k)] = done

    def finished(i: int, out: FoldOutput) -> None:
        task = tasks[i]
        out.info["spec"] = task.spec.fingerprint()
        save_fold(out_dir, task.spec.name, task.fold, out)
        if log is not None:
            log(task.spec.name, task.fold, out)
        outputs[(task.spec.name, task.fold)] = out

    shared = {"feats": feats, "classes": classes, "threads": executor.task_threads, "progress": progress}
    if executor.is_ray:
        shared["progress"] = False  # a worker's output does not reach this terminal
    executor.map_tasks(run_fold_task, tasks, shared=shared, on_result=finished)
    return {s.name: [outputs[(s.name, k)] for k in folds] for s in specs}


def ensemble_folds(members: list[list[FoldOutput]], weights: list[float] | None = None) -> list[FoldOutput]:
    """Fuse members fold by fold; every member must have predicted the same utterances in the same order."""
    fused = []
    for parts in zip(*members, strict=True):
        if any(p.utt_ids != parts[0].utt_ids for p in parts):
            raise SerError("ensemble members predicted different test utterances")
        info = {
            "seconds": round(sum(p.info.get("seconds", 0.0) for p in parts), 2),
            "n_params": int(sum(p.info.get("n_params", 0) for p in parts)),
        }
        devices = sorted({p.info["device"] for p in parts if "device" in p.info})
        if devices:
            info["device"] = " + ".join(devices)
        fused.append(FoldOutput(fuse([p.proba for p in parts], weights), parts[0].y, parts[0].utt_ids, info))
    return fused


# ----------------------------------------------------------------------------------------------------------------
# the model that ships


def fit_final(
    spec: ModelSpec,
    manifest: pd.DataFrame,
    feats: dict[str, dict[str, np.ndarray]],
    classes: list[str],
    *,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = False,
    variants: VariantFn | None = None,
):
    """Train the model that ships on *every* speaker of ``manifest`` (``spec.val_speakers`` whole speakers carved
    out for early stopping), after cross-validation has estimated how such a model does on unseen speakers.

    Returns ``(model, info)``: a torch :class:`~ser.models.base.SerModel` in eval mode (best validation epoch) and
    facts about the run. Resumes from ``out_dir`` when a checkpoint is there. A ``distil`` recipe trains its teacher
    on the same training speakers first (kept in ``out_dir/teacher``); only the student comes back, and
    ``info["distilled_from"]`` says from which teacher.
    """
    from ser.data.split import carve_validation

    if spec.model == "classical":
        raise ConfigError("the pipeline ships torch models (exported to ONNX); choose cnn, tdnn, rnn or crnn")
    frame = manifest[manifest["utt_id"].isin(feats.keys()) & manifest["emotion"].isin(classes)]
    seed += spec.seed
    train, val = carve_validation(frame, spec.val_speakers, seed)
    index = {c: i for i, c in enumerate(classes)}
    roles = {"train": train, "val": val}
    x = {r: utterance_arrays(spec, feats, df["utt_id"].tolist()) for r, df in roles.items()}
    y = {r: np.array([index[e] for e in df["emotion"]]) for r, df in roles.items()}
    start = time.perf_counter()
    sources = add_variants(spec, variants, roles, train["utt_id"].tolist(), x, y)
    ids = {r: df["utt_id"].tolist() for r, df in roles.items()}
    teacher_dir = None if out_dir is None else Path(out_dir) / "teacher"
    teacher, logits = student_targets(
        spec, roles, ids, y, sources, feats, len(classes), seed - spec.seed, teacher_dir, progress
    )
    result, cfg = fit_spec(spec, x, y, len(classes), seed, out_dir, progress=progress, teacher_logits=logits)
    info = {
        "seconds": round(time.perf_counter() - start + result.seconds_before_resume, 2),
        **fit_facts(result),
        "n_train": len(train),
        "n_train_variants": len(sources),
        "n_val": len(val),
        "train_speakers": sorted(train["speaker"].unique().tolist()),
        "val_speakers": sorted(val["speaker"].unique().tolist()),
        **eval_settings(cfg),
    }
    if teacher is not None and spec.distil is not None:
        info["distilled_from"] = {
            "teacher": spec.distil.teacher,
            "alpha": spec.distil.alpha,
            "temperature": spec.distil.temperature,
            **{k: teacher.info[k] for k in ("fingerprint", "members", "seconds", "train_accuracy")},
        }
    return result.model.cpu().eval(), info


def fit_shipped(
    spec: ModelSpec | EnsembleSpec,
    member_specs: list[ModelSpec],
    manifest: pd.DataFrame,
    feats: dict[str, dict[str, np.ndarray]],
    classes: list[str],
    *,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = False,
    variants_for: Callable[[ModelSpec], VariantFn | None] | None = None,
    executor: Executor | None = None,
):
    """The model that ships for ``spec``: :func:`fit_final` of a model spec, or of every member of an ensemble
    (each in ``out_dir/<member>``) joined into one :class:`~ser.models.ensemble.Ensemble` module. Each model is
    an ``executor`` task (an ensemble's members train side by side on Ray).

    Returns ``(model, info)``; ``info["input"]`` is the model's input (:func:`model_input`: the frame kind, or
    the kinds an ensemble of members on different features reads stacked, and the trimming). An ensemble's
    ``info`` is its first member's facts plus ``members`` (each member's). ``variants_for(member)``: the source
    of robustness variants of a member with a ``robust`` field.
    """
    executor = executor or LOCAL
    source = variants_for or (lambda _m: None)
    shared = {
        "manifest": manifest,
        "feats": feats,
        "classes": classes,
        "seed": seed,
        "threads": executor.task_threads,
        "progress": progress and not executor.is_ray,
    }
    if isinstance(spec, ModelSpec):
        ((model, info),) = executor.map_tasks(run_final_task, [(spec, out_dir, source(spec))], shared=shared)
        return model, {**info, "input": {"kind": spec.features, "trim": spec.trim, "trim_db": spec.trim_db}}
    from ser.models.ensemble import Ensemble

    try:
        inp = model_input(member_specs)
    except ConfigError as exc:
        raise ConfigError(f"ensemble {spec.name}: {exc}") from None
    modes = {json.dumps(eval_settings(train_config(m))) for m in member_specs}
    if len(modes) != 1:  # checked before hours of training, not after
        raise ConfigError(f"ensemble {spec.name}: members must evaluate the same way (eval_mode, window, hop)")
    tasks = [(m, None if out_dir is None else Path(out_dir) / m.name, source(m)) for m in member_specs]
    fitted = executor.map_tasks(run_final_task, tasks, shared=shared)
    models = [model for model, _ in fitted]
    infos = {m.name: info for m, (_, info) in zip(member_specs, fitted, strict=True)}
    first = infos[member_specs[0].name]
    info = {
        **first,
        "seconds": round(sum(i["seconds"] for i in infos.values()), 2),
        "best_val_uar": None,
        "members": infos,
        "input": inp,
    }
    return Ensemble.of(models, spec.weights, input_rows(member_specs, [m.n_features for m in models])), info


def run_final_task(
    task: tuple[ModelSpec, Path | None, VariantFn | None],
    *,
    manifest: pd.DataFrame,
    feats: dict[str, dict[str, np.ndarray]],
    classes: list[str],
    seed: int = 0,
    threads: int | None = None,
    progress: bool = False,
):
    """:func:`fit_final` of ``task`` ``(spec, checkpoint folder, robustness variants)`` as an
    :meth:`~ser.executor.Executor.map_tasks` task (torch pinned to ``threads``); returns ``(model, info)``, the
    model on the CPU."""
    pin_threads(threads)
    spec, out_dir, variants = task
    return fit_final(spec, manifest, feats, classes, seed=seed, out_dir=out_dir, progress=progress, variants=variants)
