"""The entropy layer's statistics on cases whose answers are known exactly."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from karma.entropy import detectors as d


@pytest.mark.parametrize(
    ("probabilities", "bits"),
    [
        ([1.0], 0.0),
        ([0.5, 0.5], 1.0),
        ([0.25] * 4, 2.0),
        ([1 / 8] * 8, 3.0),
        ([0.75, 0.25], 0.811278),
    ],
)
def test_shannon_entropy_in_bits(probabilities: list[float], bits: float) -> None:
    assert d.entropy_bits(probabilities) == pytest.approx(bits, abs=1e-6)


def test_kl_divergence_of_two_known_histograms() -> None:
    # 0.5 log2(0.5/0.25) + 0.5 log2(0.5/0.75) = 0.5 - 0.292481
    assert d.kl_bits([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.207519, abs=1e-6)
    assert d.kl_bits([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_a_window_like_its_baseline_is_not_surprising() -> None:
    _g, kl, log_p = d.g_test_log_p({"a": 30, "b": 10}, {"a": 300, "b": 100})
    assert kl == pytest.approx(0.0, abs=1e-3) and d.surprise_bits(log_p) < 1


def test_g_test_is_sized_to_the_window() -> None:
    """The same proportions are more surprising with more samples."""
    few = d.g_test_log_p({"a": 2, "b": 2}, {"a": 90, "b": 10})
    many = d.g_test_log_p({"a": 50, "b": 50}, {"a": 90, "b": 10})
    assert few[1] == pytest.approx(many[1], rel=0.05)  # the same divergence...
    assert d.surprise_bits(few[2]) < 5 < 40 < d.surprise_bits(many[2])  # ...not the same news
    # G = 2 N KL (nats): chi-squared with k - 1 degrees of freedom.
    expected = {"a": 90.5 / 101, "b": 10.5 / 101}
    kl_nats = 0.5 * math.log(0.5 / expected["a"]) + 0.5 * math.log(0.5 / expected["b"])
    assert many[0] == pytest.approx(2 * 100 * kl_nats, rel=1e-9)
    assert many[2] == pytest.approx(stats.chi2.logsf(many[0], 1), rel=1e-9)


def test_a_step_never_seen_is_unlikely_not_impossible() -> None:
    _g, kl, log_p = d.g_test_log_p({"ship": 10}, {"reserve": 1000})
    assert math.isfinite(kl) and 20 < d.surprise_bits(log_p) < d.MAX_BITS


def test_robust_z_of_a_window_median() -> None:
    # sigma = 1.4826 x MAD = 14.826; SE of a median of 9 = 1.2533 x 14.826 / 3 = 6.1938
    z, log_p = d.shift_log_p(130.0, 9, 100.0, 10.0)
    assert z == pytest.approx(30 / (math.sqrt(math.pi / 2) * 14.826 / 3), rel=1e-9)
    assert z == pytest.approx(4.8436, abs=1e-3)
    assert log_p == pytest.approx(math.log(2 * stats.norm.sf(z)), rel=1e-9)
    assert d.surprise_bits(log_p) == pytest.approx(-math.log2(2 * stats.norm.sf(z)), rel=1e-9)


def test_surprise_is_minus_log2_p_and_bounded() -> None:
    assert d.surprise_bits(math.log(2**-20)) == pytest.approx(20.0)
    assert d.surprise_bits(0.0) == 0.0
    assert d.surprise_bits(-1e9) == d.MAX_BITS
    assert d.p_value(math.log(0.25)) == pytest.approx(0.25) and d.p_value(-1e6) == 0.0


def test_overdue_at_the_p99_gap_of_a_step_that_never_ends_a_run() -> None:
    # ended: (0 + 0.5) / (0 + 99 + 1) = 0.005; waited at p99: 0.01
    log_p = d.overdue_log_p(1000.0, 1000.0, 2000.0, ended=0, followed=99)
    assert log_p == pytest.approx(math.log(0.005 + 0.995 * 0.01), rel=1e-9)
    # one p99 -> p99.9 distance further: the wait ten times rarer
    further = d.overdue_log_p(2000.0, 1000.0, 2000.0, ended=0, followed=99)
    assert further == pytest.approx(math.log(0.005 + 0.995 * 0.001), rel=1e-9)
    # however long the wait, no more surprising than the step ending its run
    assert d.surprise_bits(d.overdue_log_p(1e9, 1000.0, 2000.0, 0, 99)) == pytest.approx(
        -math.log2(0.005)
    )
    # a step that usually ends its run is not overdue at all
    assert d.surprise_bits(d.overdue_log_p(10_000.0, 1000.0, 2000.0, 99, 1)) < 0.1


def test_a_missed_periodic_start() -> None:
    # interval 300 s, MAD 2 s: sigma = max(2.9652, 6, 1) = 6 s; 360 s is 10 sigma late
    log_p = d.missed_start_log_p(360.0, 300.0, 2.0)
    assert log_p == pytest.approx(stats.norm.logsf(10.0), rel=1e-9)
    assert d.surprise_bits(log_p) > 70
