"""The statistics of the entropy layer: how surprising a window is against its baseline.

Every test gives a p-value (how likely a difference at least this large is when nothing
changed) and a surprise in bits, -log2 p: 10 bits is a one-in-a-thousand event, 20 bits
one in a million. The p-values come from scipy's distributions in log space, so a very
unlikely window still has a finite, comparable surprise instead of a p-value of 0.

- Latency shift: the window's median against the baseline's median, in units of the
  standard error of a median (1.2533 sigma/√n, sigma estimated robustly as 1.4826 x MAD).
- Latency spread and sequence change: a G-test (2 N · KL(window || baseline), in nats,
  chi-squared with k - 1 degrees of freedom) of the window's counts against the baseline's smoothed
  probabilities; its p-value is sized to the window's sample count, so a handful of
  samples cannot raise a large score.
- Overdue: the chance that no next step came this long after a step: the step ended its
  run, or its gap is this long.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

from scipy import stats

MAD_TO_SIGMA = 1.4826  # MAD x this estimates sigma for a normal distribution
MEDIAN_STANDARD_ERROR = math.sqrt(math.pi / 2)  # SE(median) = this x sigma / √n
SMOOTHING = 0.5  # pseudo-count per category (Jeffreys): an unseen step is not impossible
LOG2 = math.log(2)
MAX_BITS = 1000.0


@functools.lru_cache(maxsize=4096)
def chi2_at(bits: float, df: int) -> float:
    """The chi-squared statistic (df degrees of freedom) whose surprise is `bits`: a
    smaller one cannot reach it (so its exact p-value need not be computed)."""
    return float(stats.chi2.isf(2.0**-bits, df))


@functools.lru_cache(maxsize=64)
def z_at(bits: float) -> float:
    """The |z| whose two-sided surprise is `bits`."""
    return float(stats.norm.isf(2.0 ** -(bits + 1)))


def entropy_bits(probabilities: Sequence[float]) -> float:
    """Shannon entropy H = -sum p log2 p of a distribution, in bits (zeros contribute 0)."""
    return -sum(p * math.log2(p) for p in probabilities if p > 0)


def kl_bits(observed: Sequence[float], expected: Sequence[float]) -> float:
    """KL(observed || expected) in bits; `expected` must be positive wherever `observed` is."""
    return sum(p * math.log2(p / q) for p, q in zip(observed, expected, strict=True) if p > 0)


def smoothed(counts: Mapping[str, float], support: Sequence[str]) -> dict[str, float]:
    """Probabilities over `support` from counts with SMOOTHING added to each category."""
    total = sum(counts.get(k, 0.0) for k in support) + SMOOTHING * len(support)
    return {k: (counts.get(k, 0.0) + SMOOTHING) / total for k in support}


def surprise_bits(log_p: float) -> float:
    """-log2 p from ln p, bounded."""
    return min(MAX_BITS, max(0.0, -log_p / LOG2))


def p_value(log_p: float) -> float:
    return math.exp(log_p) if log_p > -745 else 0.0


def robust_sigma(mad: float, median: float) -> float:
    """sigma from a MAD (floored: a constant baseline still has a scale)."""
    return max(mad * MAD_TO_SIGMA, abs(median) * 0.01, 1e-9)


def variance_rise_log_p(window_variance: float, window_samples: int, baseline_std: float) -> float:
    """ln p of a window's sample variance at least this large: (n - 1) s^2 / sigma^2 is
    chi-squared with n - 1 degrees of freedom (one-sided: only a rise is news)."""
    if window_samples < 2 or baseline_std <= 0:
        return 0.0
    statistic = (window_samples - 1) * window_variance / baseline_std**2
    return float(stats.chi2.logsf(statistic, window_samples - 1))


def shift_log_p(
    window_median: float, window_samples: int, baseline_median: float, baseline_mad: float
) -> tuple[float, float]:
    """(robust z, ln p two-sided) of a window's median against the baseline."""
    sigma = robust_sigma(baseline_mad, baseline_median)
    z = (window_median - baseline_median) / (
        MEDIAN_STANDARD_ERROR * sigma / math.sqrt(window_samples)
    )
    return z, float(stats.norm.logsf(abs(z))) + math.log(2)


def g_statistic(counts: Mapping[str, float], baseline: Mapping[str, float]) -> tuple[float, float]:
    """(G, KL in bits) of `counts` against the baseline's counts over the union of their
    categories (the baseline smoothed: a category it never saw is unlikely, not
    impossible)."""
    support = sorted(set(counts) | set(baseline))
    n = sum(counts.values())
    if n <= 0 or len(support) < 2:
        return 0.0, 0.0
    expected = smoothed(baseline, support)
    observed = [counts.get(k, 0.0) / n for k in support]
    kl = kl_bits(observed, [expected[k] for k in support])
    return 2.0 * n * kl * LOG2, kl


def g_test_log_p(
    counts: Mapping[str, float], baseline: Mapping[str, float]
) -> tuple[float, float, float]:
    """(G, KL in bits, ln p): G is chi-squared with (categories - 1) degrees of freedom."""
    g, kl = g_statistic(counts, baseline)
    support = set(counts) | set(baseline)
    if g <= 0 or len(support) < 2:
        return g, kl, 0.0
    return g, kl, float(stats.chi2.logsf(g, len(support) - 1))


def overdue_log_p(
    elapsed_ms: float, gap_p99_ms: float, gap_p999_ms: float, ended: float, followed: float
) -> float:
    """ln p of no next step `elapsed_ms` after a step: either the step ended its run (the
    share `ended` of `ended + followed` occurrences, smoothed) or the gap is this long
    (beyond the baseline's p99 its tail is extrapolated: ten times rarer per p99 -> p99.9
    distance). A run that went silent is at most as surprising as a step ending a run:
    about log2 of the occurrences seen."""
    scale = max(gap_p999_ms - gap_p99_ms, gap_p99_ms * 0.01, 1.0)
    beyond = max(0.0, elapsed_ms - gap_p99_ms) / scale
    waited = min(1.0, 0.01 * 10.0 ** (-min(beyond, 300.0)))
    end = (ended + SMOOTHING) / (ended + followed + 2 * SMOOTHING)
    return math.log(end + (1.0 - end) * waited)


def missed_start_log_p(
    since_last_s: float, interval_median_s: float, interval_mad_s: float
) -> float:
    """ln p that a periodic process has not started for `since_last_s`: a one-sided normal
    tail of the interval between starts, sigma estimated robustly."""
    sigma = max(interval_mad_s * MAD_TO_SIGMA, interval_median_s * 0.02, 1.0)
    return float(stats.norm.logsf((since_last_s - interval_median_s) / sigma))
