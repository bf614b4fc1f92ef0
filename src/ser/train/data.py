"""In-memory datasets of precomputed features, random crops, fixed windows and the padding collate.

An :class:`ArrayDataset` holds one array per clip — frame features ``(F, T)`` (``layout="FT"``, the layout of
``ser.features.frames``) or ``(T, F)`` (``layout="TF"``), or a raw waveform ``(N,)`` — and an integer label per
clip. Internally every 2-D array is kept as ``(F, T)`` float32, so batches come out as ``(B, F, T_max)`` (or
``(B, N_max)`` for waveforms) with ``lengths`` ``(B,)`` along the last axis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch

from ser.errors import ConfigError, SerError

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""Training-time augmentation: ``transform(array, rng) -> array`` in the dataset's internal layout (``(F, T)`` or
``(N,)``); it may change the time length, not the feature count."""


class ArrayDataset:
    """Clips held in memory: ``ds[i] -> (array (F, T) | (N,), label)``.

    ``transform`` (augmentation) is not applied by ``__getitem__``; the trainer applies it to training batches only.
    ``teacher_logits`` ``(N, n_classes)``: a teacher's logits (or log-probabilities) of each clip, the soft targets a
    distilling run trains towards (:class:`~ser.train.trainer.DistilLoss`); training data only.
    """

    def __init__(
        self,
        arrays: Sequence[np.ndarray],
        labels: Sequence[int] | np.ndarray,
        *,
        n_classes: int | None = None,
        layout: Literal["FT", "TF"] = "FT",
        transform: Transform | None = None,
        ids: Sequence[str] | None = None,
        teacher_logits: np.ndarray | None = None,
    ):
        if layout not in ("FT", "TF"):
            raise ConfigError(f"layout must be FT or TF, got {layout!r}")
        labels = np.asarray(labels)
        if len(arrays) == 0:
            raise SerError("dataset is empty")
        if labels.shape != (len(arrays),):
            raise SerError(f"{len(arrays)} arrays but labels of shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise SerError(f"labels must be integer class indices, got dtype {labels.dtype}")
        self.labels = labels.astype(np.int64)
        self.n_classes = int(n_classes) if n_classes is not None else int(self.labels.max()) + 1
        if self.labels.min() < 0 or self.labels.max() >= self.n_classes:
            raise SerError(f"labels must lie in [0, {self.n_classes}), got {self.labels.min()}..{self.labels.max()}")
        if self.n_classes < 2:
            raise SerError("a classification dataset needs at least 2 classes")
        self.arrays: list[np.ndarray] = []
        ndim = None
        for i, a in enumerate(arrays):
            a = np.asarray(a, dtype=np.float32)
            if a.ndim == 2 and layout == "TF":
                a = a.T
            if a.ndim not in (1, 2) or a.shape[-1] == 0:
                raise SerError(f"clip {self._name(ids, i)}: expected (F, T), (T, F) or (N,), got shape {a.shape}")
            if ndim is None:
                ndim = a.ndim
            elif a.ndim != ndim:
                raise SerError(f"clip {self._name(ids, i)}: mixes 1-D and 2-D arrays in one dataset")
            if a.ndim == 2 and self.arrays and a.shape[0] != self.arrays[0].shape[0]:
                raise SerError(
                    f"clip {self._name(ids, i)}: {a.shape[0]} feature rows, the first clip has "
                    f"{self.arrays[0].shape[0]} (is the layout {layout!r} right?)"
                )
            if not np.isfinite(a).all():
                raise SerError(f"clip {self._name(ids, i)}: contains NaN or infinite values")
            self.arrays.append(np.ascontiguousarray(a))
        self.is_waveform = ndim == 1
        self.n_features = 1 if self.is_waveform else int(self.arrays[0].shape[0])
        self.transform = transform
        self.ids = list(ids) if ids is not None else None
        if self.ids is not None and len(self.ids) != len(self.arrays):
            raise SerError(f"{len(self.arrays)} arrays but {len(self.ids)} ids")
        self.teacher_logits: np.ndarray | None = None
        if teacher_logits is not None:
            t = np.asarray(teacher_logits, dtype=np.float32)
            if t.shape != (len(self.arrays), self.n_classes):
                raise SerError(
                    f"teacher logits of shape {t.shape}, expected {(len(self.arrays), self.n_classes)} (clips, classes)"
                )
            if not np.isfinite(t).all():
                raise SerError("teacher logits contain NaN or infinite values")
            self.teacher_logits = t

    @staticmethod
    def _name(ids: Sequence[str] | None, i: int) -> str:
        return f"{ids[i]!s}" if ids is not None and i < len(ids) else f"#{i}"

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.arrays[i], int(self.labels[i])

    @property
    def lengths(self) -> np.ndarray:
        """Time length of each clip (frames, or samples for waveforms)."""
        return np.array([a.shape[-1] for a in self.arrays], dtype=np.int64)

    def class_counts(self) -> np.ndarray:
        """Clips per class ``(n_classes,)``."""
        return np.bincount(self.labels, minlength=self.n_classes)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        """A dataset of the clips at ``indices`` (arrays shared, not copied)."""
        idx = [int(i) for i in indices]
        sub = object.__new__(ArrayDataset)
        sub.arrays = [self.arrays[i] for i in idx]
        sub.labels = self.labels[idx]
        sub.n_classes, sub.is_waveform, sub.n_features = self.n_classes, self.is_waveform, self.n_features
        sub.transform = self.transform
        sub.ids = [self.ids[i] for i in idx] if self.ids is not None else None
        sub.teacher_logits = None if self.teacher_logits is None else self.teacher_logits[idx]
        if not sub.arrays:
            raise SerError("subset is empty")
        return sub


def random_crop(array: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``length`` steps along the last axis; clips no longer than that come back whole."""
    t = array.shape[-1]
    if t <= length:
        return array
    start = int(rng.integers(0, t - length + 1))
    return array[..., start : start + length]


def fixed_windows(array: np.ndarray, window: int, hop: int) -> list[np.ndarray]:
    """Windows of ``window`` steps every ``hop`` along the last axis, the last one aligned to the clip's end so the
    tail is covered; a clip no longer than ``window`` is one window."""
    if window < 1 or hop < 1:
        raise ConfigError("window and hop must be positive")
    t = array.shape[-1]
    if t <= window:
        return [array]
    starts = list(range(0, t - window + 1, hop))
    if starts[-1] != t - window:
        starts.append(t - window)
    return [array[..., s : s + window] for s in starts]


def pad_collate(arrays: Sequence[np.ndarray], labels: Sequence[int] | None = None):
    """Zero-pad arrays along the last axis into one batch.

    Returns ``(x, lengths, y)``: ``x`` ``(B, F, T_max)`` or ``(B, N_max)`` float32, ``lengths`` ``(B,)`` int64,
    ``y`` ``(B,)`` int64 (``None`` without labels).
    """
    lengths = np.array([a.shape[-1] for a in arrays], dtype=np.int64)
    t_max = int(lengths.max())
    out = np.zeros((len(arrays), *arrays[0].shape[:-1], t_max), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, ..., : a.shape[-1]] = a
    y = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return torch.from_numpy(out), torch.from_numpy(lengths), y


def training_batches(
    ds: ArrayDataset,
    batch_size: int,
    rng: np.random.Generator,
    crop: int | None = None,
    augment: bool = True,
    indices: bool = False,
) -> Iterator[tuple]:
    """One shuffled epoch: each clip randomly cropped to ``crop`` steps (if longer), then ``ds.transform``
    (if ``augment``), then padded: yields ``(x, lengths, y)``, with ``indices`` ``(x, lengths, y, idx)`` where
    ``idx`` ``(B,)`` are the batch's clip indices into ``ds``. All randomness comes from ``rng``."""
    order = rng.permutation(len(ds))
    for s in range(0, len(order), batch_size):
        arrays, labels = [], []
        chunk = order[s : s + batch_size]
        for i in chunk:
            a, label = ds[int(i)]
            if crop is not None:
                a = random_crop(a, crop, rng)
            if augment and ds.transform is not None:
                a = _checked_transform(ds.transform, a, rng)
            arrays.append(a)
            labels.append(label)
        x, lengths, y = pad_collate(arrays, labels)
        yield (x, lengths, y, np.asarray(chunk, dtype=np.int64)) if indices else (x, lengths, y)


def _checked_transform(transform: Transform, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.asarray(transform(a, rng), dtype=np.float32)
    if out.ndim != a.ndim or out.shape[:-1] != a.shape[:-1] or out.shape[-1] == 0:
        raise SerError(f"transform changed the array shape from {a.shape} to {out.shape} (only time may change)")
    return out


def eval_batches(
    ds: ArrayDataset, batch_size: int, window: int | None = None, hop: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Deterministic evaluation batches, no augmentation: yields ``(x, lengths, clip_index)``.

    Whole clips when ``window`` is None; otherwise fixed windows (see :func:`fixed_windows`, ``hop`` defaults to
    half the window) whose rows the caller averages back per clip through ``clip_index``. Items are sorted by
    length so a batch carries little padding.
    """
    items: list[tuple[int, np.ndarray]] = []
    for i, a in enumerate(ds.arrays):
        if window is None:
            items.append((i, a))
        else:
            items.extend((i, w) for w in fixed_windows(a, window, hop or max(1, window // 2)))
    items.sort(key=lambda it: it[1].shape[-1])
    for s in range(0, len(items), batch_size):
        chunk = items[s : s + batch_size]
        x, lengths, _ = pad_collate([a for _, a in chunk])
        yield x, lengths, np.array([i for i, _ in chunk], dtype=np.int64)
