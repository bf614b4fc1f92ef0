"""Drift statistics between the training reference and a window of live predictions (pure numpy / scipy).

Three kinds of comparison, each with an effect size and a significance test:

- **continuous** statistics (input levels, SNR, high-band share, duration, confidence, each log-mel band):
  PSI (population stability index) over fixed bins cut at the reference's quantiles, with its chi-square test on
  the binned counts, and the two-sample Kolmogorov-Smirnov statistic D with its p-value (``scipy.stats.ks_2samp``);
- **categorical** mixes (predicted label, native sample rate, channels, container, codec): PSI over the
  categories and the chi-square test of the 2 × K contingency table;
- **shares** of input-quality problems (silence, clipping, low SNR, narrow band): the live share against the
  reference share, with Fisher's exact test (one-sided: live higher).

A comparison is **flagged** when an effect-size threshold is crossed *and* the shift is significant: (PSI ≥
``psi`` and chi-square p < α) or (D ≥ ``ks`` and KS p < α); a share when it rose by at least ``max_increase``
and Fisher's p < α. At thousands of live predictions every shift is significant, so the effect size decides; on a
small window the p-value keeps sampling noise from being flagged (PSI alone is biased upwards on small samples:
its expectation under no drift is about (bins − 1)(1/n_ref + 1/n_live)). With ``bonferroni`` on (the default) α
is divided by the number of tests in each family (the continuous input statistics, each per-band vector of 64
log-mel bands, the file-fact mixes, the two prediction comparisons, the four quality shares), so a report on a
window without drift is flagged by chance with probability about α per family, not per test. The tests assume
independent clips: many clips of few speakers (a small window, one busy caller) are correlated and read as
more significant than they are; the effect-size thresholds are the guard there. Fewer than ``min_live`` live
values (or ``min_reference`` reference values) are reported as ``insufficient`` and never flagged.

Streaming: :class:`ContinuousDrift` and :class:`CategoricalDrift` accumulate the live side batch by batch (counts
at the reference's distinct values), so a window of millions of predictions is compared exactly in bounded
memory. D is exact; its p-value is scipy's exact one while both samples have at most 10,000 values (then the live
values are kept and ``scipy.stats.ks_2samp`` is called) and scipy's asymptotic one beyond
(``kstwo.sf(D, round(n·m / (n + m)))``, what ``ks_2samp`` itself switches to there).

Thresholds live in :class:`DriftConfig` (pydantic; :meth:`DriftConfig.from_yaml`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ser.errors import ConfigError, validation_reason
from ser.io import read_yaml_mapping

EXACT_KS_MAX = 10_000
"""Largest sample (each side) for which the KS p-value is scipy's exact one (``ks_2samp`` method ``auto``)."""
MISSING = "(none)"
"""The category of a missing value (a null label: no speech; an unknown sample rate)."""


class QualityConfig(BaseModel):
    """What counts as an input-quality problem, and how much more often than in the reference it may occur."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    silence_below: float = Field(0.1, ge=0, le=1, description="speech_fraction below this: silence")
    clipped_above: float = Field(0.001, ge=0, le=1, description="clipped_fraction above this: clipping")
    low_snr_below: float = Field(15.0, description="snr_db below this (dB): low SNR")
    narrowband_below: float = Field(0.001, ge=0, le=1, description="high_band_share below this: narrow band")
    max_increase: float = Field(0.10, ge=0, le=1, description="flag when a share rose by at least this (absolute)")


class AccuracyConfig(BaseModel):
    """Live accuracy from feedback: when a drop from the model's cross-validated UAR is flagged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_feedback: int = Field(50, ge=1, description="labelled predictions of a model version needed to judge it")
    max_uar_drop: float | None = Field(
        0.10,
        ge=0,
        le=1,
        description="flag when the live UAR's upper CI bound is below the reference UAR minus this (None: never)",
    )
    n_boot: int = Field(1000, ge=0, description="bootstrap replicates for the CIs (0: none)")
    level: float = Field(0.95, gt=0, lt=1)
    seed: int = 0


