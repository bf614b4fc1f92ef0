"""The unified emotion vocabulary and named label profiles that fold it into a task's classes.

Corpus adapters map native labels into ``UNIFIED``; a :class:`LabelProfile` then maps unified emotions to the
classes a model is trained on. Emotions a profile does not cover are dropped *with a count* (never renamed
silently). Built-in profiles:

- ``unified``: all nine unified emotions, unchanged.
- ``ravdess8``: RAVDESS' native eight (neutral, calm, happy, sad, angry, fearful, disgust, surprised).
- ``seven``: calm folded into neutral → neutral, happy, sad, angry, fearful, disgust, surprised.
- ``four``: angry, happy, neutral (calm folded in), sad.

A custom profile is a YAML file ``{name: str, mapping: {unified_emotion: class}}``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ser.errors import ConfigError

UNIFIED: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "boredom",
)


@dataclass(frozen=True)
class LabelProfile:
    """A named mapping from unified emotions to class names."""

    name: str
    mapping: dict[str, str] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        """Target classes in canonical (``UNIFIED``) order, then any custom names alphabetically."""
        targets = set(self.mapping.values())
        ordered = [e for e in UNIFIED if e in targets]
        return ordered + sorted(targets - set(ordered))

    def apply(self, emotions: pd.Series) -> tuple[pd.Series, dict[str, int]]:
        """Map a series of unified emotions. Returns the mapped series (NA where dropped) and drop counts."""
        mapped = emotions.map(self.mapping)
        dropped = Counter(emotions[mapped.isna()].astype(str))
        return mapped, dict(sorted(dropped.items()))


def _identity(labels: tuple[str, ...] | list[str]) -> dict[str, str]:
    return {e: e for e in labels}


PROFILES: dict[str, LabelProfile] = {
    "unified": LabelProfile("unified", _identity(UNIFIED)),
    "ravdess8": LabelProfile("ravdess8", _identity(UNIFIED[:8])),
    "seven": LabelProfile("seven", {**_identity(UNIFIED[:8]), "calm": "neutral"}),
    "four": LabelProfile(
        "four", {"angry": "angry", "happy": "happy", "neutral": "neutral", "calm": "neutral", "sad": "sad"}
    ),
}


def get_profile(name_or_path: str | Path) -> LabelProfile:
    """A built-in profile by name, or a custom one from a YAML file."""
    key = str(name_or_path)
    if key in PROFILES:
        return PROFILES[key]
    path = Path(key)
    if not path.is_file():
        raise ConfigError(f"unknown label profile {key!r}; built-in: {', '.join(PROFILES)} (or a YAML file)")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        name, mapping = str(spec["name"]), {str(k): str(v) for k, v in dict(spec["mapping"]).items()}
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"label profile {path}: needs 'name' and a 'mapping' of emotion → class ({exc})") from exc
    unknown = sorted(set(mapping) - set(UNIFIED))
    if unknown:
        raise ConfigError(f"label profile {path}: not unified emotions: {', '.join(unknown)}")
    return LabelProfile(name, mapping)


def apply_profile(manifest: pd.DataFrame, profile: LabelProfile | str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Map ``manifest.emotion`` through ``profile``; rows it does not cover are dropped and counted."""
    prof = profile if isinstance(profile, LabelProfile) else get_profile(profile)
    mapped, dropped = prof.apply(manifest["emotion"])
    keep = mapped.notna()
    out = manifest.loc[keep].copy()
    out["emotion"] = mapped[keep].astype("string")
    return out.reset_index(drop=True), dropped
