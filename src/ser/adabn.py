"""AdaBN: re-estimate the batch-norm statistics of an exported ONNX graph on unlabelled target-domain inputs.

AdaBN (Li et al., 2016, "Revisiting Batch Normalization for Practical Domain Adaptation") keeps every learned
weight and replaces each BatchNormalization layer's running mean and variance by the statistics of that layer's
input over the target domain. The layers are re-estimated one after another in topological order, so a later layer
sees the activations of the already-adapted earlier ones (its input distribution *after* adaptation).

Unlike the input-row map of :mod:`ser.adaptation`, this acts inside the network and so also on models that
standardise each clip's input rows themselves (``input_norm: utterance``; the ``cnn`` recipe and the bundled model),
which that map cannot change. It needs the BatchNormalization nodes to be in the graph: :func:`ser.export.export_onnx`
keeps them (no constant folding); folders exported before that have them folded into the convolutions, where the
separate (scale, bias, mean, variance) are no longer recoverable, and :func:`batchnorm_nodes` finds none.

Statistics (pure numpy, :class:`Moments`): per channel (axis 1 of the layer input ``(N, C, ...)``), the mean and the
population variance over every other axis and every clip, each element (frame, frequency bin) weighted equally, so
a long clip counts more than a short one. Clips are run one at a time (a batch of one clip, or of its equal-length
evaluation windows), so no padding enters the statistics. Accumulated with Chan et al.'s pairwise update in float64.

Why hand-written: no maintained library re-estimates batch-norm statistics inside an ONNX graph (onnxruntime's
training API and torch's AdaBN recipes need the trainable model, while a model folder ships the inference graph
only). The onnx I/O here is a thin shell: expose a node's input as a graph output, run onnxruntime, swap two
initializers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ser.adaptation import BATCHNORM_METHOD as METHOD
from ser.errors import SerError

__all__ = ["METHOD", "Moments", "adapt_batchnorm", "batchnorm_nodes", "has_batchnorm", "moments_of", "shift_summary"]
BN_OP = "BatchNormalization"


# ---------------------------------------------------------------------------------------------------------------
# statistics (pure)


@dataclass(frozen=True)
class Moments:
    """Running per-channel moments: ``count`` elements per channel, ``mean`` and ``m2`` (sum of squared deviations
    from the mean) float64 ``(C,)``."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> Moments:
        return cls(0, np.zeros(channels), np.zeros(channels))

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        """Moments of one layer input ``x`` ``(N, C, ...)`` over every axis but 1."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim < 2:
            raise SerError(f"a batch-norm input is (N, C, ...), got shape {a.shape}")
        flat = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)  # (C, elements)
        n = flat.shape[1]
        if n == 0:
            return cls.empty(a.shape[1])
        mean = flat.mean(axis=1)
        return cls(n, mean, ((flat - mean[:, None]) ** 2).sum(axis=1))

    def merge(self, other: Moments) -> Moments:
        """The moments of both sets together (Chan, Golub & LeVeque's pairwise update; exact up to rounding)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        if self.mean.shape != other.mean.shape:
            raise SerError(f"channel counts differ: {self.mean.shape[0]} and {other.mean.shape[0]}")
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        return Moments(n, mean, m2)

    @property
    def var(self) -> np.ndarray:
        """Population variance ``(C,)`` (what BatchNormalization divides by in inference)."""
        if self.count == 0:
            raise SerError("no elements to estimate a variance from")
        return self.m2 / self.count


def moments_of(xs: Iterable[np.ndarray]) -> Moments:
    """:class:`Moments` of several layer inputs ``(N_i, C, ...)`` pooled (trailing shapes may differ per input)."""
    acc: Moments | None = None
    for x in xs:
        m = Moments.of(x)
        acc = m if acc is None else acc.merge(m)
    if acc is None or acc.count == 0:
        raise SerError("no layer input to estimate batch-norm statistics from")
    return acc


def shift_summary(
    mean_s: np.ndarray, var_s: np.ndarray, mean_t: np.ndarray, var_t: np.ndarray, eps: float
) -> dict[str, float]:
    """How far a layer's target statistics moved from its training ones, in units the layer sees: the mean shift
    ``|mu_t - mu_s| / sqrt(var_s + eps)`` (mean and max over channels) and the deviation ratio
    ``sqrt((var_t + eps) / (var_s + eps))`` (median, min, max over channels). All inputs ``(C,)``."""
    sd_s = np.sqrt(np.asarray(var_s, np.float64) + eps)
    shift = np.abs(np.asarray(mean_t, np.float64) - np.asarray(mean_s, np.float64)) / sd_s
    ratio = np.sqrt(np.asarray(var_t, np.float64) + eps) / sd_s
    return {
        "mean_shift_sd": float(shift.mean()),
        "max_shift_sd": float(shift.max()),
        "sd_ratio_median": float(np.median(ratio)),
        "sd_ratio_min": float(ratio.min()),
        "sd_ratio_max": float(ratio.max()),
    }


# ---------------------------------------------------------------------------------------------------------------
# the onnx shell


def batchnorm_nodes(model: Any) -> list[Any]:
    """The inference-mode BatchNormalization nodes of ``model`` (an ``onnx.ModelProto``) in its main graph, in
    topological order (ONNX requires ``graph.node`` to be sorted). Nodes in training mode (``training_mode=1``)
    or whose mean / variance are not initializers are refused: re-estimating them would not mean the same."""
    init = {t.name for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != BN_OP:
            continue
        attrs = {a.name: a for a in node.attribute}
        if "training_mode" in attrs and attrs["training_mode"].i != 0:
            raise SerError(f"BatchNormalization node {node.name!r} is in training mode")
        if len(node.input) < 5 or node.input[3] not in init or node.input[4] not in init:
            raise SerError(f"BatchNormalization node {node.name!r}: its mean and variance are not initializers")
        out.append(node)
    return out


def has_batchnorm(onnx_path: Any) -> bool:
    """Does the graph at ``onnx_path`` hold BatchNormalization nodes AdaBN can re-estimate?"""
    import onnx

    try:
        return bool(batchnorm_nodes(onnx.load(str(onnx_path))))
    except SerError:
        return False


def _epsilon(node: Any) -> float:
    for a in node.attribute:
        if a.name == "epsilon":
            return float(a.f)
    return 1e-5  # the ONNX default


def _set_initializer(model: Any, node: Any, slot: int, value: np.ndarray) -> None:
    """Write ``value`` into input ``slot`` of ``node``: in place when no other node reads that initializer, else as a
    new initializer the node alone reads (a shared one would change another layer too)."""
    from onnx import numpy_helper

    name = node.input[slot]
    users = sum(1 for n in model.graph.node for i in n.input if i == name)
    users += sum(1 for o in model.graph.output if o.name == name)
    old = next(t for t in model.graph.initializer if t.name == name)
    dtype = numpy_helper.to_array(old).dtype
    if users == 1:
        old.CopyFrom(numpy_helper.from_array(value.astype(dtype), name))
        return
    new_name = f"{name}/adabn/{node.name or id(node)}"
    model.graph.initializer.append(numpy_helper.from_array(value.astype(dtype), new_name))
    node.input[slot] = new_name


def _session(model: Any, output: str, threads: int) -> Any:
    """An onnxruntime session of ``model`` with ``output`` (an internal tensor) exposed as an extra graph output."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def adapt_batchnorm(
    model: Any, batches: Sequence[np.ndarray], *, input_name: str, threads: int = 1
) -> tuple[Any, list[dict[str, Any]]]:
    """AdaBN of ``model`` (an ``onnx.ModelProto``, not modified) on ``batches``: a list of graph inputs, one clip
    each (``(B, F, T)`` float32: the clip, or its equal-length evaluation windows; never padded).

    For each BatchNormalization node in topological order: run the graph adapted so far over every batch, pool the
    node input's per-channel :class:`Moments`, and replace the node's mean and variance initializers. Returns the
    adapted copy and one summary per node (name, channels, epsilon, :func:`shift_summary`). :class:`SerError` when
    the graph has no such node or ``batches`` is empty."""
    import onnx

    if not batches:
        raise SerError("no target input to estimate batch-norm statistics from")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = batchnorm_nodes(out)
    if not nodes:
        raise SerError(
            "the graph has no BatchNormalization node (a model exported with constant folding has them folded into "
            "its convolutions): re-export it from its checkpoint with this version to adapt its batch norms"
        )
    from onnx import numpy_helper

    layers = []
    for node in nodes:
        sess = _session(out, node.input[0], threads)
        acts = (sess.run([node.input[0]], {input_name: np.ascontiguousarray(b, dtype=np.float32)})[0] for b in batches)
        mom = moments_of(acts)
        init = {t.name: t for t in out.graph.initializer}
        mean_s = numpy_helper.to_array(init[node.input[3]]).astype(np.float64)
        var_s = numpy_helper.to_array(init[node.input[4]]).astype(np.float64)
        if mean_s.shape != mom.mean.shape:
            raise SerError(f"{node.name}: {mean_s.shape[0]} channels in the graph, {mom.mean.shape[0]} in its input")
        eps = _epsilon(node)
        _set_initializer(out, node, 3, mom.mean)
        _set_initializer(out, node, 4, mom.var)
        layers.append(
            {
                "node": node.name,
                "channels": int(mom.mean.shape[0]),
                "epsilon": eps,
                "elements_per_channel": int(mom.count),
                **shift_summary(mean_s, var_s, mom.mean, mom.var, eps),
            }
        )
    return out, layers
