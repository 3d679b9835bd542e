"""Audience intervals (Poisson-binomial), ranking and the spec check, on numbers the tests
compute themselves."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from loyalty_model import predict
from loyalty_model.features import FEATURE_VERSION, FeatureSpec


def brute_force_pmf(p):
    pmf = np.zeros(len(p) + 1)
    for outcome in itertools.product([0, 1], repeat=len(p)):
        prob = np.prod([pi if o else 1 - pi for pi, o in zip(p, outcome, strict=True)])
        pmf[sum(outcome)] += prob
    return pmf


@pytest.mark.parametrize("p", [[0.1, 0.5, 0.9], [0.01] * 6, [0.3, 0.3, 0.7, 0.05, 0.99]])
def test_poisson_binomial_pmf_matches_brute_force(p):
    got = predict.poisson_binomial_pmf(np.array(p))
    want = brute_force_pmf(p)
    np.testing.assert_allclose(got, want[: len(got)], atol=1e-12)


def test_exact_interval_covers_ninety_percent():
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 20, 800)
    lo, hi = predict.exact_interval(p)
    draws = (rng.random((20_000, len(p))) < p).sum(axis=1)
    assert lo <= p.sum() <= hi
    assert np.mean(draws < lo) <= 0.05 + 0.01
    assert np.mean(draws > hi) <= 0.05 + 0.01
    assert np.mean((draws >= lo) & (draws <= hi)) >= 0.90


def test_degenerate_audiences():
    assert predict.exact_interval(np.zeros(0)) == (0, 0)
    assert predict.exact_interval(np.zeros(10)) == (0, 0)
    assert predict.exact_interval(np.ones(4)) == (4, 4)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_refined_normal_approximation_agrees_with_exact(seed):
    rng = np.random.default_rng(seed)
    p = rng.beta(0.3, 15, 4000)
    q = p * (1 - p)
    approx = predict.rna_interval(len(p), p.sum(), q.sum(), (q * (1 - 2 * p)).sum())
    exact = predict.exact_interval(p)
    assert abs(approx[0] - exact[0]) <= 1 and abs(approx[1] - exact[1]) <= 1


def test_dispersion_mixes_over_the_rate_and_covers_a_shared_campaign_effect():
    rng = np.random.default_rng(5)
    p = rng.beta(0.5, 40, 3000)
    tau2 = 0.2
    assert predict.rate_scales(0.0).tolist() == [1.0]
    scales = predict.rate_scales(tau2)
    assert scales.mean() == pytest.approx(1.0, abs=0.01)
    assert scales.var() == pytest.approx(tau2, rel=0.2)  # 16 nodes: the tails are cut a bit
    plain = predict.exact_interval(p)
    wide = predict.exact_interval(p, dispersion=tau2)
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
    approx = predict.rna_interval(len(p), *m, dispersion=tau2)
    exact = predict.exact_interval(p, dispersion=tau2)
    assert abs(approx[0] - exact[0]) <= 1 and abs(approx[1] - exact[1]) <= 1


def test_large_audiences_switch_to_the_approximation():
    a = predict.AudienceAccumulator()
    rng = np.random.default_rng(4)
    chunks = [rng.beta(0.5, 30, 3000) for _ in range(3)]
    for c in chunks:
        a.add(c)
    assert a.kept > predict.EXACT_MAX and a.n == 9000
    lo, hi = a.interval()
    assert lo < a.m1 < hi
    np.testing.assert_allclose(a.m1, sum(c.sum() for c in chunks))


def test_rank_by_cost_then_rate():
    df = pd.DataFrame(
        {
            "influencer_id": ["a", "b", "c", "d"],
            "expected_loyal": [10.0, 4.0, 5.0, 1.0],
            "price_per_post": [100.0, 20.0, None, None],
            "loyal_rate": [0.01, 0.02, 0.05, 0.03],
        }
    )
    ranked = predict.rank(df)
    # b: 0.2 loyal per unit cost beats a: 0.1; unpriced c, d follow by rate
    assert list(ranked.influencer_id) == ["b", "a", "c", "d"]
    assert list(ranked["rank"]) == [1, 2, 3, 4]
    assert list(ranked.rank_basis) == ["expected_loyal_per_cost"] * 2 + ["loyal_rate"] * 2


def test_rank_without_any_price_uses_rate():
    df = pd.DataFrame(
        {
            "influencer_id": ["a", "b"],
            "expected_loyal": [10.0, 1.0],
            "price_per_post": [None, None],
            "loyal_rate": [0.01, 0.02],
        }
    )
    assert list(predict.rank(df).influencer_id) == ["b", "a"]


def _spec(**kw) -> FeatureSpec:
    base = FeatureSpec(
        version=FEATURE_VERSION,
        windows=(7, 30),
        prior_strength=10.0,
        horizon_days=90,
        min_purchases=2,
        require_attribution=False,
        names=("x",),
        categorical=(),
        categories={},
    )
    return replace(base, **kw)


class _Model:
    def __init__(self, spec):
        self.spec = spec


def test_spec_check_accepts_current_version():
    fcfg, lcfg = predict.check_spec(_Model(_spec()))
    assert fcfg.windows == (7, 30) and lcfg.horizon_days == 90


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "99"}, "feature spec version '99'"),
        ({"version": "1"}, "feature spec version '1'"),  # a model from before the rebuy rates
        ({"windows": ()}, "spec is not valid"),
    ],
)
def test_spec_check_refuses_what_it_cannot_build(change, message):
    with pytest.raises(predict.ScoringError, match=message):
        predict.check_spec(_Model(_spec(**change)))
