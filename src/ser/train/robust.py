"""Robustness augmentation: seeded degraded copies ("variants") of *training* clips, through the feature cache.

Channel effects (telephone band, codecs, reverb, noise at an SNR, level) act on the waveform, so they cannot be
drawn on cached log-mels the way SpecAugment is. Instead each training clip gets ``copies`` variants, each one
draw of :func:`ser.degrade.sample_training_degradation` (held-out noises refused), optionally after a speaker
variation (tempo change, pitch shift: :mod:`ser.augment`'s audiomentations wrappers; formant shift:
:func:`ser.augment.formant_shift`, VTLP), whose frame features are
computed once and cached. A variant is added to the training set beside its clean clip, with the clip's label;
it is never built for a validation or test clip (:func:`ser.train.cv.training_variants` hands the source the
training rows only and checks what comes back).

Determinism and the cache: the draw of copy ``j`` of a clip depends only on (the clip's content hash, ``j``,
:attr:`RobustConfig.seed`, the draw settings), never on the fold, so a clip that trains in five folds is degraded
once. The cache key of a variant is a SHA-256 of (clip hash, the drawn chain as a condition string, the seed of
its random parts, the speaker variation, :data:`VARIANT_VERSION`; the formant warp only when one was drawn, so
the keys of configurations without it are those from before it existed); entries live under ``<cache>/variants/`` in the
:class:`~ser.features.cache.FeatureCache` layout. A rerun (or a resumed, killed run) reads them back instead of
decoding and degrading again.

Pure core: :class:`RobustConfig`, :func:`draw_variant`, :func:`variant_key`, :func:`render_variant`. I/O shell:
:class:`VariantSource` (decode, degrade, extract, cache, in worker processes, with a progress bar).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ser.degrade import TRAIN_NOISES, Chain, Noise, check_training_noises, format_chain, make_training_config
from ser.errors import ConfigError, SerError, validation_reason

VARIANT_VERSION = 1
"""Bumped when the code that renders a variant changes its samples, so old cache entries are not reused."""

REDRAWS = 10
"""Draws of a degradation chain for one variant before an empty one is accepted."""

NOISE_DIR_ENV = "SER_NOISE_DIR"
"""Environment variable naming the folder of noise recordings (babble.flac, ...) when none is given."""

log = logging.getLogger("ser.train")

Variants = dict[str, list[dict[str, np.ndarray]]]
"""``{utt_id: [{kind: (rows, T) array}, ...]}``: the frame features of each training clip's variants."""


class RobustConfig(BaseModel):
    """How many degraded copies each training clip gets, and how they are drawn (a recipe's ``robust`` field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    copies: int = Field(2, ge=1, le=20, description="degraded variants per training clip (beside the clean one)")
    seed: int = Field(0, ge=0, description="seed of the draws (with the clip's content hash and the copy index)")
    noises: tuple[str, ...] = Field(TRAIN_NOISES, description="noises the noise step picks from (never held-out)")
    degrade: dict[str, Any] = Field(
        default_factory=dict,
        description="ser.degrade.TrainingDegradationConfig fields: probabilities and ranges of each step",
    )
    p_pitch: float = Field(0.0, ge=0, le=1, description="probability of a pitch shift (speaker variation)")
    pitch_semitones: tuple[float, float] = Field((-2.0, 2.0), description="pitch shift range (semitones)")
    p_tempo: float = Field(0.0, ge=0, le=1, description="probability of a tempo change (speaker variation)")
    tempo_rate: tuple[float, float] = Field((0.9, 1.1), description="speed factor range (> 1 is faster)")
    p_formant: float = Field(0.0, ge=0, le=1, description="probability of a formant shift (VTLP; speaker variation)")
    formant_warp: tuple[float, float] = Field(
        (0.9, 1.1), description="VTLP warp factor range: formants move from f to about factor * f (> 1 is up)"
    )

    @field_validator("noises")
    @classmethod
    def _no_held_out(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from ser.errors import LeakageError

        try:
            return check_training_noises(v)
        except LeakageError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _check(self) -> RobustConfig:
        for name in ("pitch_semitones", "tempo_rate", "formant_warp"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: low {lo} > high {hi}")
        if self.tempo_rate[0] <= 0:
            raise ValueError("tempo_rate must be positive")
        if not (self.formant_warp[0] >= 0.5 and self.formant_warp[1] <= 2.0):
            raise ValueError("formant_warp must lie within [0.5, 2] (VTLP uses about 0.9-1.1)")
        try:
            make_training_config(self.degrade)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def recordings(self) -> tuple[str, ...]:
        """The noises that are recordings (need a noise folder), not generated."""
        return tuple(n for n in self.noises if not n.startswith("generated-"))


def make_robust_config(data: Mapping[str, Any] | RobustConfig | None) -> RobustConfig:
    """A :class:`RobustConfig` from a recipe's ``robust`` mapping; invalid values raise :class:`ConfigError`."""
    if isinstance(data, RobustConfig):
        return data
    try:
        return RobustConfig(**dict(data or {}))
    except ValidationError as exc:
        raise ConfigError(f"robust augmentation: {validation_reason(exc, None)}") from None


