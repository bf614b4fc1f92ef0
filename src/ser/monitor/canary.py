"""The canary: a share of live traffic answered by the challenger, and the rule that takes it back out.

Pure cores, thread-safe, O(1) per answer; the service wiring is :class:`ser.serve.monitoring.CanaryRunner`.

- :func:`assigned`: whether one request goes to the canary. **Sticky per client** when the request names one
  (``X-Client-Id``: the same client always gets the same model while the canary version is the same, so one
  user's answers do not flip between models and a client's follow-up requests are comparable), **random per
  request** otherwise (an anonymous request has no stable identity, and the service never uses client addresses).
  A sticky assignment hashes the client id with the canary's version (SHA-256 → a uniform number in [0, 1)): a new
  canary version draws a new set of clients. The id is only hashed, never logged or kept.
- :class:`RollbackRule`: when to stop routing to the canary: its **error rate** (model failures and time-outs per
  request routed to it; bad input is the client's fault and not counted) above the champion's by more than
  ``max_error_increase`` once both have ``min_requests`` requests, or its **live UAR** (from feedback) below the
  champion's by more than ``uar_margin`` once both have ``min_feedback`` labelled answers. Under the minimum
  counts nothing is decided (a few unlucky answers are noise, not evidence).
- :class:`CanaryGuard`: the counts of both sides since the canary started, their labelled answers
  (:class:`~ser.monitor.live.LiveAccuracy` keyed by side, the last ``window`` labelled answers each), and
  :meth:`CanaryGuard.check`, which returns the rollback reason once the rule fires (and keeps returning it).
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ser.monitor.live import LiveAccuracy

CHAMPION, CANARY = "champion", "canary"


class RollbackRule(BaseModel):
    """When the service stops routing to the canary (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_requests: int = Field(200, ge=1, description="requests each side must have before error rates are compared")
    max_error_increase: float = Field(
        0.02, ge=0, le=1, description="canary error rate − champion error rate above this: roll back"
    )
    min_feedback: int = Field(100, ge=1, description="labelled answers each side must have before UARs are compared")
    uar_margin: float = Field(0.05, ge=0, le=1, description="champion live UAR − canary live UAR above this: roll back")


def assigned(share: float, version: str, client_id: str | None = None, rng: random.Random | None = None) -> bool:
    """Whether a request goes to the canary (``share`` of them): sticky by a hash of ``client_id`` and the canary
    ``version`` when a client id is given, else a random draw."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    if client_id:
        digest = hashlib.sha256(f"{version}\x00{client_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64 < share
    return (rng or random).random() < share


@dataclass(frozen=True)
class Side:
    """One side's counts: requests routed to it, how many failed, labelled answers and their live UAR."""

    requests: int = 0
    errors: int = 0
    labelled: int = 0
    uar: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate}


def rollback_reason(champion: Side, canary: Side, rule: RollbackRule) -> str | None:
    """Why the canary must go (the rule of :class:`RollbackRule`), or None."""
    if champion.requests >= rule.min_requests and canary.requests >= rule.min_requests:
        worse = canary.error_rate - champion.error_rate
        if worse > rule.max_error_increase:
            return (
                f"error rate {100 * canary.error_rate:.1f} % ({canary.errors} of {canary.requests} requests) vs the "
                f"champion's {100 * champion.error_rate:.1f} % ({champion.errors} of {champion.requests}): more than "
                f"{100 * rule.max_error_increase:.1f} points worse"
            )
    if (
        champion.labelled >= rule.min_feedback
        and canary.labelled >= rule.min_feedback
        and champion.uar is not None
        and canary.uar is not None
        and champion.uar - canary.uar > rule.uar_margin
    ):
        return (
            f"live UAR {100 * canary.uar:.1f} % on {canary.labelled} labelled answers vs the champion's "
            f"{100 * champion.uar:.1f} % on {champion.labelled}: more than {100 * rule.uar_margin:.1f} points lower"
        )
    return None


class CanaryGuard:
    """Counts of both sides since the canary started, their labelled answers, and the rollback decision."""

    def __init__(self, rule: RollbackRule, *, max_ids: int = 100_000, window: int = 1000):
        self.rule = rule
        self.accuracy = LiveAccuracy(max_ids=max_ids, window=window)
        self._counts = {CHAMPION: [0, 0], CANARY: [0, 0]}
        self._lock = threading.Lock()
        self.reason: str | None = None

    def served(self, side: str, ok: bool) -> None:
        """One request routed to ``side`` (``champion`` / ``canary``), answered (``ok``) or failed in the model."""
        with self._lock:
            c = self._counts[side]
            c[0] += 1
            c[1] += 0 if ok else 1

    def predicted(self, prediction_id: str, side: str, label: str | None) -> None:
        self.accuracy.predicted(prediction_id, side, label)

    def feedback(self, prediction_id: str, true_label: str) -> bool:
        """Join a true label to an answer of either side; False when the id is not one of theirs."""
        return self.accuracy.feedback(prediction_id, true_label)

    def sides(self, *, uar: bool = True) -> dict[str, Side]:
        """Both sides' counts (and, with ``uar``, their labelled answers and live UAR)."""
        acc = self.accuracy.snapshot() if uar else {}
        with self._lock:
            counts = {k: tuple(v) for k, v in self._counts.items()}
        out = {}
        for side, (requests, errors) in counts.items():
            value, n = acc.get(side, (float("nan"), 0))
            out[side] = Side(requests, errors, n, None if value != value else value)  # NaN: no labelled answer
        return out

    def check(self, *, uar: bool = True) -> str | None:
        """The rollback reason once the rule has fired (then always the same), else None. ``uar=False`` checks the
        error rates only (O(1): after each request; the UAR part computes both sides' UAR: after feedback)."""
        if self.reason is None:
            sides = self.sides(uar=uar)
            self.reason = rollback_reason(sides[CHAMPION], sides[CANARY], self.rule)
        return self.reason


# ----------------------------------------------------------------------------------------------------------------
# rollback events beside the prediction log

ROLLBACKS = "canary"
"""Folder of the rollback events under a log root: one JSON file per event (``rollback-<time>-<version>.json``),
written whole, so a local folder and an object store (no appends there) work alike, and every worker process of a
service (and ``ser monitor compare``) sees every event."""


def _fs(root: str | Path) -> tuple[Any, str]:
    from ser.uri import is_remote, local_path

    if not is_remote(root):
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), str(local_path(root).resolve())
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(root))
    return fs, path.rstrip("/")


def record_rollback(root: str | Path, event: dict[str, Any]) -> str:
    """Write one rollback event (``version``, ``reason``, ``time``, the sides' counts...) under ``root``; its path."""
    import json
    import re

    fs, base = _fs(root)
    folder = f"{base}/{ROLLBACKS}"
    fs.makedirs(folder, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(event.get("version")))
    stamp = str(event.get("time", "")).replace(":", "").replace("-", "")
    path = f"{folder}/rollback-{stamp}-{safe}.json"
    with fs.open(path, "w") as fh:
        fh.write(json.dumps(event, indent=2, default=str))
    return path


def read_rollbacks(root: str | Path) -> list[dict[str, Any]]:
    """The rollback events under ``root`` in time order (an unreadable file is skipped)."""
    import json

    fs, base = _fs(root)
    try:
        paths = sorted(fs.glob(f"{base}/{ROLLBACKS}/rollback-*.json"))
    except FileNotFoundError:
        return []
    out = []
    for p in paths:
        try:
            with fs.open(p, "r") as fh:
                out.append(json.loads(fh.read()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda e: str(e.get("time")))
