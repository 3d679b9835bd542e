"""Audience intervals: Poisson-binomial, campaign-level dispersion and sampling, checked
against brute force and against simulations of what each part stands for."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from loyalty_model import intervals


def brute_force_pmf(p):
    pmf = np.zeros(len(p) + 1)
    for outcome in itertools.product([0, 1], repeat=len(p)):
        prob = np.prod([pi if o else 1 - pi for pi, o in zip(p, outcome, strict=True)])
        pmf[sum(outcome)] += prob
    return pmf


@pytest.mark.parametrize("p", [[0.1, 0.5, 0.9], [0.01] * 6, [0.3, 0.3, 0.7, 0.05, 0.99]])
def test_poisson_binomial_pmf_matches_brute_force(p):
    got = intervals.poisson_binomial_pmf(np.array(p))
    want = brute_force_pmf(p)
    np.testing.assert_allclose(got, want[: len(got)], atol=1e-12)


@pytest.mark.parametrize("n", [50, 500])
def test_poisson_binomial_pmf_matches_scipy_on_large_audiences(n):
    """scipy.stats.poisson_binom is the reference; our pass is kept because it mixes over the
    rate nodes at once, 10-14x faster (benchmarks/poisson_binomial.py)."""
    from scipy.stats import poisson_binom

    p = np.random.default_rng(n).beta(1, 40, n)
    scales = intervals.rate_scales(0.2)
    got = intervals.poisson_binomial_pmf(p, scales)
    k = np.arange(len(got))
    want = np.mean([poisson_binom.pmf(k, np.minimum(p * s, 1)) for s in scales], axis=0)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got.sum() == pytest.approx(1) and len(got) < n  # truncated where the mass is


def test_exact_interval_covers_ninety_percent():
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 20, 800)
    lo, hi = intervals.exact_interval(p)
    draws = (rng.random((20_000, len(p))) < p).sum(axis=1)
    assert lo <= p.sum() <= hi
    assert np.mean(draws < lo) <= 0.05 + 0.01
    assert np.mean(draws > hi) <= 0.05 + 0.01
    assert np.mean((draws >= lo) & (draws <= hi)) >= 0.90


def test_degenerate_audiences():
    assert intervals.exact_interval(np.zeros(0)) == (0, 0)
    assert intervals.exact_interval(np.zeros(10)) == (0, 0)
    assert intervals.exact_interval(np.ones(4)) == (4, 4)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_refined_normal_approximation_agrees_with_exact(seed):
    rng = np.random.default_rng(seed)
    p = rng.beta(0.3, 15, 4000)
    q = p * (1 - p)
    approx = intervals.rna_interval(len(p), p.sum(), q.sum(), (q * (1 - 2 * p)).sum())
    exact = intervals.exact_interval(p)
    assert abs(approx[0] - exact[0]) <= 1 and abs(approx[1] - exact[1]) <= 1


def test_dispersion_mixes_over_the_rate_and_covers_a_shared_campaign_effect():
    rng = np.random.default_rng(5)
    p = rng.beta(0.5, 40, 3000)
    tau2 = 0.2
    assert intervals.rate_scales(0.0).tolist() == [1.0]
    scales = intervals.rate_scales(tau2)
    assert scales.mean() == pytest.approx(1.0, abs=0.01)
    assert scales.var() == pytest.approx(tau2, rel=0.2)  # 16 nodes: the tails are cut a bit
    plain = intervals.exact_interval(p)
    wide = intervals.exact_interval(p, dispersion=tau2)
    assert wide[0] < plain[0] and wide[1] > plain[1]
    # simulate what the dispersion stands for: one rate multiplier per campaign
    m = rng.gamma(1 / tau2, tau2, 4000)
    draws = (rng.random((4000, len(p))) < np.minimum(np.outer(m, p), 1)).sum(axis=1)
    inside = (draws >= wide[0]) & (draws <= wide[1])
    assert 0.88 <= inside.mean() <= 0.95
    assert ((draws >= plain[0]) & (draws <= plain[1])).mean() < 0.75  # too narrow without


@pytest.mark.parametrize("tau2", [0.05, 0.3])
def test_approximation_agrees_with_exact_under_dispersion(tau2):
    rng = np.random.default_rng(6)
    p = rng.beta(0.3, 15, 4000)
    q = p * (1 - p)
    m = (p.sum(), q.sum(), (q * (1 - 2 * p)).sum())
    approx = intervals.rna_interval(len(p), *m, dispersion=tau2)
    exact = intervals.exact_interval(p, dispersion=tau2)
    assert abs(approx[0] - exact[0]) <= 1 and abs(approx[1] - exact[1]) <= 1


def test_large_audiences_switch_to_the_approximation():
    a = intervals.AudienceAccumulator()
    rng = np.random.default_rng(4)
    chunks = [rng.beta(0.5, 30, 3000) for _ in range(3)]
    for c in chunks:
        a.add(c)
    assert a.kept > intervals.EXACT_MAX and a.n == 9000
    lo, hi = a.interval()
    assert lo < a.m1 < hi
    np.testing.assert_allclose(a.m1, sum(c.sum() for c in chunks))


def full_audience_coverage(population, n, tau2, reps, seed, prior=None):
    """Share of realised whole-audience counts inside the interval computed from a uniform
    sample of n of the population (a new sample and a new campaign each time), and the share
    inside the naive interval that scales the sample's own interval up."""
    rng = np.random.default_rng(seed)
    big = len(population)
    inside = naive = 0
    for _ in range(reps):
        sample = population[rng.choice(big, n, replace=False)]
        a = intervals.AudienceAccumulator()
        a.add(sample)
        lo, hi = a.full_interval(big, tau2, prior)
        c = rng.gamma(1 / tau2, tau2) if tau2 > 0 else 1.0
        count = (rng.random(big) < np.minimum(c * population, 1)).sum()
        inside += lo <= count <= hi
        s_lo, s_hi = a.interval(tau2)
        naive += s_lo * big / n <= count <= s_hi * big / n
    return inside / reps, naive / reps


