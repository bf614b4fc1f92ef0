"""AdaBN (:mod:`ser.adabn`, ``ser model adapt --method batchnorm``): the exported graph keeps its batch norms, the
re-estimated statistics are the layer inputs' statistics computed in torch layer after layer, adapting on the
statistics' own data changes nothing, and the CLI writes a folder that serves the adapted graph."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ser.errors import ConfigError, SerError
from tests.conftest import write_wav
from tests.jobs.test_adapt import _speechlike

LABELS = ["a", "b", "c", "d"]


def _torch_model(seed: int = 0):
    """A small cnn whose input is standardised per utterance (the shipped recipes' setting): 3 BatchNorm2d layers,
    with non-trivial affine parameters and running statistics so a wrong layer or axis shows."""
    import torch

    from ser.models.factory import build_model

    m = build_model(
        "cnn", len(LABELS), 64, channels=[8, 12], convs=[1, 2], time_pool=[2, 2], input_norm="utterance", seed=seed
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in _bns(m):
            c = bn.num_features
            bn.weight.copy_(0.5 + torch.rand(c, generator=g))
            bn.bias.copy_(0.3 * torch.randn(c, generator=g))
            bn.running_mean.copy_(torch.randn(c, generator=g))
            bn.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return m.eval()


def _bns(model):
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _clips(seed: int, n: int = 6, level: float = -40.0) -> list[np.ndarray]:
    """Model inputs ``(64, T)`` of different lengths (a long clip must weigh more than a short one)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(-10, 10, 64)[:, None]
    return [
        (level + rows + rng.normal(0, 6, (64, int(t))) + 4 * np.sin(np.arange(int(t)) / 7)).astype(np.float32)
        for t in rng.integers(40, 260, n)
    ]


def _torch_adabn(model, clips, sequential: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """AdaBN in torch with forward hooks: each BN layer's input over all clips (one clip per forward, eval mode),
    per-channel mean and population variance over batch, frequency and time; written into the layer before the
    next one is measured (``sequential``), or all measured on the unadapted model (the wrong order)."""
    import torch

    stats = []
    measured = []
    for bn in _bns(model):
        seen: list[torch.Tensor] = []
        h = bn.register_forward_hook(lambda _m, inp, _out, seen=seen: seen.append(inp[0].detach().double()))
        with torch.no_grad():
            for x in clips:
                model(torch.from_numpy(x[None]))
        h.remove()
        flat = torch.cat([s.transpose(0, 1).reshape(s.shape[1], -1) for s in seen], dim=1)
        mean, var = flat.mean(1), flat.var(1, unbiased=False)
        stats.append((mean.numpy(), var.numpy()))
        measured.append((bn, mean, var))
        if sequential:
            with torch.no_grad():
                bn.running_mean.copy_(mean.float())
                bn.running_var.copy_(var.float())
    if not sequential:
        with torch.no_grad():
            for bn, mean, var in measured:
                bn.running_mean.copy_(mean.float())
                bn.running_var.copy_(var.float())
    return stats


def _bn_stats(model_proto) -> list[tuple[np.ndarray, np.ndarray]]:
    from onnx import numpy_helper

    from ser.adabn import batchnorm_nodes

    init = {t.name: numpy_helper.to_array(t) for t in model_proto.graph.initializer}
    return [(init[n.input[3]], init[n.input[4]]) for n in batchnorm_nodes(model_proto)]


def test_moments_pool_by_element_and_merge_exactly():
    from ser.adabn import Moments, moments_of, shift_summary

    rng = np.random.default_rng(0)
    xs = [rng.normal(3, 2, (1, 5, 7, int(t))) for t in (3, 40, 11)]  # (N, C, F, T), lengths differ
    m = moments_of(xs)
    flat = np.concatenate([np.moveaxis(x, 1, 0).reshape(5, -1) for x in xs], axis=1)
    assert m.count == flat.shape[1]
    np.testing.assert_allclose(m.mean, flat.mean(1), rtol=1e-12)
    np.testing.assert_allclose(m.var, flat.var(1), rtol=1e-10)
    assert Moments.empty(5).merge(m) is m and m.merge(Moments.empty(5)) is m
    with pytest.raises(SerError, match="no layer input"):
        moments_of([])
    s = shift_summary(np.zeros(2), np.ones(2), np.array([1.0, 3.0]), np.array([4.0, 1.0]), 0.0)
    assert s["mean_shift_sd"] == 2.0 and s["max_shift_sd"] == 3.0 and s["sd_ratio_max"] == 2.0


def test_export_keeps_batchnorm_and_adabn_equals_torch_layer_statistics(tmp_path, one_torch_thread):
    import onnx
    import torch

    from ser.adabn import adapt_batchnorm, batchnorm_nodes
    from ser.export import write_model_folder
    from ser.features import FeatureConfig
    from ser.model_folder import INPUT_NAME, MODEL_FILE

    model = _torch_model()
    folder = write_model_folder(tmp_path / "m", model, labels=LABELS, feature_config=FeatureConfig())
    graph = onnx.load(str(folder / MODEL_FILE))
    assert len(batchnorm_nodes(graph)) == len(_bns(model)) == 3  # not folded into the convolutions
    clips = _clips(1)
    adapted, layers = adapt_batchnorm(graph, [x[None] for x in clips], input_name=INPUT_NAME)
    assert [la["channels"] for la in layers] == [8, 12, 12] and len(batchnorm_nodes(graph)) == 3
    assert _bn_stats(graph)[0][0].tolist() == model.blocks[0].layers[0][1].running_mean.tolist()  # input untouched

    wrong = _torch_adabn(_torch_model(), clips, sequential=False)
    expected = _torch_adabn(model, clips)  # model now carries the torch AdaBN statistics
    got = _bn_stats(adapted)
    for (gm, gv), (em, ev) in zip(got, expected, strict=True):
        np.testing.assert_allclose(gm, em, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(gv, ev, rtol=1e-4, atol=1e-4)
    # the test can tell the order: measuring every layer on the unadapted graph gives other later-layer statistics
    assert np.abs(wrong[2][0] - expected[2][0]).max() > 1e-2
    # ...and the axes: per-frequency or per-clip pooling would not give the per-channel statistics above
    assert layers[0]["elements_per_channel"] == sum(x.size for x in clips)

    # the adapted graph answers as the adapted torch model
    import onnxruntime as ort

    sess = ort.InferenceSession(adapted.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for x in clips[:3]:
            ref = model(torch.from_numpy(x[None])).numpy()
            np.testing.assert_allclose(sess.run(None, {INPUT_NAME: x[None]})[0], ref, atol=2e-4)


def test_adapting_on_the_statistics_own_data_changes_nothing(tmp_path, one_torch_thread):
    """A model whose batch-norm statistics are those of a domain (set by torch AdaBN) is a fixed point of AdaBN on
    that domain; another domain (a noise floor and reverberation) moves the statistics and the answers."""
    import onnx
    import onnxruntime as ort

    from ser.adabn import adapt_batchnorm
    from ser.export import write_model_folder
    from ser.features import FeatureConfig
    from ser.model_folder import INPUT_NAME, MODEL_FILE

    model = _torch_model(seed=3)
    source = _clips(5, n=8)
    _torch_adabn(model, source)
    folder = write_model_folder(tmp_path / "m", model, labels=LABELS, feature_config=FeatureConfig())
    graph = onnx.load(str(folder / MODEL_FILE))
    again, layers = adapt_batchnorm(graph, [x[None] for x in source], input_name=INPUT_NAME)
    assert max(la["mean_shift_sd"] for la in layers) < 1e-3
    assert all(abs(la["sd_ratio_median"] - 1) < 1e-3 for la in layers)

    def run(g, xs):
        s = ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.stack([s.run(None, {INPUT_NAME: x[None]})[0][0] for x in xs])

    np.testing.assert_allclose(run(again, source), run(graph, source), atol=1e-3)
    # another channel: a noise floor and a reverberant smear over time (a per-row gain and offset would not do:
    # the input is standardised per utterance, which cancels it)
    kernel = np.exp(-np.arange(12) / 4.0)
    other = [
        np.maximum(np.apply_along_axis(lambda r: np.convolve(r, kernel / kernel.sum())[: r.size], 1, x), -40.0).astype(
            np.float32
        )
        for x in source
    ]
    moved, moved_layers = adapt_batchnorm(graph, [x[None] for x in other], input_name=INPUT_NAME)
    assert max(la["mean_shift_sd"] for la in moved_layers) > 0.05
    assert np.abs(run(moved, other) - run(graph, other)).max() > 1e-2


def test_graph_without_batchnorm_is_refused():
    import onnx

    from ser.adabn import adapt_batchnorm
    from ser.jobs.adapt import choose_method

    g = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["features"], ["logits"])],
        "g",
        [onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [1, 2])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 2])],
    )
    with pytest.raises(SerError, match="no BatchNormalization"):
        adapt_batchnorm(onnx.helper.make_model(g), [np.zeros((1, 2), np.float32)], input_name="features")
    assert choose_method("auto", True, True) == "batchnorm"
    assert choose_method("auto", False, True) == "rows"  # a batch-normalised input: the row map acts
    assert choose_method("auto", True, False) == "rows"
    assert choose_method("rows", True, True) == "rows"
    with pytest.raises(ConfigError, match="folded"):
        choose_method("batchnorm", True, False)
    with pytest.raises(ConfigError, match="one of"):
        choose_method("bn", True, True)


