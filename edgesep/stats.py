"""Latency statistics from raw samples: summary, bootstrap interval of the median, ratio of two medians, and
the ratio over several sessions (``session_ratio``: two-level bootstrap over sessions, then blocks of
consecutive rounds), the A/A noise floor (``noise_floor``) and a two-speed-modes check (``bimodality``).
These are THE latency statistics of edgesep: ``compare``, ``bench`` and fleet sweeps call them.
Ground floor: the standard library and numpy only (no edgesep module below it).

Outlier policy: no sample is ever dropped. ``summarize`` counts the samples above
``median + OUTLIER_K * MAD`` (MAD scaled by 1.4826 to match a normal standard deviation) and reports that
count and the threshold next to statistics computed from every sample. The median (p50) and its interval are
the figures to compare: they barely move with a few slow runs, while mean, std and p99 show them.

Percentiles use numpy's default linear interpolation. Bootstrap intervals are percentile intervals from
``n_boot`` resamples drawn with a seeded ``numpy.random.default_rng``, so the same samples give the same
interval. The median of a resample is drawn directly from the order statistics (see ``_boot_medians``),
which has the same distribution as resampling and summarizes 100,000 samples in milliseconds.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Optional, Sequence

import numpy as np

OUTLIER_K = 5.0
MAD_TO_SIGMA = 1.4826
N_BOOT = 2000
_CHUNK_ELEMENTS = 4_000_000  # paired resamples are drawn in chunks of at most this many values


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Summary of latency samples in milliseconds; ``to_dict`` gives the bench JSON ``latency_ms`` object."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float
    ci95_p50: tuple[float, float]
    outliers: int
    outlier_threshold: float

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ci95_p50"] = list(self.ci95_p50)
        return d


@dataclasses.dataclass(frozen=True)
class RatioCI:
    """Ratio of medians ``median(a) / median(b)`` with its bootstrap interval."""

    ratio: float
    lo: float
    hi: float
    confidence: float
    paired: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _samples(samples: Sequence[float], name: str = "samples") -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"{name}: need at least one sample")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: samples must be finite numbers")
    return x


def _check(confidence: float, n_boot: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def _boot_medians(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``n_boot`` bootstrap resamples of ``x``, drawn exactly without building the resamples.

    A resample of size n draws indices ceil(n * U) with U uniform, so its k-th smallest value is the sorted
    sample at ceil(n * U_(k)), where the k-th order statistic U_(k) of n uniforms is Beta(k, n - k + 1) and,
    given U_(k) = u, U_(k+1) = u + (1 - u) * Beta(1, n - k). Same distribution as resampling, O(n_boot).
    """
    xs = np.sort(x)
    n = xs.size

    def pick(u: np.ndarray) -> np.ndarray:
        return xs[np.clip(np.ceil(n * u).astype(np.int64), 1, n) - 1]

    k = (n + 1) // 2
    u1 = rng.beta(k, n - k + 1, size=n_boot)
    if n % 2:
        return pick(u1)
    u2 = u1 + (1.0 - u1) * rng.beta(1, n - k, size=n_boot)
    return (pick(u1) + pick(u2)) / 2.0


