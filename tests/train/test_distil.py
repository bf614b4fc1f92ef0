"""Knowledge distillation (:mod:`ser.train.distil`): the loss against a value worked out by hand, a student pulled
towards a fixed teacher, the per-fold teacher trained on the fold's training speakers only and kept for a resumed
run, the shipped model being the student alone (the cnn's parameters, one ONNX graph), and the ``cnn-distil``
recipe."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ser.errors import ConfigError, SerError
from ser.models import build_model
from ser.train import ArrayDataset, TrainConfig, fit, predict_proba
from ser.train.cv import cross_validate, fit_shipped, fold_roles
from ser.train.distil import TEACHER_RECORD, TEACHER_TARGETS, distillation_loss, load_teacher
from ser.train.recipes import RECIPES, feature_kinds, get_recipe
from ser.train.spec import DistilConfig, EnsembleSpec, ModelSpec
from tests.train.test_trainer import cfg, toy
from tests.train.test_tune import CLASSES, TINY_CNN, synthetic

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------------------------
# the loss


def test_distillation_loss_matches_a_value_worked_out_by_hand():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 1])
    alpha, temp = 0.6, 2.0

    def softmax(row):
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    kl = 0.0
    for srow, trow in zip(s.tolist(), t.tolist(), strict=True):
        p = softmax([v / temp for v in trow])  # the teacher, softened
        q = softmax([v / temp for v in srow])  # the student, softened
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    kl /= 2  # batch mean
    ce = -(math.log(softmax(s[0].tolist())[0]) + math.log(softmax(s[1].tolist())[1])) / 2
    want = alpha * temp**2 * kl + (1 - alpha) * ce
    got = distillation_loss(s, t, y, alpha=alpha, temperature=temp)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # a teacher's log-probabilities give the same loss as its logits (softmax ignores a shift per row)
    shifted = distillation_loss(s, torch.log_softmax(t, 1), y, alpha=alpha, temperature=temp)
    assert shifted.item() == pytest.approx(want, rel=1e-6)


def test_alpha_zero_is_the_hard_loss_and_alpha_one_ignores_the_labels():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 1])
    assert torch.equal(distillation_loss(s, t, y, alpha=0.0, temperature=3.0), F.cross_entropy(s, y))
    criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 1.0]), label_smoothing=0.1)
    assert torch.equal(distillation_loss(s, t, y, alpha=0.0, temperature=3.0, hard_loss=criterion), criterion(s, y))
    other = torch.tensor([3, 2, 1, 0, 0])
    one = distillation_loss(s, t, y, alpha=1.0, temperature=3.0)
    assert torch.equal(one, distillation_loss(s, t, other, alpha=1.0, temperature=3.0))
    assert distillation_loss(t, t, y, alpha=1.0, temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="alpha"):
        distillation_loss(s, t, y, alpha=1.5, temperature=3.0)
    with pytest.raises(ConfigError, match="temperature"):
        distillation_loss(s, t, y, alpha=0.5, temperature=0.0)
    with pytest.raises(SerError, match="teacher"):
        distillation_loss(s, t[:, :3], y, alpha=0.5, temperature=3.0)


# ----------------------------------------------------------------------------------------------------------------
# the trainer


def _fixed_teacher(labels: np.ndarray) -> np.ndarray:
    """Soft targets unlike the labels: 0.55 on the label, 0.35 on the next class, 0.05 on the other two."""
    p = np.full((len(labels), 4), 0.05)
    p[np.arange(len(labels)), labels] = 0.55
    p[np.arange(len(labels)), (labels + 1) % 4] = 0.35
    return np.log(p)


def test_a_student_is_pulled_towards_its_teachers_outputs():
    _, _, feats = synthetic(n_speakers=4, per_class=6)
    x = [f["logmel"] for f in feats.values()]
    y = np.array([CLASSES.index(u.split("/")[1].split("_")[0]) for u in feats])
    train = ArrayDataset(x, y, n_classes=4)
    teacher = _fixed_teacher(y)
    soft = ArrayDataset(x, y, n_classes=4, teacher_logits=teacher)
    base = dict(model="cnn", model_params=TINY_CNN["params"], **{**TINY_CNN["train"], "epochs": 8}, device="cpu")
    base["class_weighting"] = False
    distilled = fit(soft, None, TrainConfig(**base, distil={"alpha": 1.0, "temperature": 1.0}))
    plain = fit(train, None, TrainConfig(**base))
    target, nxt, rows = np.exp(teacher), (y + 1) % 4, np.arange(len(y))
    p_d, p_p = predict_proba(distilled.model, train), predict_proba(plain.model, train)
    assert np.abs(p_d - target).mean() < 0.5 * np.abs(p_p - target).mean()
    assert 0.2 < p_d[rows, nxt].mean() < 0.5  # the teacher's 0.35 on the next class, learnt from the teacher alone
    assert p_p[rows, nxt].mean() < 0.1  # the labels alone push it down
    assert (p_d.argmax(1) == y).mean() >= 0.9  # the teacher's top class is the label: so is the student's


def test_teacher_outputs_go_with_training_data_only():
    train, val = toy(16, 0), toy(8, 1)
    teacher = _fixed_teacher(train.labels)
    with pytest.raises(SerError, match="teacher logits of shape"):
        ArrayDataset(train.arrays, train.labels, n_classes=4, teacher_logits=teacher[:5])
    with pytest.raises(SerError, match="NaN"):
        ArrayDataset(train.arrays, train.labels, n_classes=4, teacher_logits=teacher * np.nan)
    soft = ArrayDataset(train.arrays, train.labels, n_classes=4, teacher_logits=teacher)
    np.testing.assert_array_equal(soft.subset([3, 1]).teacher_logits, teacher[[3, 1]].astype(np.float32))
    distil = {"alpha": 0.5, "temperature": 2.0}
    with pytest.raises(ConfigError, match="no teacher logits"):
        fit(train, None, cfg(epochs=1, distil=distil))
    with pytest.raises(ConfigError, match="no distil settings"):
        fit(soft, None, cfg(epochs=1))
    val_soft = ArrayDataset(val.arrays, val.labels, n_classes=4, teacher_logits=_fixed_teacher(val.labels))
    with pytest.raises(SerError, match="validation data must not carry teacher outputs"):
        fit(soft, val_soft, cfg(epochs=1, distil=distil))
    with pytest.raises(ConfigError, match="mixup"):
        TrainConfig.from_dict({"distil": distil, "mixup": 0.4})


# ----------------------------------------------------------------------------------------------------------------
# cross-validation and the shipped model


@pytest.fixture(scope="module")
def data():
    return synthetic(n_speakers=6, per_class=4)


@pytest.fixture
def teacher_pair(monkeypatch):
    """A teacher recipe ``tiny-pair``: two tiny CNNs (seeds 0 and 1) fused, trained for 3 epochs."""
    base = get_recipe("cnn", TINY_CNN)
    for s in (0, 1):
        m = base.model_copy(update={"name": f"tiny-t{s}", "seed": s, "train": {**base.train, "epochs": 3}})
        monkeypatch.setitem(RECIPES, m.name, m)
    monkeypatch.setitem(RECIPES, "tiny-pair", EnsembleSpec(name="tiny-pair", members=["tiny-t0", "tiny-t1"]))
    return "tiny-pair"


def _student(teacher: str, val_speakers: int = 1, **distil) -> ModelSpec:
    base = get_recipe("cnn", TINY_CNN)
    return base.model_copy(
        update={
            "name": "student",
            "val_speakers": val_speakers,
            "train": {**base.train, "epochs": 2},
            "distil": DistilConfig(teacher=teacher, **distil),
        }
    )


def test_each_folds_teacher_trains_on_that_folds_training_speakers_only_and_is_kept(data, teacher_pair, tmp_path):
    manifest, splits, feats = data
    student = _student(teacher_pair)
    (out,) = cross_validate(manifest, splits, student, feats, CLASSES, tmp_path, folds=[1], seed=2)
    rec = out.info["teacher"]
    roles = fold_roles(manifest, splits, 1, student.val_speakers, 2 + student.seed)  # the fold, worked out again
    train_spk, val_spk = set(roles["train"]["speaker"]), set(roles["val"]["speaker"])
    test_spk = set(roles["test"]["speaker"])
    assert val_spk and test_spk and train_spk  # every role is there, so the checks below can fail
    # what was recorded: trained on the fold's training speakers, stopped early on its validation speakers
    assert set(rec["train_speakers"]) == train_spk == set(out.info["train_speakers"])
    assert set(rec["val_speakers"]) == val_spk == set(out.info["val_speakers"])
    assert not set(rec["train_speakers"]) & (test_spk | val_spk)
    assert not set(rec["val_speakers"]) & test_spk
    assert set(rec["members"]) == {"tiny-t0", "tiny-t1"} and rec["teacher"] == "tiny-pair"
    # the stored soft targets: exactly the training rows, none of validation or test
    folder = tmp_path / "student" / "fold_1_teacher"
    kept = load_teacher(folder)
    assert kept is not None and kept.utt_ids == [u for u in roles["train"]["utt_id"]]
    assert kept.val_utt_ids == list(roles["val"]["utt_id"])
    assert not set(kept.utt_ids) & (set(out.utt_ids) | set(kept.val_utt_ids))
    assert kept.logits.shape == (len(roles["train"]), len(CLASSES))
    np.testing.assert_allclose(np.exp(kept.logits).sum(1), 1.0, rtol=1e-5)
    assert (folder / "tiny-t1" / "last.pt").is_file()  # each member's checkpoint, for a resumed teacher

    # a killed run: the student's fold is trained again, the finished teacher is read back, not retrained
    stamp = (folder / TEACHER_TARGETS).stat().st_mtime_ns
    (tmp_path / "student" / "fold_1.npz").unlink()
    (again,) = cross_validate(manifest, splits, student, feats, CLASSES, tmp_path, folds=[1], seed=2)
    assert (folder / TEACHER_TARGETS).stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.proba, out.proba)
    # another alpha is another student (its fingerprint), from the same teacher
    other = _student(teacher_pair, alpha=0.2)
    assert other.fingerprint() != student.fingerprint()
    (changed,) = cross_validate(manifest, splits, other, feats, CLASSES, tmp_path, folds=[1], seed=2)
    assert (folder / TEACHER_TARGETS).stat().st_mtime_ns == stamp
    assert not np.array_equal(changed.proba, out.proba)
    # another teacher recipe trains the teacher again (and is another student)
    longer = _student(teacher_pair, teacher_overrides={"train": {"epochs": 4}})
    assert longer.fingerprint() != student.fingerprint()
    (retrained,) = cross_validate(manifest, splits, longer, feats, CLASSES, tmp_path, folds=[1], seed=2)
    assert (folder / TEACHER_TARGETS).stat().st_mtime_ns != stamp
    assert {m["epochs_run"] for m in retrained.info["teacher"]["members"].values()} == {4}


def test_a_cross_fitted_teacher_labels_each_speaker_with_a_teacher_that_never_heard_it(data, teacher_pair, tmp_path):
    from ser.train.distil import speaker_groups

    manifest, splits, feats = data
    student = _student(teacher_pair, cross_fit=2)
    assert student.fingerprint() != _student(teacher_pair).fingerprint()
    (out,) = cross_validate(manifest, splits, student, feats, CLASSES, tmp_path, folds=[1], seed=2)
    rec = out.info["teacher"]
    roles = fold_roles(manifest, splits, 1, student.val_speakers, 2 + student.seed)
    train = roles["train"]
    assert rec["cross_fit"] == 2 and len(rec["parts"]) == 2 and rec["seed"] == 3  # the fold's seed, 2 + fold 1
    groups = [set(p["speakers"]) for p in rec["parts"]]
    assert groups[0] and groups[1] and not groups[0] & groups[1]
    assert groups[0] | groups[1] == set(train["speaker"]) == set(rec["train_speakers"])
    for g, part in zip(groups, rec["parts"], strict=True):  # each part trained on the others, scored its own
        assert part["n_scored"] == int(train["speaker"].isin(g).sum())
        assert part["n_train"] == len(train) - part["n_scored"]
        assert set(part["members"]) == {"tiny-t0", "tiny-t1"}
    folder = tmp_path / "student" / "fold_1_teacher"
    kept = load_teacher(folder)
    assert kept is not None and kept.utt_ids == list(train["utt_id"])
    assert kept.logits.shape == (len(train), len(CLASSES))
    np.testing.assert_allclose(np.exp(kept.logits).sum(1), 1.0, rtol=1e-5)
    for g in range(2):
        assert (folder / f"part_{g}" / "tiny-t1" / "last.pt").is_file()

    # the targets of group 0 are what a teacher trained on group 1's rows alone says of them (worked out again)
    from ser.train.cv import fit_spec, utterance_arrays
    from ser.train.recipes import members

    held = train["speaker"].isin(groups[0]).to_numpy()
    y_all = np.array([CLASSES.index(e) for e in train["emotion"]])
    val_ids = list(roles["val"]["utt_id"])
    y_val = np.array([CLASSES.index(e) for e in roles["val"]["emotion"]])
    probas = []
    for m in members([get_recipe(teacher_pair)]):
        rows = [u for u, h in zip(train["utt_id"], held, strict=True) if not h]
        x = {"train": utterance_arrays(m, feats, rows), "val": utterance_arrays(m, feats, val_ids)}
        result, c = fit_spec(m, x, {"train": y_all[~held], "val": y_val}, len(CLASSES), rec["seed"] + m.seed, None)
        scored = [u for u, h in zip(train["utt_id"], held, strict=True) if h]
        ds = ArrayDataset(utterance_arrays(m, feats, scored), y_all[held], n_classes=len(CLASSES))
        probas.append(predict_proba(result.model, ds, eval_mode=c.eval_mode, window=c.window_frames(), hop=c.eval_hop))
    np.testing.assert_allclose(np.exp(kept.logits[held]), np.mean(probas, axis=0), atol=1e-4)

    # a killed run reads the finished teacher back; an in-sample teacher in the same folder is another teacher
    stamp = (folder / TEACHER_TARGETS).stat().st_mtime_ns
    (tmp_path / "student" / "fold_1.npz").unlink()
    (again,) = cross_validate(manifest, splits, student, feats, CLASSES, tmp_path, folds=[1], seed=2)
    assert (folder / TEACHER_TARGETS).stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.proba, out.proba)
    (plain,) = cross_validate(manifest, splits, _student(teacher_pair), feats, CLASSES, tmp_path, folds=[1], seed=2)
    assert "parts" not in plain.info["teacher"] and not (folder / "part_0").exists()

    # the groups: seeded, every speaker once, as even as can be; too few speakers or one group is refused
    spk = [f"s{i:02d}" for i in range(20) for _ in range(3)]
    dealt = speaker_groups(spk, 3, seed=0)
    assert sorted(s for g in dealt for s in g) == sorted(set(spk)) and sorted(len(g) for g in dealt) == [6, 7, 7]
    assert dealt == speaker_groups(spk, 3, seed=0) and dealt != speaker_groups(spk, 3, seed=1)
    assert all(len({int(s[1:]) % 2 for s in g}) == 2 for g in dealt)  # odd and even names mixed, not dealt by name
    with pytest.raises(ConfigError, match="at least 3 training speakers"):
        speaker_groups(["a", "b"], 3, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        DistilConfig(teacher="cnn", cross_fit=1)


def test_a_teacher_adopts_its_members_folds_finished_on_the_same_rows(data, monkeypatch, tmp_path):
    from ser.train.cv import cross_validate_members

    manifest, splits, feats = data
    base = get_recipe("cnn", TINY_CNN)
    members = [
        base.model_copy(update={"name": f"v-t{s}", "seed": s, "val_speakers": 0, "train": {**base.train, "epochs": 2}})
        for s in (0, 1)
    ]
    for m in members:
        monkeypatch.setitem(RECIPES, m.name, m)
    monkeypatch.setitem(RECIPES, "v-pair", EnsembleSpec(name="v-pair", members=["v-t0", "v-t1"]))
    cross_validate_members(manifest, splits, members, feats, CLASSES, tmp_path, folds=[0], seed=2)  # the ensemble's
    student = _student("v-pair", val_speakers=0)
    (out,) = cross_validate(manifest, splits, student, feats, CLASSES, tmp_path, folds=[0], seed=2)
    got = out.info["teacher"]["members"]
    assert {m: v.get("adopted_from") for m, v in got.items()} == {
        m: str(tmp_path / m / "fold_0_ckpt" / "last.pt") for m in ("v-t0", "v-t1")
    }
    assert {v["epochs_run"] for v in got.values()} == {2}
    # the same targets as a teacher trained here from scratch
    (fresh,) = cross_validate(manifest, splits, student, feats, CLASSES, tmp_path / "fresh", folds=[0], seed=2)
    assert not any("adopted_from" in v for v in fresh.info["teacher"]["members"].values())
    adopted = load_teacher(tmp_path / "student" / "fold_0_teacher")
    scratch = load_teacher(tmp_path / "fresh" / "student" / "fold_0_teacher")
    assert adopted is not None and scratch is not None
    np.testing.assert_allclose(adopted.logits, scratch.logits, atol=1e-5)
    # a member's fold recorded other training speakers (same count, disjoint test speakers): not the teacher's rows
    facts = tmp_path / "v-t0" / "fold_0.json"
    info = json.loads(facts.read_text())
    assert info["train_speakers"] == out.info["teacher"]["train_speakers"]
    facts.write_text(json.dumps({**info, "train_speakers": [*info["train_speakers"][:-1], "elsewhere"]}))
    (tmp_path / "student" / "fold_0.npz").unlink()  # the run seed is not in a recipe's fingerprint: start afresh
    shutil.rmtree(tmp_path / "student" / "fold_0_ckpt")
    shutil.rmtree(tmp_path / "student" / "fold_0_teacher")
    (again,) = cross_validate(manifest, splits, student, feats, CLASSES, tmp_path, folds=[0], seed=2)
    adopted_now = {m: "adopted_from" in v for m, v in again.info["teacher"]["members"].items()}
    assert adopted_now == {"v-t0": False, "v-t1": True}
    # another seed: the members' folds were trained with other seeds, so they are not adopted
    (tmp_path / "student" / "fold_0.npz").unlink()
    shutil.rmtree(tmp_path / "student" / "fold_0_ckpt")
    (other,) = cross_validate(manifest, splits, student, feats, CLASSES, tmp_path, folds=[0], seed=3)
    assert not any("adopted_from" in v for v in other.info["teacher"]["members"].values())


def test_each_robust_variant_takes_the_teacher_target_of_its_clean_clip():
    from ser.train.distil import variant_targets

    logits = np.log(np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]], np.float32))
    out = variant_targets(logits, ["a", "b", "c"], ["a", "a", "c"])
    assert out.shape == (6, 4)
    np.testing.assert_array_equal(out[:3], logits)  # the clips' own targets first, unchanged
    np.testing.assert_array_equal(out[3:], logits[[0, 0, 2]])  # then each variant: its clip's
    assert variant_targets(logits, ["a", "b", "c"], []) is logits
    with pytest.raises(SerError, match="no teacher target"):
        variant_targets(logits, ["a", "b", "c"], ["a", "z"])  # a variant of a clip the teacher never labelled
    with pytest.raises(SerError, match="3 teacher targets for 2"):
        variant_targets(logits, ["a", "b"], ["a"])


class _Variants:
    """A variant source giving each training clip two noisy copies of its own log-mel, recording what it was asked."""

    def __init__(self, feats):
        self.feats, self.asked = feats, []

    def __call__(self, train_rows):
        self.asked += list(train_rows["utt_id"])
        rng = np.random.default_rng(0)
        return {
            u: [{"logmel": self.feats[u]["logmel"] + rng.normal(0, 2, self.feats[u]["logmel"].shape).astype(np.float32)}
                for _ in range(2)]
            for u in train_rows["utt_id"]
        }  # fmt: skip


def test_a_robust_student_learns_its_variants_towards_the_teacher_on_their_clean_clips(
    data, teacher_pair, tmp_path, monkeypatch
):
    import ser.train.cv as cv

    manifest, splits, feats = data
    student = _student(teacher_pair).model_copy(update={"robust": {"copies": 2}})
    seen = {}
    fit_spec = cv.fit_spec

    def spy(spec, x, y, *args, teacher_logits=None, **kw):
        if spec.name == "student":
            seen.update(n=len(x["train"]), y=y["train"].copy(), logits=teacher_logits)
        return fit_spec(spec, x, y, *args, teacher_logits=teacher_logits, **kw)

    monkeypatch.setattr(cv, "fit_spec", spy)
    source = _Variants(feats)
    (out,) = cross_validate(manifest, splits, student, feats, CLASSES, tmp_path, folds=[0], seed=2, variants=source)
    roles = fold_roles(manifest, splits, 0, student.val_speakers, 2 + student.seed)
    train_ids = list(roles["train"]["utt_id"])
    n = len(train_ids)
    assert sorted(source.asked) == sorted(train_ids)  # variants of the training clips only
    assert out.info["n_train"] == n and out.info["n_train_variants"] == 2 * n
    # the teacher trained on and labelled the clean clips alone
    assert out.info["teacher"]["n_train"] == n
    kept = load_teacher(tmp_path / "student" / "fold_0_teacher")
    assert kept is not None and kept.utt_ids == train_ids and kept.logits.shape == (n, len(CLASSES))
    # the student: the clips with their targets, then each clip's two variants with the same target and label
    assert seen["n"] == 3 * n and seen["logits"].shape == (3 * n, len(CLASSES))
    np.testing.assert_array_equal(seen["logits"][:n], kept.logits)
    np.testing.assert_array_equal(seen["logits"][n:], np.repeat(kept.logits, 2, axis=0))
    np.testing.assert_array_equal(seen["y"][n:], np.repeat(seen["y"][:n], 2))
    assert len(set(out.utt_ids) & set(train_ids)) == 0 and out.proba.shape == (len(out.utt_ids), len(CLASSES))

    # the model that ships: the same, on every speaker (the teacher on the clean clips, the student beside variants)
    seen.clear()
    model, info = fit_shipped(
        student, [student], manifest, feats, CLASSES, out_dir=tmp_path / "ship", variants_for=lambda _m: source
    )
    n = info["n_train"]
    assert model.name == "cnn" and info["n_train_variants"] == 2 * n
    assert info["distilled_from"]["teacher"] == "tiny-pair"
    assert seen["logits"].shape == (3 * n, len(CLASSES))
    np.testing.assert_array_equal(seen["logits"][n:], np.repeat(seen["logits"][:n], 2, axis=0))


def test_the_robustness_benchmark_scores_a_distilled_robust_fold_without_training_it_again(
    data, teacher_pair, robustness, tmp_path, monkeypatch
):
    """A distilled fold costs its teacher too: benchmarks/robustness.py adopts the cross-validation fold of the same
    recipe, seed, rows and variants, with the fold's teacher, and scores it as it is."""
    import ser.train.distil as distil

    rob = robustness
    manifest, splits, feats = data
    student = _student(teacher_pair).model_copy(update={"robust": {"copies": 2}})
    source = _Variants(feats)
    (cv_fold,) = cross_validate(manifest, splits, student, feats, CLASSES, tmp_path / "cv", folds=[0], variants=source)
    monkeypatch.setattr(rob, "ADOPT_FROM", (tmp_path / "cv",))
    monkeypatch.setattr(rob, "HERE", tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("the adopted fold's teacher was trained again")

    monkeypatch.setattr(distil, "_fit_members", no_training)
    roles = fold_roles(manifest, splits, 0, student.val_speakers, seed=0)
    fold_dir = tmp_path / "robustness" / "full" / student.name / "fold_0"
    model, info = rob._train_fold(student, 0, roles, feats, CLASSES, source, fold_dir, seed=0)
    assert info["adopted_from"] == "cv/student/fold_0" and info["n_train_variants"] == 2 * info["n_train"]
    assert (fold_dir / "teacher" / TEACHER_TARGETS).is_file()  # read back from the copy, not the run's own folder
    clean = rob._predict(model, student, feats, feats, cv_fold.utt_ids, cv_fold.y, CLASSES, clean_trim=False)
    np.testing.assert_allclose(clean, cv_fold.proba, atol=1e-6)  # the cross-validated student itself
    # other variants (here none) are another training: not adopted
    assert rob.adopt_cv_fold(student, 0, roles, info["n_train"], tmp_path / "other" / "ckpt", 0, 0) is None
    assert not (tmp_path / "other").exists()


def test_the_shipped_model_is_the_student_alone(data, teacher_pair, tmp_path):
    import onnx

    from ser.card import _distilled
    from ser.export import write_model_folder
    from ser.features import FeatureConfig

    manifest, _, feats = data
    student = _student(teacher_pair, val_speakers=0)
    model, info = fit_shipped(student, [student], manifest, feats, CLASSES, out_dir=tmp_path / "ship")
    plain = build_model("cnn", len(CLASSES), 16, **student.params)
    assert model.n_params() == plain.n_params() and model.name == "cnn"
    assert info["distilled_from"]["teacher"] == "tiny-pair" and info["distilled_from"]["alpha"] == student.distil.alpha
    assert set(info["distilled_from"]["members"]) == {"tiny-t0", "tiny-t1"}
    assert (tmp_path / "ship" / "teacher" / TEACHER_RECORD).is_file() and (tmp_path / "ship" / "last.pt").is_file()

    rng = np.random.default_rng(0)
    parity = [rng.normal(0, 1, (16, 60)).astype(np.float32)]
    fc = FeatureConfig(n_mels=16, n_mfcc=13)
    out = write_model_folder(tmp_path / "m", model, labels=CLASSES, feature_config=fc, parity_inputs=parity)
    plain.load_state_dict(model.state_dict())  # a plain cnn with the student's weights: the graph to match
    ref = write_model_folder(tmp_path / "ref", plain.eval(), labels=CLASSES, feature_config=fc, parity_inputs=parity)
    assert [p.name for p in out.glob("*.onnx")] == ["model.onnx"]
    graph, ref_graph = onnx.load(out / "model.onnx").graph, onnx.load(ref / "model.onnx").graph
    assert [n.op_type for n in graph.node] == [n.op_type for n in ref_graph.node]  # the cnn's graph, nothing more
    size = sum(int(np.prod(i.dims)) for i in graph.initializer)
    assert size == sum(int(np.prod(i.dims)) for i in ref_graph.initializer)

    card = _distilled({"recipe": student.model_dump(mode="json")})
    assert len(card) == 1 and "`tiny-pair`" in card[0] and "alpha 0.7" in card[0]
    assert "same training speakers" in card[0] and "out-of-fold" not in card[0]
    oof = _distilled({"recipe": RECIPES["cnn-distil-oof"].model_dump(mode="json")})
    assert "out-of-fold (the training speakers in 2 groups" in oof[0]
    assert _distilled({"recipe": RECIPES["cnn"].model_dump(mode="json")}) == []


# ----------------------------------------------------------------------------------------------------------------
# recipes


def test_the_cnn_distil_recipe(monkeypatch):
    spec = RECIPES["cnn-distil"]
    cnn = RECIPES["cnn"]
    assert isinstance(spec, ModelSpec) and spec.distil is not None
    assert spec.distil.teacher == "cnn+crnn+rnn"
    assert 0.5 <= spec.distil.alpha <= 0.7 and 2 <= spec.distil.temperature <= 4
    same = {k: v for k, v in spec.model_dump().items() if k not in ("name", "distil")}
    assert same == {k: v for k, v in cnn.model_dump().items() if k not in ("name", "distil")}  # the cnn, as student
    assert feature_kinds([spec]) == {"logmel", "mfcc"}  # the teacher's rnn reads MFCC
    assert "distil" not in cnn.model_dump(exclude_none=True)
    oof = RECIPES["cnn-distil-oof"]
    assert isinstance(oof, ModelSpec) and oof.distil is not None and oof.distil.cross_fit == 2
    assert oof.distil.model_dump(exclude={"cross_fit"}) == spec.distil.model_dump(exclude={"cross_fit"})
    assert spec.distil.cross_fit == 0 and oof.fingerprint() != spec.fingerprint()
    before = spec.fingerprint()
    assert before != cnn.fingerprint()
    crnn = RECIPES["crnn"]
    monkeypatch.setitem(RECIPES, "crnn", crnn.model_copy(update={"train": {**crnn.train, "lr": 1e-3}}))
    assert spec.fingerprint() != before  # a teacher member's recipe changed: another student
    robust = RECIPES["cnn-distil-robust"]  # the robust recipe as the student, from the same teacher
    assert isinstance(robust, ModelSpec) and robust.distil == spec.distil
    undistilled = RECIPES["cnn-robust-noisy-long"]
    assert robust.model_dump(exclude={"name", "distil"}) == undistilled.model_dump(exclude={"name", "distil"})
    assert feature_kinds([robust]) == {"logmel", "mfcc"}
    cut = get_recipe("cnn-distil", {"distil": {"teacher_overrides": {"train": {"epochs": 1}}}})
    assert cut.distil is not None and cut.distil.teacher == "cnn+crnn+rnn" and cut.distil.alpha == spec.distil.alpha


def test_distil_recipes_that_cannot_work_are_refused(data, teacher_pair):
    from ser.train.cv import fit_spec
    from ser.train.tune import tune

    with pytest.raises(ValueError, match="torch model"):
        ModelSpec(name="x", model="classical", features="functionals", distil={"teacher": "cnn"})
    with pytest.raises(ValueError, match="alpha"):
        DistilConfig(teacher="cnn", alpha=2.0)
    selfish = _student(teacher_pair).model_copy(update={"name": "selfish"})
    with pytest.raises(ConfigError, match="must not be distilled"):
        _student("cnn-distil").fingerprint()
    with pytest.raises(ConfigError, match="unknown model recipe"):
        _student("no-such-teacher").fingerprint()
    with pytest.raises(ConfigError, match="which train its teacher first"):
        fit_spec(selfish, {"train": [np.zeros((16, 40))], "val": []}, {"train": np.array([0])}, 4, 0)
    manifest, splits, feats = data
    with pytest.raises(ConfigError, match="without its distil part"):
        tune(manifest, splits, selfish, feats, CLASSES, space={"train.lr": [1e-2]}, n_trials=1)


@pytest.mark.slow
def test_the_pipeline_ships_a_distilled_recipe_as_the_student_and_says_so(tmp_path, monkeypatch):
    from ser import registry
    from ser.model_folder import read_metadata
    from ser.pipeline import run
    from ser.pipeline.config import parse_config

    small = RECIPES["cnn-small"]
    quick = {**small.train, "epochs": 1}
    for s in (0, 1):
        monkeypatch.setitem(RECIPES, f"small-t{s}", small.model_copy(update={"name": f"small-t{s}", "seed": s,
                                                                            "train": quick}))  # fmt: skip
    monkeypatch.setitem(RECIPES, "small-pair", EnsembleSpec(name="small-pair", members=["small-t0", "small-t1"]))
    distil = DistilConfig(teacher="small-pair")
    monkeypatch.setitem(RECIPES, "small-distil", small.model_copy(update={"name": "small-distil", "train": quick,
                                                                        "distil": distil}))  # fmt: skip
    cfg = parse_config(
        {
            "data": {"synth_speakers": 6, "synth_per_emotion": 2},
            "split": {"k": 2},
            "evaluate": {"n_boot": 20},
            "train": {"model": "small-distil"},
            "register": {"max_group_gap": None},
        }
    )
    summary = run(cfg, tmp_path)
    assert summary.ok, summary.to_dict()
    model_dir = registry.resolve(tmp_path, "ser-emotion@champion")
    meta = read_metadata(model_dir)
    assert meta["recipe"]["distil"]["teacher"] == "small-pair" and meta["input"]["kind"] == "logmel"
    assert meta["model"]["name"] == "cnn"  # the student alone, not an ensemble
    assert "Distilled (Hinton et al., 2015) from the `small-pair` recipe" in (model_dir / "MODEL_CARD.md").read_text()
    cv = Path(summary.record("train")["outputs"]["cv"])
    assert (cv / "small-distil" / "fold_0_teacher" / TEACHER_TARGETS).is_file()
