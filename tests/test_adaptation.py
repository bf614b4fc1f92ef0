"""Target-domain adaptation (:mod:`ser.adaptation`): pooled statistics, the row map, its file, and the Predictor
hook (an adapted folder maps its input; a folder without adaptation is served bit for bit as before)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ser.adaptation import (
    ADAPTATION_FILE,
    Adaptation,
    RowStats,
    clip_stats,
    logmel_rows,
    pooled_stats,
    read_adaptation,
    stats_of_inputs,
    utterance_normalised,
)
from ser.errors import SerError
from tests.conftest import export_tiny_model, tone


def _clips(rng, n=12, rows=6):
    return [rng.normal(-40 + 3 * np.arange(rows)[:, None], 4 + np.arange(rows)[:, None], (rows, int(t))) for t in
            rng.integers(20, 80, n)]  # fmt: skip


def test_pooled_stats_is_the_equal_weight_mixture_of_the_clips():
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(3, 50)), rng.normal(5, 2, size=(3, 50))]  # equal lengths: the mixture = concatenation
    st = stats_of_inputs(clips, (0, 3))
    frames = np.concatenate(clips, axis=1)
    assert st.clips == 2
    np.testing.assert_allclose(st.mean, frames.mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(st.std, frames.std(axis=1), atol=1e-12)
    m, s = clip_stats(np.zeros((3, 0)))  # a clip without frames has no statistics and is left out of the pool
    assert np.isnan(m).all() and np.isnan(s).all()
    again = pooled_stats(
        np.stack([m, *[clip_stats(c)[0] for c in clips]]), np.stack([s, *[clip_stats(c)[1] for c in clips]])
    )
    np.testing.assert_allclose(again.mean, st.mean)
    assert again.clips == 2
    with pytest.raises(SerError, match="no clip"):
        pooled_stats(np.full((2, 3), np.nan), np.full((2, 3), np.nan))


def test_a_shifted_and_scaled_domain_is_mapped_back_onto_the_source():
    rng = np.random.default_rng(1)
    rows = 6
    source = _clips(rng, rows=rows)
    a, b = rng.uniform(0.4, 2.5, rows)[:, None], rng.uniform(-25, 10, rows)[:, None]
    # the deployment: the same kind of speech through another channel (per-row gain and offset) plus 2 extra rows
    target = [np.vstack([a * x + b, rng.normal(size=(2, x.shape[1]))]) for x in _clips(rng, n=30, rows=rows)]
    ad = Adaptation((0, rows), stats_of_inputs(source, (0, rows)), stats_of_inputs(target, (0, rows)))
    mapped = [ad.apply(x) for x in target]
    back = stats_of_inputs(mapped, (0, rows))
    np.testing.assert_allclose(back.mean, ad.source.mean, atol=1e-3)
    np.testing.assert_allclose(back.std, ad.source.std, rtol=1e-4)
    before = stats_of_inputs(target, (0, rows))
    assert np.abs(before.mean - ad.source.mean).max() > 5  # the domains really were apart
    # rows outside the adaptation are copied unchanged, the input is not modified, dtype float32
    assert mapped[0].dtype == np.float32 and np.array_equal(mapped[0][rows:], target[0][rows:].astype(np.float32))
    x0 = target[0].astype(np.float32)
    x0_copy = x0.copy()
    ad.apply(x0)
    assert np.array_equal(x0, x0_copy)
    with pytest.raises(SerError, match="at least 6 rows"):
        ad.apply(np.zeros((4, 10), np.float32))


def test_adaptation_round_trips_and_rejects_bad_files(tmp_path):
    rng = np.random.default_rng(2)
    st = stats_of_inputs(_clips(rng), (0, 6))
    ad = Adaptation((0, 6), st, RowStats(st.mean - 3, st.std * 2, 7))
    again = Adaptation.from_dict(json.loads(json.dumps(ad.to_dict())))
    x = rng.normal(size=(6, 9)).astype(np.float32)
    assert np.array_equal(again.apply(x), ad.apply(x)) and again.target.clips == 7
    assert read_adaptation(tmp_path, {}) is None  # no entry: not adapted, whatever files lie there
    with pytest.raises(SerError, match="missing"):
        read_adaptation(tmp_path, {"adaptation": {"file": ADAPTATION_FILE}})
    (tmp_path / ADAPTATION_FILE).write_text("{not json")
    with pytest.raises(SerError, match="JSON"):
        read_adaptation(tmp_path, {"adaptation": {}})
    bad = ad.to_dict() | {"target": {"mean": [0.0] * 6, "std": [0.0] * 6}}
    (tmp_path / ADAPTATION_FILE).write_text(json.dumps(bad))
    with pytest.raises(SerError, match="std > 0"):
        read_adaptation(tmp_path, {"adaptation": {}})
    with pytest.raises(SerError, match="rows"):
        Adaptation((0, 5), st, st)
    with pytest.raises(SerError, match="format"):
        Adaptation.from_dict({"format": "other/1"})
    assert logmel_rows("logmel+mfcc", {"n_mels": 40}) == (0, 40)
    with pytest.raises(SerError, match="mfcc"):
        logmel_rows("mfcc", {})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp("adapt") / "model")


def test_unadapted_predictor_is_bit_identical_to_the_graph(tiny):
    from ser.inference import Predictor
    from ser.model_folder import INPUT_NAME, OUTPUT_NAME

    p = Predictor(tiny)
    assert p.adaptation is None
    audio = tone(1.3) + 0.01 * np.random.default_rng(0).standard_normal(int(1.3 * 16000)).astype(np.float32)
    feats = p.pre.features(audio)
    assert p.adapt(feats) is feats
    direct = p.session.run([OUTPUT_NAME], {INPUT_NAME: feats[None].astype(np.float32)})[0][0]
    assert np.array_equal(p.logits(feats), direct)
    e = np.exp(direct.astype(np.float64) - direct.max())
    assert np.array_equal(p.predict_proba(audio), e / e.sum())


def test_predictor_applies_the_folder_adaptation(tiny, tmp_path):
    from ser.inference import Predictor
    from ser.io import write_json
    from ser.model_folder import METADATA_FILE, read_metadata

    adapted = tmp_path / "adapted"
    shutil.copytree(tiny, adapted)
    rows = 64
    src = RowStats(np.full(rows, -30.0), np.full(rows, 10.0), 5)
    tgt = RowStats(np.full(rows, -50.0), np.full(rows, 5.0), 5)
    write_json(adapted / ADAPTATION_FILE, Adaptation((0, rows), src, tgt).to_dict())
    write_json(adapted / METADATA_FILE, {**read_metadata(tiny), "adaptation": {"file": ADAPTATION_FILE}})
    base, p = Predictor(tiny), Predictor(adapted)
    assert p.adaptation is not None
    x = np.random.default_rng(3).normal(-50, 5, (rows, 120)).astype(np.float32)
    np.testing.assert_allclose(p.adapt(x), (x + 50) / 5 * 10 - 30, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(p.logits(x), base.logits((x + 50) / 5 * 10 - 30), atol=1e-5)
    assert not np.allclose(p.logits(x), base.logits(x), atol=1e-3)  # the tiny model (batch input norm) sees it
    (adapted / ADAPTATION_FILE).unlink()
    with pytest.raises(SerError, match="missing"):
        Predictor(adapted)


def test_a_model_with_utterance_input_norm_is_invariant_to_the_map(tmp_path):
    """The documented limit: a per-row affine map of the input is undone by per-clip row standardisation."""
    from ser.export import write_model_folder
    from ser.features import FeatureConfig
    from ser.inference import Predictor
    from ser.io import write_json
    from ser.model_folder import METADATA_FILE, read_metadata
    from ser.models.factory import build_model

    m = build_model("cnn", 4, 64, channels=[8, 16], convs=[1, 1], time_pool=[2, 2], input_norm="utterance", seed=0)
    folder = write_model_folder(tmp_path / "u", m, labels=["a", "b", "c", "d"], feature_config=FeatureConfig())
    rng = np.random.default_rng(4)
    src = RowStats(rng.normal(-30, 5, 64), rng.uniform(5, 12, 64), 5)
    tgt = RowStats(rng.normal(-55, 5, 64), rng.uniform(2, 6, 64), 5)
    write_json(folder / ADAPTATION_FILE, Adaptation((0, 64), src, tgt).to_dict())
    base = Predictor(folder)
    write_json(folder / METADATA_FILE, {**read_metadata(folder), "adaptation": {}})
    adapted = Predictor(folder)
    x = rng.normal(-55, 4, (64, 150)).astype(np.float32)
    assert not np.allclose(adapted.adapt(x), x, atol=1.0)  # the input really moves
    np.testing.assert_allclose(adapted.logits(x), base.logits(x), atol=1e-4)  # the answer does not
    assert utterance_normalised(read_metadata(folder))  # and the job says so (AdaptOutcome.invariant, the CLI note)
    tiny = read_metadata(export_tiny_model(tmp_path / "b"))  # batch input norm: the map matters
    assert not utterance_normalised(tiny) and not utterance_normalised({"model": {}})