# ---- the pure core ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantDraw:
    """One variant of one clip: speaker variation (``None`` = not applied), the degradation chain, the seed of the
    chain's random parts (noise offsets), the cache key, and the formant warp factor (VTLP)."""

    copy: int
    pitch_semitones: float | None
    tempo_rate: float | None
    chain: Chain
    apply_seed: int
    key: str
    formant_warp: float | None = None

    @property
    def condition(self) -> str:
        """The chain as a condition string (``"clean"`` when the draw applied no degradation)."""
        return format_chain(self.chain)


def _clip_seed(sha: str) -> int:
    if not sha:
        raise SerError("a robust variant needs the clip's content hash (manifest column sha256)")
    return int(hashlib.sha256(str(sha).lower().encode()).hexdigest()[:15], 16)


def draw_variant(sha: str, copy: int, cfg: RobustConfig) -> VariantDraw:
    """The ``copy``-th variant of the clip with content hash ``sha``: deterministic in (sha, copy, cfg), never in
    the fold or the order clips are seen. Each copy has its own generator, so ``copies=3`` extends ``copies=2``.
    An empty degradation chain (every step's coin came up tails) is drawn again, up to :data:`REDRAWS` times: a
    variant identical to its clean clip would only repeat it. The formant draw comes after every other draw, so
    adding it left the draws (and cache keys) of configurations without it as they were."""
    from ser.degrade import sample_training_degradation

    g = np.random.default_rng([cfg.seed, _clip_seed(sha), int(copy)])
    use_pitch, pitch = g.random() < cfg.p_pitch, float(g.uniform(*cfg.pitch_semitones))
    use_tempo, tempo = g.random() < cfg.p_tempo, float(g.uniform(*cfg.tempo_rate))
    degrade_cfg = make_training_config(cfg.degrade)
    chain: Chain = ()
    for _ in range(REDRAWS):
        chain = sample_training_degradation(g, cfg.noises, degrade_cfg)
        if chain:
            break
    apply_seed = int(g.integers(0, 2**63 - 1))
    use_formant, warp = g.random() < cfg.p_formant, float(g.uniform(*cfg.formant_warp))
    p, t = (pitch if use_pitch else None), (tempo if use_tempo else None)
    f = warp if use_formant else None
    return VariantDraw(copy, p, t, chain, apply_seed, variant_key(sha, chain, apply_seed, p, t, f), f)


def variant_key(
    sha: str, chain: Chain, apply_seed: int, pitch: float | None, tempo: float | None, formant: float | None = None
) -> str:
    """SHA-256 (hex) of everything that decides a variant's samples: its cache key (``formant`` enters only when
    drawn, so a variant without one keeps the key it had before formant shifts existed)."""
    fields: dict[str, Any] = {
        "clip": str(sha).lower(),
        "chain": format_chain(chain),
        "seed": int(apply_seed),
        "pitch": pitch,
        "tempo": tempo,
        "version": VARIANT_VERSION,
    }
    if formant is not None:
        fields["formant"] = float(formant)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def render_variant(y: np.ndarray, sr: int, draw: VariantDraw, noises: Any = None) -> np.ndarray:
    """The variant's waveform: speaker variation (tempo, then pitch; audiomentations; then the formant shift,
    :func:`ser.augment.formant_shift`), then the degradation chain (:func:`ser.degrade.apply` seeded with
    ``draw.apply_seed``). ``noises``: the noise folder or arrays by name. A tempo change changes the length; the
    formant shift and the chain keep it."""
    from ser.augment import WaveParams, apply_waveform_params, formant_shift
    from ser.degrade import apply

    x = np.asarray(y, dtype=np.float32)
    if draw.pitch_semitones is not None or draw.tempo_rate is not None:
        params = WaveParams(stretch_rate=draw.tempo_rate, pitch_semitones=draw.pitch_semitones, keep_length=False)
        x = apply_waveform_params(x, sr, params)
    if draw.formant_warp is not None:
        x = formant_shift(x, sr, draw.formant_warp)
    return apply(x, sr, draw.chain, draw.apply_seed, noises=noises)


def uses_recordings(draws: list[VariantDraw]) -> bool:
    """Whether any draw mixes a recorded noise (and so needs the noise folder)."""
    return any(isinstance(s, Noise) and not s.noise.startswith("generated-") for d in draws for s in d.chain)


# ---- the I/O shell ---------------------------------------------------------------------------------------------


