"""Degradation specs of :mod:`ser.degrade`, the string grammar, and :func:`apply`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ser.degrade._base import NAME_PATTERN, NoiseSource, RngLike, as_rng, check_sr, mono
from ser.degrade.noise import mix_at_snr, noise_array
from ser.degrade.room import reverberate
from ser.degrade.signal import codec_roundtrip, gain, telephone
from ser.errors import ConfigError, validation_reason

# ---- specs -------------------------------------------------------------------------------------------------


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __str__(self) -> str:
        return self.token()

    def token(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class Telephone(_Spec):
    """Telephone channel: 300–3400 Hz band, 8 kHz, G.711 ``law`` (see :func:`telephone`)."""

    kind: Literal["telephone"] = "telephone"
    law: Literal["mulaw", "alaw", "none"] = "mulaw"

    def token(self) -> str:
        return "telephone" if self.law == "mulaw" else f"telephone:{self.law}"


class Codec(_Spec):
    """Lossy codec round trip at libsndfile ``compression_level`` (see :func:`codec_roundtrip`)."""

    kind: Literal["codec"] = "codec"
    codec: Literal["mp3", "opus", "vorbis"]
    compression_level: float = Field(0.9, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _mp3_level(self) -> Codec:
        if self.codec == "mp3" and self.compression_level >= 1.0:
            raise ValueError("mp3 compression level must be < 1")
        return self

    def token(self) -> str:
        level = "" if self.compression_level == 0.9 else f"@{_num(self.compression_level)}"
        return f"codec:{self.codec}{level}"


class Reverb(_Spec):
    """Shoebox-room reverberation, Sabine ``rt60_s`` in the :data:`DEFAULT_ROOM_M` room (see :func:`reverberate`)."""

    kind: Literal["reverb"] = "reverb"
    rt60_s: float = Field(0.6, gt=0.0, le=3.0)
    position_seed: int = Field(0, ge=0)

    def token(self) -> str:
        if self.position_seed:
            return f"reverb:{_num(self.rt60_s)}@{self.position_seed}"
        return "reverb" if self.rt60_s == 0.6 else f"reverb:{_num(self.rt60_s)}"


class Noise(_Spec):
    """Additive noise ``noise`` (a recording's name or a generated noise) at ``snr_db`` dB (see :func:`mix_at_snr`)."""

    kind: Literal["noise"] = "noise"
    noise: str = Field(pattern=f"^{NAME_PATTERN}$")
    snr_db: float = Field(ge=-30.0, le=60.0)

    def token(self) -> str:
        return f"noise:{self.noise}@{_num(self.snr_db)}"


class Gain(_Spec):
    """Level change of ``gain_db`` dB, optionally clipped at full scale (see :func:`gain`)."""

    kind: Literal["gain"] = "gain"
    gain_db: float = Field(ge=-120.0, le=60.0)
    clip: bool = False

    def token(self) -> str:
        return f"gain:{_num(self.gain_db)}{':clip' if self.clip else ''}"


Degradation = Annotated[Telephone | Codec | Reverb | Noise | Gain, Field(discriminator="kind")]
"""One degradation step: a :class:`Telephone`, :class:`Codec`, :class:`Reverb`, :class:`Noise` or :class:`Gain`."""

Chain = tuple[Degradation, ...]
"""Degradation steps applied left to right; the empty chain is ``clean``."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Degradation)


def degradation_from_dict(data: Mapping[str, Any]) -> Degradation:
    """A spec from its ``model_dump()`` (``{"kind": "noise", "noise": "babble", "snr_db": 10}``); invalid →
    :class:`ConfigError`."""
    try:
        spec: Degradation = _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"degradation {dict(data)!r}: {validation_reason(exc, None)}") from None
    return spec


# ---- grammar -----------------------------------------------------------------------------------------------

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_STEP_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("telephone", r"telephone(?::(?P<law>mulaw|alaw|none))?"),
        ("codec", rf"codec:(?P<codec>[a-z0-9]+)(?:@(?P<level>{_NUMBER}))?"),
        ("reverb", rf"reverb(?::(?P<rt60>{_NUMBER})(?:@(?P<seed>\d+))?)?"),
        ("noise", rf"noise:(?P<name>{NAME_PATTERN})@(?P<snr>{_NUMBER})"),
        ("noise", rf"noise-(?P<snr>\d+)db:(?P<name>{NAME_PATTERN})"),
        ("gain", rf"gain:(?P<db>{_NUMBER})(?P<clip>:clip)?"),
        ("level", r"level-(?P<db>\d+)db"),
    )
)


def _parse_step(step: str) -> Degradation:
    for kind, pattern in _STEP_PATTERNS:
        m = pattern.fullmatch(step)
        if m is None:
            continue
        g = m.groupdict()
        data: dict[str, Any]
        if kind == "telephone":
            data = {"kind": kind, "law": g["law"] or "mulaw"}
        elif kind == "codec":
            data = {"kind": kind, "codec": g["codec"], **({"compression_level": g["level"]} if g["level"] else {})}
        elif kind == "reverb":
            data = {"kind": kind, "rt60_s": g["rt60"] or 0.6, "position_seed": g["seed"] or 0}
        elif kind == "noise":
            data = {"kind": kind, "noise": g["name"], "snr_db": g["snr"]}
        elif kind == "gain":
            data = {"kind": kind, "gain_db": g["db"], "clip": bool(g["clip"])}
        else:
            data = {"kind": "gain", "gain_db": -float(g["db"])}
        try:
            spec: Degradation = _ADAPTER.validate_python(data)
        except ValidationError as exc:
            raise ConfigError(f"degradation step {step!r}: {validation_reason(exc, None)}") from None
        return spec
    raise ConfigError(
        f"unknown degradation step {step!r}: expected telephone[:mulaw|alaw|none], codec:mp3|opus|vorbis[@LEVEL], "
        "reverb[:RT60[@SEED]], noise:NAME@SNR, noise-NdB:NAME, gain:DB[:clip] or level-NdB"
    )


def parse(text: str) -> Chain:
    """Parse a condition string (grammar in the module docstring) into a chain of specs.

    ``"clean"`` → ``()``; ``"telephone+noise:babble@10"`` → ``(Telephone(), Noise(noise="babble", snr_db=10))``.
    An empty string, an empty step, or a malformed or out-of-range step raises :class:`ConfigError` naming it.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("empty degradation condition: use 'clean' for none")
    steps = [s.strip() for s in re.split(r"\+(?![\d.])", text.strip())]
    if steps == ["clean"]:
        return ()
    if "clean" in steps:
        raise ConfigError(f"condition {text!r}: 'clean' must stand alone")
    if "" in steps:
        raise ConfigError(f"condition {text!r} has an empty step (a stray '+')")
    return tuple(_parse_step(s) for s in steps)


def format_chain(chain: Degradation | Sequence[Degradation]) -> str:
    """The canonical condition string of a spec or chain (``parse(format_chain(c)) == c``); ``()`` → ``"clean"``."""
    steps = [chain] if isinstance(chain, _Spec) else list(chain)
    return "+".join(s.token() for s in steps) or "clean"


# ---- apply -------------------------------------------------------------------------------------------------


def _as_chain(spec: Degradation | Sequence[Degradation] | str) -> Chain:
    if isinstance(spec, str):
        return parse(spec)
    if isinstance(spec, _Spec):
        return (spec,)
    chain = tuple(spec)
    for s in chain:
        if not isinstance(s, _Spec):
            raise ConfigError(f"not a degradation spec: {s!r}")
    return chain


def _apply_one(x: np.ndarray, sr: int, spec: Degradation, g: np.random.Generator, noises: NoiseSource) -> np.ndarray:
    if isinstance(spec, Telephone):
        return telephone(x, sr, spec.law)
    if isinstance(spec, Codec):
        return codec_roundtrip(x, sr, spec.codec, spec.compression_level)
    if isinstance(spec, Reverb):
        return reverberate(x, sr, spec.rt60_s, position_seed=spec.position_seed)
    if isinstance(spec, Noise):
        return mix_at_snr(x, noise_array(spec.noise, len(x), sr, noises, g), spec.snr_db, g)
    return gain(x, spec.gain_db, clip=spec.clip)


def apply(
    y: np.ndarray,
    sr: int,
    spec: Degradation | Sequence[Degradation] | str,
    rng: RngLike,
    *,
    noises: NoiseSource = None,
) -> np.ndarray:
    """Degrade ``y`` ``(n,)`` float32 at ``sr`` Hz with a spec, a chain of specs, or a condition string.

    ``rng`` (a generator or an integer seed; ``None`` = fresh entropy, not reproducible) seeds the random parts
    (noise offsets, generated noise): each step gets its own child generator drawn in order, so the same input,
    spec and seed give identical output. ``noises`` is the noise folder, or a mapping name → ``(m,)`` float32
    array, for steps that name a recording. Returns ``(n,)`` float32, finite, same length; ``"clean"`` returns
    a copy.
    """
    x = mono(y).copy()
    sr = check_sr(sr)
    chain = _as_chain(spec)
    g = as_rng(rng)
    for step in chain:
        child = np.random.default_rng(int(g.integers(0, 2**63 - 1)))
        x = _apply_one(x, sr, step, child, noises)
    return x
