"""Latency statistics: numpy oracles, the exact bootstrap of the median against brute-force resampling."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesep import stats


def test_summary_matches_numpy():
    x = np.random.default_rng(3).lognormal(0.0, 0.2, 501)
    s = stats.summarize(x)
    assert s.n == 501
    assert s.mean == pytest.approx(x.mean())
    assert s.std == pytest.approx(x.std(ddof=1))
    assert (s.min, s.max) == (x.min(), x.max())
    assert [s.p50, s.p90, s.p99] == pytest.approx(np.percentile(x, [50, 90, 99]))
    lo, hi = s.ci95_p50
    assert lo < s.p50 < hi
    d = s.to_dict()
    assert set(d) >= {"mean", "std", "min", "p50", "p90", "p99", "ci95_p50"} and isinstance(d["ci95_p50"], list)


def test_bootstrap_is_seeded():
    x = np.random.default_rng(0).normal(10, 1, 200)
    assert stats.bootstrap_median_ci(x, seed=1) == stats.bootstrap_median_ci(x, seed=1)
    assert stats.bootstrap_median_ci(x, seed=1) != stats.bootstrap_median_ci(x, seed=2)


@pytest.mark.parametrize("n", [5, 6, 40, 41])
def test_exact_bootstrap_matches_resampling(n):
    """Medians drawn from order statistics have the distribution of medians of real resamples."""
    x = np.random.default_rng(n).lognormal(0.0, 0.3, n)
    fast = stats._boot_medians(x, 100_000, np.random.default_rng(0))
    slow = np.median(x[np.random.default_rng(1).integers(0, n, size=(100_000, n))], axis=1)
    qs = [2.5, 10, 25, 50, 75, 90, 97.5]
    # Quantiles of a discrete distribution: equal, or neighbouring order statistics when a quantile sits on a step.
    values = np.unique(np.concatenate([np.sort(x), (np.sort(x)[:-1] + np.sort(x)[1:]) / 2]))
    for q_fast, q_slow in zip(np.percentile(fast, qs), np.percentile(slow, qs)):
        assert abs(np.searchsorted(values, q_fast) - np.searchsorted(values, q_slow)) <= 1
    assert fast.mean() == pytest.approx(slow.mean(), rel=2e-3)


def test_interval_covers_the_true_median_about_95_percent():
    rng = np.random.default_rng(7)
    hits = 0
    for trial in range(300):
        lo, hi = stats.bootstrap_median_ci(rng.normal(0.0, 1.0, 101), seed=trial)
        hits += lo <= 0.0 <= hi
    assert 0.89 <= hits / 300 <= 0.99


def test_outliers_are_counted_not_dropped():
    x = [1.0 + 0.01 * (i % 7) for i in range(99)] + [50.0]
    s = stats.summarize(x)
    assert s.outliers == 1 and s.n == 100 and s.max == 50.0
    assert s.mean == pytest.approx(np.mean(x))
    assert 1.0 < s.outlier_threshold < 50.0


def test_constant_and_single_samples():
    s = stats.summarize([2.0] * 10)
    assert s.ci95_p50 == (2.0, 2.0) and s.std == 0.0 and s.outliers == 0
    one = stats.summarize([3.5])
    assert one.ci95_p50 == (3.5, 3.5) and one.std == 0.0 and one.p99 == 3.5


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_bad_samples_raise(bad):
    with pytest.raises(ValueError):
        stats.summarize(bad)


def test_large_sample_is_summarized():
    """200 000 samples summarize (speed lives in scripts/bench_*.py, not in a timed unit test)."""
    x = np.random.default_rng(0).lognormal(0.0, 0.1, 200_000)
    s = stats.summarize(x)
    assert s.n == 200_000 and s.min <= s.ci95_p50[0] <= s.p50 <= s.ci95_p50[1] <= s.max


def test_ratio_of_medians_paired_exact_and_unpaired():
    b = np.random.default_rng(1).lognormal(0.0, 0.2, 300)
    r = stats.ratio_of_medians(2.0 * b, b)
    assert r.paired and r.ratio == pytest.approx(2.0) and r.lo == pytest.approx(2.0) and r.hi == pytest.approx(2.0)
    rng = np.random.default_rng(2)
    a, c = rng.normal(12.0, 0.5, 400), rng.normal(10.0, 0.5, 333)
    u = stats.ratio_of_medians(a, c)
    assert not u.paired and u.lo < 1.2 < u.hi and u.hi - u.lo < 0.05
    assert u == stats.ratio_of_medians(a, c)  # seeded


def test_ratio_rejects_bad_input():
    with pytest.raises(ValueError):
        stats.ratio_of_medians([1.0, 2.0], [1.0], paired=True)
    with pytest.raises(ValueError):
        stats.ratio_of_medians([1.0], [0.0])
    with pytest.raises(ValueError):
        stats.bootstrap_median_ci([1.0, 2.0], confidence=1.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=1e-4, max_value=1e4), min_size=1, max_size=300))
def test_summary_is_ordered(samples):
    s = stats.summarize(samples, n_boot=200)
    assert s.min <= s.p50 <= s.p90 <= s.p99 <= s.max
    assert s.min <= s.ci95_p50[0] <= s.ci95_p50[1] <= s.max
    assert 0 <= s.outliers < s.n


# ---------------------------------------------------------------- several sessions, A/A control, bimodality

def _bursty_sessions(rng, ratio, sessions=5, rounds=400, session_sd=0.1):
    """Paired a/b rounds: a session-wide speed (mode flips), shared bursts over consecutive rounds, a/b = ratio."""
    out_a, out_b = [], []
    for _ in range(sessions):
        level = np.exp(rng.normal(0.0, session_sd))
        burst = np.ones(rounds)
        for start in rng.integers(0, rounds, 6):
            burst[start:start + 30] *= 1.6
        # the bursts hit a and b alike only partly: they are interleaved, not simultaneous
        a = level * burst * np.exp(rng.normal(0, 0.03, rounds)) * np.where(rng.random(rounds) < 0.5, burst, 1)
        b = level * burst * np.exp(rng.normal(0, 0.03, rounds)) * np.where(rng.random(rounds) < 0.5, burst, 1)
        out_a.append(a * ratio)
        out_b.append(b)
    return out_a, out_b


def test_session_ratio_is_the_geometric_mean_of_session_ratios():
    a = [[2.0, 2.0, 2.0], [6.0, 6.0, 6.0]]
    b = [[1.0, 1.0, 1.0], [4.0, 4.0, 4.0]]
    r = stats.session_ratio(a, b)
    assert r.per_session == pytest.approx((2.0, 1.5))
    assert r.ratio == pytest.approx(np.sqrt(3.0)) and r.sessions == 2 and r.rounds == (3, 3)
    # the bootstrap's ends are the two sessions' ratios, then widened for having only two sessions
    center, e = np.log(np.sqrt(3.0)), stats.expansion(2)
    assert r.lo == pytest.approx(np.exp(center + (np.log(1.5) - center) * e))
    assert r.hi == pytest.approx(np.exp(center + (np.log(2.0) - center) * e))
    assert set(r.to_dict()) >= {"ratio", "lo", "hi", "sessions", "rounds", "blocks", "per_session"}


def test_expansion_follows_students_t_for_few_sessions():
    assert stats.t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.776, rel=0.005)
    assert stats.t_quantile(0.975, 30) == pytest.approx(2.042, rel=0.001)
    assert stats.expansion(1) == 1.0
    assert stats.expansion(5) == pytest.approx(2.776 / 1.95996 * np.sqrt(5 / 4), rel=0.005)
    assert stats.expansion(3) > stats.expansion(5) > stats.expansion(20) > 1.0


def test_session_ratio_covers_a_true_ratio_of_one_under_bursty_noise():
    """95% intervals over bursty sessions hold the true ratio about 95% of the time (not 50%, as the
    one-session paired bootstrap did)."""
    rng = np.random.default_rng(7)
    covers = []
    for i in range(40):
        r = stats.session_ratio(*_bursty_sessions(rng, 1.0), n_boot=400, seed=i)
        covers.append(r.lo <= 1.0 <= r.hi)
    assert sum(covers) >= 34, sum(covers)


def test_session_ratio_finds_a_real_difference():
    rng = np.random.default_rng(8)
    r = stats.session_ratio(*_bursty_sessions(rng, 0.8))
    assert r.hi < 1.0 and r.ratio == pytest.approx(0.8, rel=0.05)


def test_one_session_is_a_block_bootstrap_over_its_rounds():
    rng = np.random.default_rng(9)
    a, b = _bursty_sessions(rng, 1.0, sessions=1, rounds=900)
    r = stats.session_ratio(a, b)
    assert r.sessions == 1 and r.blocks == (30,) and r.lo < r.ratio < r.hi


def test_session_ratio_pairs_only_rounds_both_ran_and_checks_its_input():
    r = stats.session_ratio([[1.0, 1.0, 50.0, 50.0]], [[1.0, 1.0]])
    assert r.ratio == pytest.approx(1.0) and r.rounds == (2,)
    with pytest.raises(ValueError, match="same number"):
        stats.session_ratio([[1.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="finite"):
        stats.session_ratio([[1.0, float("nan")]], [[1.0, 1.0]])


def test_noise_floor_is_the_largest_excursion_of_the_control():
    control = stats.SessionRatio(ratio=1.0, lo=0.98, hi=1.01, confidence=0.95, sessions=3, rounds=(9,) * 3,
                                 blocks=(3,) * 3, per_session=(1.0,) * 3)
    assert stats.noise_floor(control) == pytest.approx(1 / 0.98 - 1)


def test_bimodality_finds_two_speed_modes_but_not_one_skewed_mode():
    rng = np.random.default_rng(4)
    two = np.r_[rng.normal(1.0, 0.02, 300), rng.normal(1.5, 0.03, 200)]
    found = stats.bimodality(two)
    assert found is not None and found["fast_ms"] == pytest.approx(1.0, rel=0.02)
    assert found["slow_ms"] == pytest.approx(1.5, rel=0.02) and found["slow_share"] == pytest.approx(0.4, abs=0.02)
    assert stats.bimodality(rng.lognormal(0.0, 0.3, 2000)) is None
    assert stats.bimodality(np.r_[rng.lognormal(0.0, 0.05, 970), np.full(30, 5.0)]) is None  # 3% outliers