def _render_job(
    path: str, sha: str, draws: list[VariantDraw], cfg: Any, kinds: tuple[str, ...], cache_root: str | None, noise_dir
) -> tuple[list[dict[str, np.ndarray] | None], str | None]:
    """Worker: every missing variant of one clip (decoded once), cached; never raises (the reason is returned)."""
    from ser.audio import load_audio
    from ser.features.cache import FeatureCache
    from ser.features.frames import compute

    cache = FeatureCache(cache_root)
    try:
        y = load_audio(path, cfg.sr)
        out: list[dict[str, np.ndarray] | None] = []
        for d in draws:
            feats = compute(render_variant(y, cfg.sr, d, noise_dir), cfg, kinds)  # on one BLAS thread, as everywhere
            for kind in kinds:
                cache.put(kind, cfg.kind_hash(kind), d.key, {"data": feats[kind]})
            out.append(feats)
        return out, None
    except SerError as exc:
        return [None] * len(draws), str(exc)
    except Exception as exc:  # one bad clip must not stop the run; it only loses its variants
        return [None] * len(draws), f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class VariantSource:
    """Builds (or reads back) the variants of the training clips it is handed: ``source(train_rows) -> Variants``.

    ``train_rows``: manifest rows (``utt_id``, ``path``, ``sha256``) of one training set. ``cache_dir``: the feature
    cache root (variants go to ``<cache_dir>/variants``; ``None`` computes them every time). ``noise_dir``: the noise
    recordings, else ``$SER_NOISE_DIR``; needed only when a draw names a recording. ``kinds``: the frame kinds to
    extract (log-mel always, since the silence trim reads it).
    """

    config: RobustConfig
    kinds: tuple[str, ...] = ("logmel",)
    feature_cfg: Any = None
    cache_dir: Path | None = None
    noise_dir: Path | None = None
    workers: int = 1
    progress: bool = False

    def draws(self, sha: str) -> list[VariantDraw]:
        return [draw_variant(sha, j, self.config) for j in range(self.config.copies)]

    def _noise_dir(self, needed: bool) -> str | None:
        folder = self.noise_dir or os.environ.get(NOISE_DIR_ENV) or None
        if needed and folder is None:
            raise ConfigError(
                f"robust augmentation mixes recorded noises ({', '.join(self.config.recordings())}): give the noise "
                f"folder (--noise-dir, or ${NOISE_DIR_ENV}), or set robust.noises to generated-white/generated-pink"
            )
        return None if folder is None else str(folder)

    def __call__(self, train_rows: pd.DataFrame) -> Variants:
        from ser.features import FeatureConfig
        from ser.features.cache import FeatureCache

        cfg = self.feature_cfg or FeatureConfig()
        kinds = tuple(sorted({"logmel", *self.kinds}))
        cache = FeatureCache(None if self.cache_dir is None else Path(self.cache_dir) / "variants")
        for kind in kinds:
            cache.describe(kind, cfg)
        hashes = {k: cfg.kind_hash(k) for k in kinds}
        out: Variants = {}
        todo: list[tuple[str, str, str, list[VariantDraw]]] = []
        for utt, path, sha in _rows(train_rows):
            draws = self.draws(sha)
            found = [self._lookup(cache, hashes, d.key) for d in draws]
            out[utt] = [f for f in found if f is not None]
            missing = [d for d, f in zip(draws, found, strict=True) if f is None]
            if missing:
                todo.append((utt, path, sha, missing))
        if todo:
            noise_dir = self._noise_dir(uses_recordings([d for *_, ds in todo for d in ds]))
            root = None if cache.root is None else str(cache.root)
            failed = self._render(todo, cfg, kinds, root, noise_dir, out)
            if failed:
                log.warning("robust variants: %d clip(s) failed and train without variants, e.g. %s", *failed)
        return out

    @staticmethod
    def _lookup(cache: Any, hashes: dict[str, str], key: str) -> dict[str, np.ndarray] | None:
        found = {}
        for kind, h in hashes.items():
            arrays = cache.get(kind, h, key)
            if arrays is None:
                return None
            found[kind] = arrays["data"]
        return found

    def _render(self, todo, cfg, kinds, root, noise_dir, out: Variants) -> tuple[int, str] | None:
        from ser.progress import track

        args = (cfg, kinds, root, noise_dir)
        if self.workers <= 1 or len(todo) <= 1:
            results: Any = ((utt, *_render_job(path, sha, ds, *args)) for utt, path, sha, ds in todo)
        else:
            from joblib import Parallel, delayed

            parallel = Parallel(n_jobs=min(self.workers, len(todo)), backend="loky", return_as="generator_unordered")
            results = parallel(delayed(_tagged)(utt, path, sha, ds, *args) for utt, path, sha, ds in todo)
        failures = []
        n = sum(len(ds) for *_, ds in todo)
        for utt, feats, err in track(results, f"robust variants ({n} to make)", total=len(todo), enabled=self.progress):
            out[utt].extend(f for f in feats if f is not None)
            if err:
                failures.append(f"{utt}: {err}")
        return (len(failures), failures[0]) if failures else None


def _tagged(utt, path, sha, draws, *args):
    return (utt, *_render_job(path, sha, draws, *args))


def _rows(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    for col in ("utt_id", "path"):
        if col not in frame.columns:
            raise SerError(f"training rows lack column {col!r}")
    if "sha256" not in frame.columns or frame["sha256"].isna().any():
        raise SerError("robust variants need the manifest's sha256 column (run `ser data ingest`)")
    columns = zip(frame["utt_id"], frame["path"], frame["sha256"], strict=True)
    return [(str(u), str(p), str(s).lower()) for u, p, s in columns]