class DriftConfig(BaseModel):
    """Effect-size thresholds and test settings of the monitoring report (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi: float = Field(0.2, gt=0, description="PSI at or above this is a shift (0.1 moderate, 0.2 large)")
    ks: float = Field(0.1, gt=0, le=1, description="KS statistic D at or above this is a shift")
    alpha: float = Field(0.01, gt=0, lt=1, description="significance level the shift must also reach")
    bins: int = Field(10, ge=2, le=100, description="PSI bins, cut at reference quantiles")
    epsilon: float = Field(1e-4, gt=0, lt=0.01, description="share given to an empty bin in PSI")
    min_live: int = Field(30, ge=2, description="fewer live values: insufficient, not tested")
    min_reference: int = Field(30, ge=2, description="fewer reference values: insufficient, not tested")
    bands: bool = Field(True, description="compare each log-mel band (mean and std over time)")
    bonferroni: bool = Field(True, description="divide alpha by the number of tests in each family")
    flag_categorical: tuple[str, ...] = Field(
        ("native_sr", "channels", "label"),
        description="categorical mixes that may flag; the others (container, codec) are reported only",
    )
    quality: QualityConfig = QualityConfig()
    accuracy: AccuracyConfig = AccuracyConfig()

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> DriftConfig:
        """The config in YAML file ``path`` (missing keys take the defaults); defaults for None."""
        if path is None:
            return cls()
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"drift config not found: {p}")
        data = read_yaml_mapping(p, "drift settings")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{p}: {validation_reason(exc)}") from None


# ----------------------------------------------------------------------------------------------------------------
# pure statistics


def psi(ref_counts: np.ndarray, live_counts: np.ndarray, epsilon: float = 1e-4) -> float:
    """Population stability index Σ (q − p) · ln(q / p) of two count vectors over the same bins.

    ``p`` and ``q`` are the reference and live shares with ``epsilon`` put in place of an empty bin's share (then
    renormalised). 0 for identical mixes; 0.1 is usually read as a moderate shift, 0.2 as a large one.
    """
    r = np.asarray(ref_counts, dtype=np.float64)
    q = np.asarray(live_counts, dtype=np.float64)
    if r.shape != q.shape or r.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p_ = np.maximum(r / r.sum(), epsilon)
    q_ = np.maximum(q / q.sum(), epsilon)
    p_, q_ = p_ / p_.sum(), q_ / q_.sum()
    return float(np.sum((q_ - p_) * np.log(q_ / p_)))


def contingency_p(ref_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """p-value of the chi-square test that two count vectors come from the same mix (columns empty in both are
    dropped; 1.0 when fewer than two columns remain)."""
    from scipy.stats import chi2_contingency

    table = np.vstack([np.asarray(ref_counts, dtype=np.float64), np.asarray(live_counts, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(chi2_contingency(table, correction=False)[1])


def quantile_edges(ref: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the ``1/bins … (bins−1)/bins`` quantiles of ``ref`` (reference values, so ties stay
    together; duplicates dropped). A value ``x`` falls in bin ``searchsorted(edges, x, "left")``: bins are
    ``(-inf, e1], (e1, e2], …, (e_last, inf)``."""
    r = np.asarray(ref, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return np.zeros(0)
    qs = np.quantile(r, np.arange(1, bins) / bins, method="inverted_cdf")
    return np.unique(qs)


def ks_from_counts(ref_le: np.ndarray, ref_lt: np.ndarray, eq: np.ndarray, between: np.ndarray) -> float:
    """Two-sample KS statistic from counts at support points ``u_0 < … < u_{k-1}`` of the reference.

    ``ref_le`` / ``ref_lt`` ``(k,)``: reference values ≤ / < ``u_j``; ``eq`` ``(k,)``: live values equal to ``u_j``;
    ``between`` ``(k+1,)``: live values in ``(u_{j-1}, u_j)`` (``between[0]`` below ``u_0``, ``between[k]`` above
    ``u_{k-1}``). Exact when the points are every distinct reference value (the ECDF difference is largest just
    before a reference value or at one); on a coarser grid of reference quantiles it is at most the largest
    reference share between two grid points below the exact value.
    """
    n = float(eq.sum() + between.sum())
    if len(ref_le) == 0 or n == 0 or ref_le[-1] == 0:
        return float("nan")
    m = float(ref_le[-1])
    live_before = np.cumsum(between[:-1]) + np.concatenate([[0.0], np.cumsum(eq)[:-1]])  # live < u_j
    live_at = live_before + eq  # live <= u_j
    d_before = np.abs(ref_lt / m - live_before / n)
    d_at = np.abs(ref_le / m - live_at / n)
    return float(max(d_before.max(), d_at.max()))


def ks_pvalue(d: float, n_ref: int, n_live: int) -> float:
    """Asymptotic two-sided p-value of a two-sample KS statistic (scipy's ``asymp`` method)."""
    from scipy.stats import kstwo

    if not np.isfinite(d) or n_ref == 0 or n_live == 0:
        return float("nan")
    en = n_ref * n_live / (n_ref + n_live)
    return float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))


