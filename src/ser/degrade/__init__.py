"""Seeded channel and noise degradations of speech: telephone band, G.711, lossy codecs, reverb, noise, level.

Every function takes and returns mono float32 audio of shape ``(n_samples,)`` at ``sr`` Hz (the project works at
``ser.TARGET_SR`` = 16 kHz) and keeps the length. Randomness comes only from the ``rng`` argument (a
:class:`numpy.random.Generator` or an integer seed): the same input, spec and seed give the same output, bit for
bit, on the same installed libraries (libsndfile's encoders, soxr and pyroomacoustics may change between versions).
Nothing reads or changes global random state. Inputs must be finite (else :class:`~ser.errors.AudioError`); outputs
are finite.

Building blocks (pure functions):
    :func:`bandpass`, :func:`mulaw_encode` / :func:`mulaw_decode`, :func:`alaw_encode` / :func:`alaw_decode`,
    :func:`g711`, :func:`telephone`, :func:`codec_roundtrip`, :func:`room_impulse_response`,
    :func:`convolve_rir`, :func:`reverberate`, :func:`white_noise`, :func:`pink_noise`, :func:`load_noise`,
    :func:`mix_at_snr`, :func:`gain`.

Specs: :class:`Telephone`, :class:`Codec`, :class:`Reverb`, :class:`Noise`, :class:`Gain` (frozen pydantic
models, together the :data:`Degradation` union); a chain is a tuple of them. :func:`apply` runs a spec, a chain or
a condition string; :func:`parse` / :func:`format_chain` convert between chains and strings.

Condition strings (``"telephone+noise:babble@10"``)::

    chain     := "clean" | step ("+" step)*          "clean" (no degradation) stands alone
    step      := "telephone" [":" LAW]               LAW: mulaw (default) | alaw | none
               | "codec:" CODEC ["@" LEVEL]          CODEC: mp3 | opus | vorbis; LEVEL: libsndfile compression
                                                     level in [0, 1] (default 0.9; 1 = smallest file)
               | "reverb" [":" RT60 ["@" SEED]]      RT60 in s (default 0.6), SEED places source and mic (default 0)
               | "noise:" NAME "@" SNR               additive noise at SNR dB over the whole clip
               | "noise-" N "db:" NAME               alias of noise:NAME@N (N a whole number, e.g. noise-10db:babble)
               | "gain:" DB [":clip"]                level change in dB, optionally clipped at full scale
               | "level-" N "db"                     alias of gain:-N (e.g. level-30db)

``+`` separates steps (a ``+`` before a digit is a sign: ``gain:+6``); steps run left to right. NAME is a noise
recording in the noise folder (``babble``, ``factory1``, ...) or a generated noise, ``generated-white`` /
``generated-pink``. Whitespace around steps is ignored; anything else raises :class:`~ser.errors.ConfigError`
saying which step is wrong.

Noise split (:data:`TRAIN_NOISES`, :data:`HELD_OUT_NOISES`): training draws use babble, volvo_car, pink, white and
the generated noises; factory1 and icra5_speechlike are kept for the test side, and
:func:`sample_training_degradation` refuses them unless told otherwise.
"""

from __future__ import annotations

from ser.degrade._base import (
    BENCHMARK_CONDITIONS,
    DEFAULT_ROOM_M,
    GENERATED_NOISES,
    HELD_OUT_NOISES,
    TRAIN_NOISES,
    NoiseSource,
    RngLike,
)
from ser.degrade.noise import load_noise, mix_at_snr, noise_array, noise_names, pink_noise, white_noise
from ser.degrade.room import convolve_rir, reverberate, room_impulse_response
from ser.degrade.signal import (
    CODECS,
    alaw_decode,
    alaw_encode,
    available_codecs,
    bandpass,
    codec_roundtrip,
    g711,
    gain,
    mulaw_decode,
    mulaw_encode,
    telephone,
)
from ser.degrade.spec import (
    Chain,
    Codec,
    Degradation,
    Gain,
    Noise,
    Reverb,
    Telephone,
    apply,
    degradation_from_dict,
    format_chain,
    parse,
)
from ser.degrade.training import (
    Range,
    TrainingDegradationConfig,
    check_training_noises,
    make_training_config,
    sample_training_degradation,
)

__all__ = [
    "BENCHMARK_CONDITIONS",
    "CODECS",
    "DEFAULT_ROOM_M",
    "GENERATED_NOISES",
    "HELD_OUT_NOISES",
    "TRAIN_NOISES",
    "Chain",
    "Codec",
    "Degradation",
    "Gain",
    "Noise",
    "NoiseSource",
    "Range",
    "Reverb",
    "RngLike",
    "Telephone",
    "TrainingDegradationConfig",
    "alaw_decode",
    "alaw_encode",
    "apply",
    "available_codecs",
    "bandpass",
    "check_training_noises",
    "codec_roundtrip",
    "convolve_rir",
    "degradation_from_dict",
    "format_chain",
    "g711",
    "gain",
    "load_noise",
    "make_training_config",
    "mix_at_snr",
    "mulaw_decode",
    "mulaw_encode",
    "noise_array",
    "noise_names",
    "parse",
    "pink_noise",
    "reverberate",
    "room_impulse_response",
    "sample_training_degradation",
    "telephone",
    "white_noise",
]
