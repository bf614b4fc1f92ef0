"""Training-time degradation draws of :mod:`ser.degrade` (the held-out noises are refused)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ser.degrade._base import (
    HELD_OUT_NOISES,
    TRAIN_NOISES,
    RngLike,
    as_rng,
)
from ser.degrade.spec import (
    Chain,
    Codec,
    Degradation,
    Gain,
    Noise,
    Reverb,
    Telephone,
    parse,
)
from ser.errors import ConfigError, LeakageError, validation_reason

# ---- training draws ----------------------------------------------------------------------------------------

Range = tuple[float, float]


class TrainingDegradationConfig(BaseModel):
    """Probabilities and ranges of :func:`sample_training_degradation`. Ranges are ``(low, high)``, uniform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p_reverb: float = Field(0.3, ge=0, le=1, description="probability of room reverb")
    rt60_s: Range = Field((0.3, 0.9), description="Sabine RT60 (s), rounded to rt60_step_s")
    rt60_step_s: float = Field(0.1, gt=0, description="RT60 grid (s): few distinct rooms, so the RIR cache hits")
    room_positions: int = Field(4, ge=1, description="source/mic placements drawn from (position seeds 0..n-1)")
    p_noise: float = Field(0.5, ge=0, le=1, description="probability of additive noise")
    snr_db: Range = Field((0.0, 20.0), description="SNR of the noise (dB)")
    p_gain: float = Field(0.3, ge=0, le=1, description="probability of a level change")
    gain_db: Range = Field((-20.0, 6.0), description="level change (dB)")
    gain_clip: bool = Field(True, description="clip at full scale after a level change")
    p_channel: float = Field(0.3, ge=0, le=1, description="probability of a telephone or codec channel")
    channels: tuple[str, ...] = Field(
        ("telephone", "telephone:alaw", "codec:mp3", "codec:opus", "codec:vorbis"),
        description="channel steps drawn from uniformly (condition-string syntax)",
    )
    codec_level: Range = Field((0.5, 0.95), description="libsndfile compression level of a codec channel")

    @model_validator(mode="after")
    def _check(self) -> TrainingDegradationConfig:
        for name in ("rt60_s", "snr_db", "gain_db", "codec_level"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: low {lo} > high {hi}")
        if self.rt60_s[0] <= 0 or not 0 <= self.codec_level[0] <= self.codec_level[1] < 1:
            raise ValueError("rt60_s must be positive and codec_level within [0, 1)")
        for ch in self.channels:
            try:
                chain = parse(ch)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            if len(chain) != 1 or not isinstance(chain[0], Telephone | Codec):
                raise ValueError(f"channel {ch!r} is not one telephone or codec step")
        if self.p_channel > 0 and not self.channels:
            raise ValueError("p_channel > 0 needs at least one channel")
        return self


def make_training_config(data: Mapping[str, Any] | None = None) -> TrainingDegradationConfig:
    """Build a :class:`TrainingDegradationConfig` from a mapping; invalid values raise :class:`ConfigError`."""
    try:
        return TrainingDegradationConfig(**dict(data or {}))
    except ValidationError as exc:
        raise ConfigError(f"training degradation config: {validation_reason(exc, None)}") from None


def check_training_noises(noises: Iterable[str], *, allow_held_out: bool = False) -> tuple[str, ...]:
    """``noises`` as a tuple; raises :class:`~ser.errors.LeakageError` if one is in :data:`HELD_OUT_NOISES`
    (unless ``allow_held_out``)."""
    names = tuple(noises)
    bad = [n for n in names if n in HELD_OUT_NOISES]
    if bad and not allow_held_out:
        raise LeakageError(
            f"noise(s) {', '.join(bad)} are held out for testing (HELD_OUT_NOISES); train with "
            f"{', '.join(TRAIN_NOISES)} or pass allow_held_out=True"
        )
    return names


def sample_training_degradation(
    rng: RngLike,
    noises: Iterable[str] = TRAIN_NOISES,
    config: TrainingDegradationConfig | None = None,
    *,
    allow_held_out: bool = False,
) -> Chain:
    """Draw a random training chain: reverb → noise → level → channel, each step with its own probability.

    ``noises`` are the names the noise step picks from (uniformly); a held-out noise raises
    :class:`~ser.errors.LeakageError` unless ``allow_held_out``. Always consumes the same number of draws from
    ``rng``, so a seed gives the same chain. Apply the result with :func:`apply` (and a noise folder).
    """
    cfg = config or TrainingDegradationConfig()
    names = check_training_noises(noises, allow_held_out=allow_held_out)
    g = as_rng(rng)
    chain: list[Degradation] = []

    use, rt60, pos = g.random() < cfg.p_reverb, g.uniform(*cfg.rt60_s), int(g.integers(0, cfg.room_positions))
    if use:
        rt60 = max(cfg.rt60_step_s, round(round(rt60 / cfg.rt60_step_s) * cfg.rt60_step_s, 6))
        chain.append(Reverb(rt60_s=rt60, position_seed=pos))
    use, snr, pick = g.random() < cfg.p_noise, g.uniform(*cfg.snr_db), g.random()
    if use and names:
        chain.append(Noise(noise=names[min(int(pick * len(names)), len(names) - 1)], snr_db=float(snr)))
    use, db = g.random() < cfg.p_gain, g.uniform(*cfg.gain_db)
    if use:
        chain.append(Gain(gain_db=float(db), clip=cfg.gain_clip))
    use, pick, level = g.random() < cfg.p_channel, g.random(), g.uniform(*cfg.codec_level)
    if use and cfg.channels:
        (step,) = parse(cfg.channels[min(int(pick * len(cfg.channels)), len(cfg.channels) - 1)])
        if isinstance(step, Codec):
            step = Codec(codec=step.codec, compression_level=float(level))
        chain.append(step)
    return tuple(chain)
