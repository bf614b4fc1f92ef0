"""Models: shapes, padding invariance, overfitting one batch, registry, save/load, classical baseline, SSL wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ser.errors import ConfigError, SerError
from ser.models import (
    ClassicalModel,
    SerModel,
    available_models,
    benchmark_forward,
    build_model,
    load_model,
    model_params,
    n_params,
    save_model,
)

# small settings so every test runs in well under a second on one core
SMALL = {
    "cnn": dict(channels=[8, 16, 16], time_pool=[2, 2, 1], hidden=32),
    "cnn_double": dict(channels=[8, 16, 16], time_pool=[2, 2, 1], convs=[1, 2, 2], pool="attentive_stats", hidden=32),
    "tdnn": dict(channels=32, agg_channels=64, hidden=32),
    "rnn": dict(hidden=32, layers=2),
    "rnn_gru": dict(cell="gru", hidden=32, layers=1, pool="mean"),
    "rnn_pooled": dict(cell="gru", hidden=32, layers=1, frame_pool=3, input_norm="utterance"),
    "crnn": dict(channels=[8, 16], time_pool=[2, 1], proj=32, hidden=32),
}
F = 16


def _build(key: str, **kw) -> SerModel:
    name = key.split("_")[0]
    return build_model(name, 4, F, seed=0, **{**SMALL[key], **kw})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_registry_lists_every_model():
    assert set(available_models()) == {"cnn", "tdnn", "rnn", "crnn", "ssl", "classical", "ensemble"}
    assert model_params("rnn")["cell"] == "lstm"
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("transformer", 4, F)
    with pytest.raises(ConfigError, match="unknown parameter"):
        build_model("cnn", 4, F, chanels=[8])
    with pytest.raises(ConfigError, match="cell"):
        build_model("rnn", 4, F, cell="elman")
    with pytest.raises(ConfigError, match="time_pool"):
        build_model("cnn", 4, F, channels=[8, 8], time_pool=[2])


@pytest.mark.parametrize("key", list(SMALL))
def test_forward_shapes(key):
    model = _build(key).eval()
    x = torch.randn(3, F, 57)
    lengths = torch.tensor([57, 40, 9])
    with torch.no_grad():
        logits = model(x, lengths)
        emb = model.embed(x, lengths)
        full = model(x)
    assert logits.shape == (3, 4)
    assert full.shape == (3, 4)
    assert emb.ndim == 2 and emb.shape[0] == 3
    assert torch.isfinite(logits).all()
    assert n_params(model) == sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(ConfigError, match="expected input"):
        model(torch.randn(2, F + 1, 30))


@pytest.mark.parametrize("key", list(SMALL))
def test_padding_does_not_change_logits(key):
    model = _build(key).eval()
    g = torch.Generator().manual_seed(1)
    lengths = [61, 44, 13, 1]
    clips = [torch.randn(F, n, generator=g) for n in lengths]
    x = torch.full((len(clips), F, max(lengths)), 7.5)  # padding filled with junk on purpose
    for i, c in enumerate(clips):
        x[i, :, : c.shape[1]] = c
    with torch.no_grad():
        batched = model(x, torch.tensor(lengths))
        single = torch.cat([model(c[None]) for c in clips])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_pool_frames_averages_valid_frames_only():
    from ser.models.rnn import pool_frames

    x = torch.arange(14.0).reshape(1, 2, 7).repeat(2, 1, 1)  # frames 0..6 (row 0) and 7..13 (row 1)
    x[1, :, 4:] = 1e6  # clip 1 has 4 valid frames; the rest is junk padding
    h, lengths = pool_frames(x, torch.tensor([7, 4]), 3)
    assert h.shape == (2, 2, 3) and lengths.tolist() == [3, 2]
    torch.testing.assert_close(h[0, 0], torch.tensor([1.0, 4.0, 6.0]))  # the last window holds frame 6 alone
    torch.testing.assert_close(h[1, 0, :2], torch.tensor([1.0, 3.0]))  # frames (0, 1, 2) and (3,): padding unused
    same, n = pool_frames(x, torch.tensor([7, 4]), 1)
    assert same is x and n.tolist() == [7, 4]
    with pytest.raises(ConfigError, match="frame_pool"):
        build_model("rnn", 4, F, frame_pool=0)


@pytest.mark.parametrize("key", list(SMALL))
def test_overfits_one_batch(key):
    model = _build(key, dropout=0.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, F, 40, generator=g)
    y = torch.arange(8) % 4
    lengths = torch.tensor([40, 35, 30, 40, 25, 40, 38, 33])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(x, lengths), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    model.eval()
    with torch.no_grad():
        assert (model(x, lengths).argmax(1) == y).all()


def test_init_is_deterministic_under_a_seed():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model("tdnn", 4, F, seed=7, **SMALL["tdnn"]).state_dict()
    b = build_model("tdnn", 4, F, seed=7, **SMALL["tdnn"]).state_dict()
    c = build_model("tdnn", 4, F, seed=8, **SMALL["tdnn"]).state_dict()
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is not consumed
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_save_and_load_roundtrip(tmp_path):
    model = _build("crnn").eval()
    x = torch.randn(2, F, 33)
    path = save_model(tmp_path / "m.pt", model, extra={"labels": ["a", "b", "c", "d"]})
    loaded, extra = load_model(path)
    assert extra == {"labels": ["a", "b", "c", "d"]}
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(SerError, match="not a readable model"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(SerError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_torch_model_files_have_their_own_format_and_older_files_still_load(tmp_path):
    from ser.model_folder import FORMAT as FOLDER_FORMAT
    from ser.models.factory import MODEL_FORMAT

    model = _build("cnn").eval()
    path = save_model(tmp_path / "m.pt", model)
    blob = torch.load(path, weights_only=False)
    assert blob["format"] == MODEL_FORMAT == "ser-torch/1" != FOLDER_FORMAT
    blob["format"] = "ser-model/1"  # how model.pt files were tagged before the two formats were told apart
    torch.save(blob, tmp_path / "old.pt")
    old, _ = load_model(tmp_path / "old.pt")
    x = torch.randn(1, F, 40)
    with torch.no_grad():
        torch.testing.assert_close(old(x), model(x))
    blob["format"] = "ser-train/1"
    torch.save(blob, tmp_path / "other.pt")
    with pytest.raises(SerError, match="not a ser model file"):
        load_model(tmp_path / "other.pt")


def test_default_models_are_cheap_and_benchmark_reports():
    for name, feats in [("cnn", 64), ("tdnn", 64), ("rnn", 60), ("crnn", 64)]:
        model = build_model(name, 7, feats, seed=0)
        report = benchmark_forward(model, seconds=3.0, repeats=2, warmup=1)
        assert report["input_shape"] == [1, feats, 300]
        assert report["n_params"] == n_params(model) < 1_000_000
        assert report["ms_median"] > 0 and report["real_time_factor"] > 0
        assert model.training  # mode restored


# ---------------------------------------------------------------------------------------------------------------
# classical


def _blobs(n_per: int, seed: int, n_classes: int = 3, d: int = 6):
    rng = np.random.default_rng(seed)
    centres = np.eye(n_classes, d) * 6.0
    X = np.concatenate([rng.normal(c, 1.0, (n_per, d)) for c in centres])
    y = np.repeat(np.arange(n_classes), n_per)
    return X, y


@pytest.mark.parametrize(
    "params", [dict(kind="svm"), dict(kind="svm", kernel="linear", probability=True), dict(kind="logreg")]
)
def test_classical_fits_separable_data(params, tmp_path):
    X, y = _blobs(30, 0)
    Xt, yt = _blobs(10, 1)
    model = build_model("classical", 4, 6, seed=0, **params).fit(X, y)  # class 3 never seen
    proba = model.predict_proba(Xt)
    assert proba.shape == (30, 4)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert np.all(proba[:, 3] == 0)
    assert (model.predict(Xt) == yt).all()
    assert model.n_params() > 0
    loaded = ClassicalModel.load(model.save(tmp_path / "clf.joblib"))
    np.testing.assert_allclose(loaded.predict_proba(Xt), proba)


def test_classical_rejects_bad_input():
    with pytest.raises(ConfigError, match="kind"):
        build_model("classical", 3, 6, kind="forest")
    model = build_model("classical", 3, 6)
    X, y = _blobs(5, 0)
    with pytest.raises(SerError, match="single class"):
        model.fit(X, np.zeros(len(X), dtype=int))
    with pytest.raises(SerError, match="not fitted"):
        model.predict_proba(X)
    with pytest.raises(SerError, match="features per row"):
        model.fit(X[:, :4], y)
    X[0, 0] = np.nan
    with pytest.raises(SerError, match="NaN"):
        model.fit(X, y)


# ---------------------------------------------------------------------------------------------------------------
# ssl


def _tiny_ssl_dir(root, norm: str):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm,
    )
    torch.manual_seed(0)
    path = root / f"w2v2-{norm}"
    transformers.Wav2Vec2Model(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ssl_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl")
    return {norm: _tiny_ssl_dir(root, norm) for norm in ("layer", "group")}


def test_ssl_forward_and_frozen_backbone(ssl_dirs):
    model = build_model("ssl", 4, seed=0, path=str(ssl_dirs["layer"]), freeze=True)
    assert model.input_kind == "waveform"
    x = torch.randn(3, 4000)
    lengths = torch.tensor([4000, 2500, 1200])
    logits = model(x, lengths)
    assert logits.shape == (3, 4)
    logits.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    assert model.layer_weights.grad is not None and model.layer_weights.grad.shape == (3,)
    assert all(p.grad is not None for p in model.head.parameters())
    assert not model.backbone.training  # stays in eval mode while frozen
    assert model.n_params(trainable_only=True) < model.n_params()


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_ssl_padding_invariance(ssl_dirs, norm):
    model = build_model("ssl", 4, seed=0, path=str(ssl_dirs[norm])).eval()
    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(n, generator=g) for n in (4000, 2700, 900)]
    x = torch.zeros(3, 4000)
    for i, c in enumerate(clips):
        x[i, : len(c)] = c
    with torch.no_grad():
        batched = model(x, torch.tensor([len(c) for c in clips]))
        single = torch.cat([model(c[None]) for c in clips])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


def test_ssl_fine_tuning_keeps_feature_encoder_frozen(ssl_dirs):
    model = build_model("ssl", 3, path=str(ssl_dirs["layer"]), freeze=False, pool="mean")
    model(torch.randn(2, 3000)).sum().backward()
    assert all(p.grad is None for p in model.backbone.feature_extractor.parameters())
    assert any(p.grad is not None for p in model.backbone.encoder.parameters())


def test_ssl_missing_or_bad_folder(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_model("ssl", 4, path=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"no config\.json"):
        build_model("ssl", 4, path=str(tmp_path))
    with pytest.raises(ConfigError, match="required"):
        build_model("ssl", 4)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load"):
        build_model("ssl", 4, path=str(tmp_path))


def test_ssl_trains_through_fit_on_waveforms(ssl_dirs, tmp_path):
    from ser.train import ArrayDataset, TrainConfig, fit, predict_proba

    rng = np.random.default_rng(0)
    waves = [rng.normal(0, 0.1, int(n)).astype(np.float32) for n in rng.integers(2000, 6000, 8)]
    ds = ArrayDataset(waves, np.arange(8) % 2)
    cfg = TrainConfig(
        model="ssl",
        model_params=dict(path=str(ssl_dirs["layer"])),
        epochs=1,
        batch_size=4,
        crop_frames=20,  # 20 frames = 3200 samples
        num_threads=1,
    )
    result = fit(ds, ds, cfg, tmp_path)
    assert len(result.history) == 1
    proba = predict_proba(result.model, ds, eval_mode="windows", window=15)
    assert proba.shape == (8, 2)
    loaded, _ = load_model(tmp_path / "best.pt")
    np.testing.assert_allclose(predict_proba(loaded, ds), predict_proba(result.model, ds), atol=1e-5)