def _paired_boot_ratios(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``median(x[i]) / median(y[i])`` for ``n_boot`` shared resampled index sets ``i``."""
    rows = max(1, _CHUNK_ELEMENTS // x.size)
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        k = min(rows, n_boot - start)
        idx = rng.integers(0, x.size, size=(k, x.size))
        out[start:start + k] = np.median(x[idx], axis=1) / np.median(y[idx], axis=1)
    return out


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_median_ci(samples: Sequence[float], *, confidence: float = 0.95, n_boot: int = N_BOOT,
                        seed: int = 0) -> tuple[float, float]:
    """Bootstrap percentile interval of the median of ``samples``."""
    _check(confidence, n_boot)
    x = _samples(samples)
    if x.size == 1:
        return float(x[0]), float(x[0])
    return _interval(_boot_medians(x, n_boot, np.random.default_rng(seed)), confidence)


def count_outliers(samples: Sequence[float], k: float = OUTLIER_K) -> tuple[int, float]:
    """(how many samples lie above ``median + k * scaled MAD``, that threshold); nothing is removed."""
    x = _samples(samples)
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med))) * MAD_TO_SIGMA
    threshold = med + k * mad
    return int(np.count_nonzero(x > threshold)) if mad > 0 else 0, threshold


def summarize(samples: Sequence[float], *, confidence: float = 0.95, n_boot: int = N_BOOT, seed: int = 0,
              outlier_k: float = OUTLIER_K) -> LatencyStats:
    """Mean, std (n-1), min, max, p50, p90, p99, bootstrap interval of the median and the outlier count."""
    x = _samples(samples)
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
    outliers, threshold = count_outliers(x, outlier_k)
    return LatencyStats(n=int(x.size), mean=float(x.mean()), std=float(x.std(ddof=1)) if x.size > 1 else 0.0,
                        min=float(x.min()), max=float(x.max()), p50=p50, p90=p90, p99=p99,
                        ci95_p50=bootstrap_median_ci(x, confidence=confidence, n_boot=n_boot, seed=seed),
                        outliers=outliers, outlier_threshold=threshold)


def ratio_of_medians(a: Sequence[float], b: Sequence[float], *, paired: Optional[bool] = None,
                     confidence: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> RatioCI:
    """``median(a) / median(b)`` with a bootstrap interval.

    Args:
        a: samples of the first model (e.g. fused), milliseconds.
        b: samples of the second model (e.g. split), milliseconds.
        paired: resample the same indices of ``a`` and ``b`` together, keeping the round-by-round pairing of
            interleaved runs (so drift shared by both cancels); None pairs them when the lengths match.
        confidence: interval coverage.
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
    """
    _check(confidence, n_boot)
    x, y = _samples(a, "a"), _samples(b, "b")
    if paired is None:
        paired = x.size == y.size
    if paired and x.size != y.size:
        raise ValueError(f"paired samples need equal lengths, got {x.size} and {y.size}")
    if np.median(y) <= 0:
        raise ValueError("b: median must be > 0 for a ratio")
    ratio = float(np.median(x) / np.median(y))
    rng = np.random.default_rng(seed)
    if paired:
        boots = _paired_boot_ratios(x, y, n_boot, rng)
    else:
        boots = _boot_medians(x, n_boot, rng) / _boot_medians(y, n_boot, rng)
    lo, hi = _interval(boots, confidence)
    return RatioCI(ratio=ratio, lo=lo, hi=hi, confidence=confidence, paired=bool(paired))


# ---------------------------------------------------------------- ratios over several sessions

MAX_SESSION_ROUNDS = 1000  # paired rounds per session resampled (more are thinned evenly)
BIMODAL_D = 4.0  # Ashman's D above which two sample groups count as two modes


@dataclasses.dataclass(frozen=True)
class SessionRatio:
    """``a / b`` latency over several sessions, with a two-level (sessions, then blocks) bootstrap interval.

    Attributes:
        ratio: geometric mean over sessions of each session's ``median(a) / median(b)``.
        lo, hi: percentile bootstrap interval of ``ratio``.
        confidence: interval coverage.
        sessions: sessions that measured both.
        rounds: paired rounds used per session (after thinning).
        blocks: block length (rounds) per session.
        per_session: each session's ratio of medians.
    """

    ratio: float
    lo: float
    hi: float
    confidence: float
    sessions: int
    rounds: tuple[int, ...]
    blocks: tuple[int, ...]
    per_session: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("rounds", "blocks", "per_session"):
            d[key] = list(d[key])
        return d


def block_length(rounds: int) -> int:
    """Rounds per resampled block: about the square root of the session's rounds (at least 1).

    Noise comes in bursts that span many consecutive rounds; blocks this long keep a burst together, and a
    session still has as many blocks as rounds per block.
    """
    return max(1, int(math.ceil(math.sqrt(rounds))))


def _paired_session(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = _samples(a, "a"), _samples(b, "b")
    n = min(x.size, y.size)
    step = -(-n // MAX_SESSION_ROUNDS)
    return x[:n:step], y[:n:step]


def _block_log_ratios(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``log(median(x*) / median(y*))`` for ``n_boot`` circular block resamples of the paired rounds."""
    n = x.size
    length = block_length(n)
    starts = rng.integers(0, n, size=(n_boot, -(-n // length)))
    idx = (starts[:, :, None] + np.arange(length)[None, None, :]).reshape(n_boot, -1)[:, :n] % n
    return np.log(np.median(x[idx], axis=1)) - np.log(np.median(y[idx], axis=1))


def session_ratio(a_sessions: Sequence[Sequence[float]], b_sessions: Sequence[Sequence[float]], *,
                  confidence: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> SessionRatio:
    """The latency ratio ``a / b`` from paired rounds in several sessions, with a two-level bootstrap interval.

    Session ``i`` of ``a`` and of ``b`` ran interleaved in one runner process, so their first ``min(n_a, n_b)``
    rounds are pairs. Each session gives ``median(a) / median(b)``; the ratio is their geometric mean. The
    interval resamples at both levels where variation enters: the sessions (with replacement), then inside
    each drawn session blocks of consecutive rounds (circular block bootstrap, ``block_length``), keeping
    the pairs together; with few sessions it is widened for their small number (``expansion``). With one
    session only the block level is left: the interval then says nothing about session-to-session
    variation (thread placement, memory layout, frequency modes).

    Raises:
        ValueError: no session, different numbers of sessions, empty or non-finite samples.
    """
    _check(confidence, n_boot)
    if not a_sessions or len(a_sessions) != len(b_sessions):
        raise ValueError(f"need the same number (>= 1) of sessions, got {len(a_sessions)} and {len(b_sessions)}")
    pairs = [_paired_session(a, b) for a, b in zip(a_sessions, b_sessions)]
    if any(np.median(y) <= 0 or np.median(x) <= 0 for x, y in pairs):
        raise ValueError("medians must be > 0 for a ratio")
    rng = np.random.default_rng(seed)
    logs = np.array([np.log(np.median(x) / np.median(y)) for x, y in pairs])
    inner = np.stack([_block_log_ratios(x, y, n_boot, rng) for x, y in pairs])  # (sessions, n_boot)
    k = len(pairs)
    drawn = rng.integers(0, k, size=(n_boot, k)) if k > 1 else np.zeros((n_boot, 1), dtype=np.int64)
    boots = inner[drawn, rng.integers(0, n_boot, size=drawn.shape)].mean(axis=1)  # independent inner draws
    center = logs.mean()
    boots = center + (boots - center) * expansion(k, confidence)
    lo, hi = _interval(boots, confidence)
    return SessionRatio(ratio=float(np.exp(logs.mean())), lo=float(np.exp(lo)), hi=float(np.exp(hi)),
                        confidence=confidence, sessions=k, rounds=tuple(int(x.size) for x, _ in pairs),
                        blocks=tuple(block_length(x.size) for x, _ in pairs),
                        per_session=tuple(float(np.exp(v)) for v in logs))


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (exact for 1 and 2 degrees of freedom, Cornish-Fisher beyond: within 1% at 3)."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = statistics.NormalDist().inv_cdf(p)
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def expansion(sessions: int, confidence: float = 0.95) -> float:
    """How much a bootstrap over ``sessions`` top-level units is widened (Hesterberg's expanded percentile).

    Resampling k sessions underestimates the spread of their mean by ``sqrt((k-1)/k)`` and a percentile
    interval from k values has the normal's tails where Student's t with k-1 degrees of freedom belongs;
    the deviations from the point estimate are scaled by ``t / z * sqrt(k / (k-1))`` (3 sessions: 2.7x,
    5 sessions: 1.6x, 20: 1.1x). One session has no session level to widen (1).
    """
    if sessions < 2:
        return 1.0
    p = 0.5 + confidence / 2.0
    z = statistics.NormalDist().inv_cdf(p)
    return t_quantile(p, sessions - 1) / z * math.sqrt(sessions / (sessions - 1))


def noise_floor(control: SessionRatio) -> float:
    """How far from 1 an A/A control (one artifact as two variants) strayed: ``max(hi, 1/lo) - 1`` (>= 0)."""
    return max(0.0, control.hi - 1.0, 1.0 / control.lo - 1.0)


def bimodality(samples: Sequence[float], min_share: float = 0.1, min_d: float = BIMODAL_D) -> Optional[dict[str, float]]:
    """Two clearly separated modes in ``samples``, or None.

    Splits the log samples at the point that minimizes the within-group variance (1-D two-means) and calls
    them bimodal when each group holds at least ``min_share`` of the samples and Ashman's D
    (``sqrt(2) * |m1 - m2| / sqrt(s1^2 + s2^2)``) exceeds ``min_d``. Split this way, one normal gives
    D = 2.66, so the threshold is 4: two modes about four standard deviations apart. Returns both modes
    (medians, ms), the share of the slower one and D.
    """
    x = np.sort(np.log(_samples(samples)))
    n = x.size
    lo_n = max(2, int(math.ceil(n * min_share)))
    if n < 2 * lo_n:
        return None
    c1, c2 = np.cumsum(x), np.cumsum(x * x)
    k = np.arange(lo_n, n - lo_n + 1)  # the first k samples form the fast group
    m1, m2 = c1[k - 1] / k, (c1[-1] - c1[k - 1]) / (n - k)
    v1 = c2[k - 1] / k - m1 ** 2
    v2 = (c2[-1] - c2[k - 1]) / (n - k) - m2 ** 2
    best = int(np.argmin(k * v1 + (n - k) * v2))
    spread_ = math.sqrt(max(v1[best] + v2[best], 1e-300))
    d = math.sqrt(2.0) * (m2[best] - m1[best]) / spread_
    if d <= min_d:
        return None
    cut = int(k[best])
    return {"fast_ms": float(np.exp(np.median(x[:cut]))), "slow_ms": float(np.exp(np.median(x[cut:]))),
            "slow_share": (n - cut) / n, "ashman_d": float(d)}