def _jsonf(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def family_alpha(cfg: DriftConfig, n_tests: int) -> float:
    """α of each test in a family of ``n_tests`` (Bonferroni when ``cfg.bonferroni``)."""
    return cfg.alpha / max(n_tests, 1) if cfg.bonferroni else cfg.alpha


def _verdict(
    n_ref: int, n_live: int, cfg: DriftConfig, alpha: float, psi_v: float, psi_p: float, ks: float, ks_p: float
) -> tuple[str, list[str]]:
    if n_ref < cfg.min_reference or n_live < cfg.min_live:
        return "insufficient", []
    why = []
    if np.isfinite(psi_v) and psi_v >= cfg.psi and psi_p < alpha:
        why.append(f"PSI {psi_v:.3f} >= {cfg.psi} (p {psi_p:.1e})")
    if np.isfinite(ks) and ks >= cfg.ks and ks_p < alpha:
        why.append(f"KS D {ks:.3f} >= {cfg.ks} (p {ks_p:.1e})")
    return ("flagged" if why else "ok"), why


# ----------------------------------------------------------------------------------------------------------------
# streaming comparisons


class ContinuousDrift:
    """One continuous statistic: reference values fixed at construction, live values added with :meth:`update`.

    ``alpha``: the significance level of this test (default ``cfg.alpha``; a per-band test passes the corrected
    one). Non-finite values are dropped (and counted) on both sides.

    ``grid``: None compares at every distinct reference value (exact KS D; each live value costs a binary search
    over up to 2,000 values). An integer compares at the reference's ``grid`` quantiles instead (plus the PSI
    edges): D is then at most ``1/grid`` below the exact value (plus any tie mass), and a live value costs a search
    over ``grid`` points that stay in cache. The report uses 200 for the 128 per-band columns, where the exact
    search would dominate its time on large windows. Windows of at most 10,000 values use scipy's exact test
    either way.
    """

    def __init__(
        self, name: str, reference: np.ndarray, cfg: DriftConfig, *, alpha: float | None = None, grid: int | None = None
    ):
        self.name, self.cfg = name, cfg
        self.alpha = cfg.alpha if alpha is None else alpha
        r = np.asarray(reference, dtype=np.float64).ravel()
        self.ref_missing = int((~np.isfinite(r)).sum())
        self.ref = np.sort(r[np.isfinite(r)])
        self.edges = quantile_edges(self.ref, cfg.bins)
        if grid is None or self.ref.size == 0:
            self.u = np.unique(self.ref)
        else:
            qs = np.quantile(self.ref, np.linspace(0.0, 1.0, grid + 1), method="inverted_cdf")
            self.u = np.unique(np.concatenate([qs, self.edges]))
        self.ref_le = np.searchsorted(self.ref, self.u, "right").astype(np.float64)
        self.ref_lt = np.searchsorted(self.ref, self.u, "left").astype(np.float64)
        self.ref_bins = np.bincount(np.searchsorted(self.edges, self.ref, "left"), minlength=self.edges.size + 1)
        seg_bins = np.searchsorted(self.edges, self.u, "left")
        self._bin_of_eq = seg_bins
        self._bin_of_between = np.concatenate([seg_bins, [self.edges.size]])
        self.eq = np.zeros(self.u.size)
        self.between = np.zeros(self.u.size + 1)
        self.n = 0
        self.missing = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self._raw: list[np.ndarray] | None = [] if self.ref.size <= EXACT_KS_MAX else None

    def update(self, values: np.ndarray) -> None:
        x = np.asarray(values, dtype=np.float64).ravel()
        ok = np.isfinite(x)
        bad = x.size - int(np.count_nonzero(ok))
        if bad:
            self.missing += bad
            x = x[ok]
        if x.size == 0:
            return
        self.n += x.size
        self._sum += float(x.sum())
        self._sumsq += float(np.dot(x, x))
        k = self.u.size
        if k:
            idx = np.searchsorted(self.u, x, "left")  # u[idx-1] < x <= u[idx]
            is_eq = self.u[np.minimum(idx, k - 1)] == x  # idx == k means x > u[-1]: never equal
            counts = np.bincount(2 * idx + is_eq, minlength=2 * k + 2)  # even: between, odd: equal
            self.between += counts[0::2]
            self.eq += counts[1::2][:k]
        if self._raw is not None:
            self._raw.append(x)
            if self.n > EXACT_KS_MAX:
                self._raw = None

    def live_bins(self) -> np.ndarray:
        """Live counts per PSI bin ``(bins,)``."""
        k = self.edges.size + 1
        return np.bincount(self._bin_of_eq, weights=self.eq, minlength=k) + np.bincount(
            self._bin_of_between, weights=self.between, minlength=k
        )

    def result(self) -> dict[str, Any]:
        m, n = int(self.ref.size), self.n
        if m == 0 or n == 0:
            psi_v = psi_p = ks = ks_p = float("nan")
        else:
            live = self.live_bins()
            psi_v = psi(self.ref_bins, live, self.cfg.epsilon)
            psi_p = contingency_p(self.ref_bins, live)
            if self._raw is not None:
                from scipy.stats import ks_2samp

                with warnings.catch_warnings():  # ties: scipy falls back to the asymptotic p-value, and says so
                    warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
                    res = ks_2samp(self.ref, np.concatenate(self._raw))
                ks, ks_p = float(res.statistic), float(res.pvalue)
            else:
                ks = ks_from_counts(self.ref_le, self.ref_lt, self.eq, self.between)
                ks_p = ks_pvalue(ks, m, n)
        status, why = _verdict(m, n, self.cfg, self.alpha, psi_v, psi_p, ks, ks_p)
        mean = self._sum / n if n else float("nan")
        std = np.sqrt(max(self._sumsq / n - mean**2, 0.0)) if n else float("nan")
        live_bins = self.live_bins() if n else np.zeros(self.edges.size + 1)
        return {
            "name": self.name,
            "kind": "continuous",
            "status": status,
            "flagged": status == "flagged",
            "why": why,
            "n_reference": m,
            "n_live": n,
            "missing_live": self.missing,
            "psi": _jsonf(psi_v),
            "psi_p": _jsonf(psi_p),
            "ks": _jsonf(ks),
            "ks_p": _jsonf(ks_p),
            "alpha": self.alpha,
            "reference": {
                "mean": _jsonf(self.ref.mean()) if m else None,
                "std": _jsonf(self.ref.std()) if m else None,
                "p10": _jsonf(np.quantile(self.ref, 0.1)) if m else None,
                "p50": _jsonf(np.quantile(self.ref, 0.5)) if m else None,
                "p90": _jsonf(np.quantile(self.ref, 0.9)) if m else None,
            },
            "live": {"mean": _jsonf(mean), "std": _jsonf(std)},
            "bins": {
                "edges": [float(e) for e in self.edges],
                "reference": (self.ref_bins / max(m, 1)).round(6).tolist(),
                "live": (live_bins / max(n, 1)).round(6).tolist(),
            },
        }


def _category(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return MISSING
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


class CategoricalDrift:
    """One categorical mix: reference values fixed at construction, live values added with :meth:`update`
    (``None`` / NaN count as the category :data:`MISSING`). ``flag``: False reports without flagging."""

    def __init__(
        self,
        name: str,
        reference: Iterable[Any],
        cfg: DriftConfig,
        *,
        flag: bool = True,
        order: list[str] | None = None,
        alpha: float | None = None,
    ):
        self.name, self.cfg, self.flag = name, cfg, flag
        self.alpha = cfg.alpha if alpha is None else alpha
        self.ref = Counter(_category(v) for v in reference)
        self.live: Counter[str] = Counter()
        self.order = list(order or [])

    def update(self, values: Iterable[Any]) -> None:
        self.live.update(_category(v) for v in values)

    def update_counts(self, counts: Mapping[Any, int]) -> None:
        for k, v in counts.items():
            self.live[_category(k)] += int(v)

    def result(self) -> dict[str, Any]:
        cats = list(dict.fromkeys([*self.order, *sorted(self.ref), *sorted(self.live)]))
        r = np.array([self.ref.get(c, 0) for c in cats], dtype=np.float64)
        q = np.array([self.live.get(c, 0) for c in cats], dtype=np.float64)
        m, n = int(r.sum()), int(q.sum())
        psi_v = psi(r, q, self.cfg.epsilon) if m and n else float("nan")
        p = contingency_p(r, q) if m and n else float("nan")
        status, why = _verdict(m, n, self.cfg, self.alpha, psi_v, p, float("nan"), float("nan"))
        if not self.flag and status == "flagged":
            status, why = "shifted (not flagged)", why
        return {
            "name": self.name,
            "kind": "categorical",
            "status": status,
            "flagged": status == "flagged",
            "why": why,
            "n_reference": m,
            "n_live": n,
            "psi": _jsonf(psi_v),
            "psi_p": _jsonf(p),
            "alpha": self.alpha,
            "categories": cats,
            "reference": (r / max(m, 1)).round(6).tolist(),
            "live": (q / max(n, 1)).round(6).tolist(),
        }


def share_shift(
    name: str,
    ref_hits: int,
    ref_n: int,
    live_hits: int,
    live_n: int,
    cfg: DriftConfig,
    *,
    alpha: float | None = None,
) -> dict[str, Any]:
    """Live share ``live_hits / live_n`` of a quality problem against the reference share; flagged when it rose by
    at least ``cfg.quality.max_increase`` and Fisher's exact test (one-sided) gives p < ``alpha`` (default α)."""
    from scipy.stats import fisher_exact

    alpha = cfg.alpha if alpha is None else alpha
    ref_share = ref_hits / ref_n if ref_n else float("nan")
    live_share = live_hits / live_n if live_n else float("nan")
    p = float("nan")
    if ref_n and live_n:
        table = [[live_hits, live_n - live_hits], [ref_hits, ref_n - ref_hits]]
        p = float(fisher_exact(table, alternative="greater")[1])
    status, why = "ok", []
    if live_n < cfg.min_live:
        status = "insufficient"
    elif ref_n and live_share - ref_share >= cfg.quality.max_increase and p < alpha:
        status = "flagged"
        why = [f"share {live_share:.1%} vs {ref_share:.1%} in the reference (p {p:.1e})"]
    return {
        "name": name,
        "kind": "share",
        "status": status,
        "flagged": status == "flagged",
        "why": why,
        "reference_share": _jsonf(ref_share),
        "live_share": _jsonf(live_share),
        "n_reference": ref_n,
        "n_live": live_n,
        "live_hits": live_hits,
        "p": _jsonf(p),
        "alpha": alpha,
    }


def quality_masks(frame: Mapping[str, np.ndarray], q: QualityConfig) -> dict[str, np.ndarray]:
    """Boolean ``(n,)`` masks of each quality problem from columns ``speech_fraction``, ``clipped_fraction``,
    ``snr_db``, ``high_band_share`` (a missing value is not a problem)."""

    def col(name: str) -> np.ndarray:
        return np.asarray(frame[name], dtype=np.float64)

    with np.errstate(invalid="ignore"):
        return {
            "silence": col("speech_fraction") < q.silence_below,
            "clipping": col("clipped_fraction") > q.clipped_above,
            "low_snr": col("snr_db") < q.low_snr_below,
            "narrow_band": col("high_band_share") < q.narrowband_below,
        }