POPULATION = np.random.default_rng(11).beta(0.5, 15, 4000)


@pytest.mark.parametrize(("n", "tau2"), [(400, 0.0), (40, 0.2), (8, 0.2), (8, 0.0)])
def test_full_audience_interval_covers_ninety_percent_of_whole_audiences(n, tau2):
    var = POPULATION.var(ddof=1)  # the spread within audiences like this one (the model's)
    coverage, scaled = full_audience_coverage(POPULATION, n, tau2, 1500, seed=n, prior=var)
    assert 0.86 <= coverage <= 0.95
    # scaling the sample's own interval up scales chance by N/n instead of sqrt(N/n): too wide
    assert scaled > 0.98


def test_tiny_samples_need_the_spread_of_audiences_like_theirs():
    """Eight followers say little about the spread of an audience. Shrunk toward the spread
    of audiences like it, the interval covers; toward a third of it (the spread of a mega
    audience pooled with a nano one) it is too narrow; without a prior (the largest spread
    the rate allows) it is wide."""
    var = POPULATION.var()
    right, _ = full_audience_coverage(POPULATION, 8, 0.0, 1500, seed=8, prior=var)
    narrow, _ = full_audience_coverage(POPULATION, 8, 0.0, 1500, seed=8, prior=var / 3)
    wide, _ = full_audience_coverage(POPULATION, 8, 0.0, 1500, seed=8)
    assert narrow < 0.86 <= right <= 0.95 < wide


def test_full_audience_interval_is_the_poisson_binomial_when_everyone_is_scored():
    rng = np.random.default_rng(12)
    a = intervals.AudienceAccumulator()
    a.add(rng.beta(0.5, 20, 1200))
    assert a.full_interval(1200, 0.1) == a.interval(0.1)
    lo, hi = a.full_interval(120_000, 0.1)
    assert lo < 100 * a.m1 < hi  # the whole audience: rate times its size


def test_a_sample_of_identical_followers_borrows_the_prior_spread():
    a = intervals.AudienceAccumulator()
    a.add(np.zeros(3))  # three bots: no spread of their own
    lo, hi = a.full_interval(3000, prior_variance=0.002)
    assert lo == 0 and hi > 10


def test_pooled_variance_weights_audiences_by_degrees_of_freedom():
    a, b, c = (intervals.AudienceAccumulator() for _ in range(3))
    a.add(np.array([0.1, 0.3]))
    b.add(np.array([0.0, 0.0, 0.3, 0.3]))
    c.add(np.array([0.5]))  # one follower: no spread to pool
    ss = 0.02 + 4 * 0.15**2
    assert intervals.pooled_variance([a, b, c]) == pytest.approx(ss / (1 + 3))
    assert intervals.pooled_variance([c]) is None


def test_an_audience_from_its_sums_equals_one_that_outgrew_the_exact_interval():
    """Spark hands over only the sums of large audiences: the accumulator they make must be
    the one `add` leaves when an audience passes EXACT_MAX."""
    p = np.random.default_rng(0).uniform(0, 0.1, intervals.EXACT_MAX + 10)
    streamed = intervals.AudienceAccumulator()
    streamed.add(p[:100])
    streamed.add(p[100:])
    sums = (streamed.n, streamed.m1, streamed.m2, streamed.m3)
    summed = intervals.AudienceAccumulator.from_sums(*sums)
    assert summed == streamed
    assert summed.interval(0.1) == streamed.interval(0.1)