@pytest.fixture(scope="module")
def utterance_folder(tmp_path_factory):
    """An exported utterance-normalised cnn (batch norms kept) and a folder of 'deployment' audio."""
    from ser.export import write_model_folder
    from ser.features import FeatureConfig

    root = tmp_path_factory.mktemp("adabn")
    folder = write_model_folder(root / "model", _torch_model(seed=1), labels=LABELS, feature_config=FeatureConfig())
    rng = np.random.default_rng(0)
    files = [write_wav(root / "target" / f"c{i}.wav", 0.1 * _speechlike(rng, rng.uniform(0.8, 1.6))) for i in range(5)]
    return {"model": folder, "target": root / "target", "files": files}


def test_cli_adapts_batchnorm_end_to_end(utterance_folder, tmp_path, run_cli):
    import onnx

    from ser.adaptation import ADAPTATION_FILE
    from ser.inference import Predictor
    from ser.model_folder import CARD_FILE, MODEL_FILE, read_metadata

    target = tmp_path / "target"
    target.mkdir()
    for f in utterance_folder["files"]:
        (target / f.name).write_bytes(f.read_bytes())
    write_wav(target / "blip.wav", np.zeros(100, np.float32))
    out = tmp_path / "adapted"
    code, stdout, err = run_cli("model", "adapt", utterance_folder["model"], "--audio", target, "--out", out, "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["method"] == "batchnorm" and res["files"] == 5 and res["skipped"] == 1 and not res["invariant"]
    assert len(res["layers"]) == 3 and res["rows"] is None
    meta = read_metadata(out)
    assert meta["adaptation"]["method"] == "batchnorm" and meta["adaptation"]["layers"] == 3
    body = json.loads((out / ADAPTATION_FILE).read_text())
    assert body["method"] == "batchnorm" and body["clips"] == 5 and len(body["layers"]) == 3
    assert "AdaBN" in (out / CARD_FILE).read_text()
    assert "adaptation" not in read_metadata(utterance_folder["model"])
    # the folder serves the adapted graph, with no input map; its statistics are those of the deployment
    base, adapted = Predictor(utterance_folder["model"]), Predictor(out)
    assert adapted.adaptation is None
    assert (
        _bn_stats(onnx.load(str(out / MODEL_FILE)))[0][0].tolist()
        != _bn_stats(onnx.load(str(utterance_folder["model"] / MODEL_FILE)))[0][0].tolist()
    )
    f0 = utterance_folder["files"][0]
    assert np.abs(adapted.predict_file(f0).probabilities["a"] - base.predict_file(f0).probabilities["a"]) > 1e-4
    # the first layer's statistics are the pooled statistics of its input over the served model inputs
    import torch

    from ser.adabn import moments_of
    from ser.audio import load_audio

    feats = [base.graph_batch(base.pre.features(load_audio(f, 16000))) for f in utterance_folder["files"]]

    m = _torch_model(seed=1)
    seen = []
    h = m.blocks[0].layers[0][1].register_forward_hook(lambda _m, i, _o: seen.append(i[0].numpy()))
    with torch.no_grad():
        for x in feats:
            m(torch.from_numpy(x))
    h.remove()
    np.testing.assert_allclose(_bn_stats(onnx.load(str(out / MODEL_FILE)))[0][0], moments_of(seen).mean, atol=1e-4)
    # --method rows still takes the row map (which needs the training statistics this folder lacks)
    code, stdout, err = run_cli(
        "model", "adapt", utterance_folder["model"], "--audio", target, "--out", tmp_path / "r", "--method", "rows"
    )
    assert code != 0 and "reference.parquet" in stdout + err and not (tmp_path / "r").exists()


def test_batchnorm_on_a_folded_graph_is_a_clear_error(tmp_path, run_cli):
    """A folder exported before the batch norms were kept (Conv + BN fused into one convolution, as constant folding
    or onnxruntime's own optimiser leaves it): refused with the reason, nothing written."""
    import onnxruntime as ort

    from ser.adabn import has_batchnorm
    from ser.export import write_model_folder
    from ser.features import FeatureConfig
    from ser.model_folder import MODEL_FILE

    folder = write_model_folder(tmp_path / "m", _torch_model(seed=2), labels=LABELS, feature_config=FeatureConfig())
    assert has_batchnorm(folder / MODEL_FILE)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # fuses Conv + BatchNormalization
    opts.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(str(folder / MODEL_FILE), opts, providers=["CPUExecutionProvider"])
    shutil.copyfile(tmp_path / "fused.onnx", folder / MODEL_FILE)
    assert not has_batchnorm(folder / MODEL_FILE)
    code, out, err = run_cli(
        "model", "adapt", folder, "--audio", tmp_path, "--out", tmp_path / "o", "--method", "batchnorm"
    )
    assert code != 0 and "folded" in out + err and not (tmp_path / "o").exists()


def test_the_bundled_model_keeps_its_batch_norms():
    from ser.adabn import has_batchnorm
    from ser.model_folder import MODEL_FILE
    from ser.pretrained import bundled_dir

    bundled = bundled_dir()
    if not (bundled / MODEL_FILE).is_file():
        pytest.skip("package installed without its bundled model")
    assert has_batchnorm(bundled / MODEL_FILE)  # rebuilt with the batch norms kept: AdaBN can act on it
