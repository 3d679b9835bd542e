"""The BG/NBD model (btyd.py) against the paper's formulas computed another way, and against
simulation of the process it describes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy.special import beta as B
from scipy.special import gamma as G

from loyalty_model import btyd

PARAMS = (0.8, 20.0, 1.2, 3.5)  # r, alpha (days), a, b: well identified by a year of history


def simulate(params, T, horizon, seed, cap=400):
    """The BG/NBD process itself, customer by customer: lambda ~ Gamma(r, rate alpha),
    p ~ Beta(a, b); exponential gaps between purchases while active; after each purchase the
    customer drops out with probability p (so the purchase they drop out after is
    Geometric(p)). Returns x, t_x over (0, T] and the purchases in (T, T + horizon]."""
    r, alpha, a, b = params
    rng = np.random.default_rng(seed)
    n = len(T)
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    last = rng.geometric(p)  # the purchase after which the customer drops out
    times = np.cumsum(rng.exponential(1.0, (n, cap)), axis=1) / lam[:, None]
    made = np.arange(1, cap + 1)[None, :] <= last[:, None]
    # the cap must not cut a purchase that falls in the observed or the future window
    assert ((times[:, -1] <= T + horizon) & (last > cap)).sum() == 0
    seen = made & (times <= T[:, None])
    x = seen.sum(axis=1)
    t_x = np.where(seen, times, 0.0).max(axis=1)
    future = (made & (times > T[:, None]) & (times <= (T + horizon)[:, None])).sum(axis=1)
    return x.astype(float), t_x, future


# -- the likelihood ------------------------------------------------------------------------


TABLE = [(0, 0.0, 30.0), (2, 12.0, 40.0), (5, 35.5, 50.0)]  # (x, t_x, T) in days
HAND = (0.5, 10.0, 0.8, 2.5)


def _by_hand(x, t_x, T, r, alpha, a, b):
    """The paper's equation (6) written out with the beta and gamma functions themselves."""
    common = G(r + x) * alpha**r / G(r)
    alive = B(a, b + x) / B(a, b) * common / (alpha + T) ** (r + x)
    dropped = B(a + 1, b + x - 1) / B(a, b) * common / (alpha + t_x) ** (r + x) if x > 0 else 0.0
    return alive + dropped


def _by_integral(x, t_x, T, r, alpha, a, b):
    """The same from its definition: the individual likelihood
    (1 - p)^x lambda^x e^(-lambda T) + [x > 0] p (1 - p)^(x - 1) lambda^x e^(-lambda t_x)
    integrated numerically over lambda ~ Gamma(r, alpha) and p ~ Beta(a, b). The densities'
    poles at 0 (r, a < 1) are taken out by u = lambda^r and v = p^a (lambda^(r-1) dlambda =
    du / r, p^(a-1) dp = dv / a)."""
    tight = {"epsabs": 0.0, "epsrel": 1e-13, "limit": 200}

    def mix_p(f):
        dens = lambda v: (1 - v ** (1 / a)) ** (b - 1) / (a * B(a, b))  # noqa: E731
        return integrate.quad(lambda v: f(v ** (1 / a)) * dens(v), 0, 1, **tight)[0]

    def mix_lam(t):
        c = alpha**r / (r * G(r))
        lam = lambda u: u ** (1 / r)  # noqa: E731
        return integrate.quad(
            lambda u: c * lam(u) ** x * np.exp(-(alpha + t) * lam(u)), 0, np.inf, **tight
        )[0]

    out = mix_p(lambda p: (1 - p) ** x) * mix_lam(T)
    if x > 0:
        out += mix_p(lambda p: p * (1 - p) ** (x - 1)) * mix_lam(t_x)
    return out


def test_log_likelihood_of_a_hand_computed_table():
    x, t_x, T = (np.array(c, dtype=float) for c in zip(*TABLE, strict=True))
    ll = btyd.log_likelihood(HAND, x, t_x, T)
    hand = np.log([_by_hand(*row, *HAND) for row in TABLE])
    integral = np.log([_by_integral(*row, *HAND) for row in TABLE])
    np.testing.assert_allclose(ll, hand, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ll, integral, rtol=0, atol=1e-8)
    assert ll.sum() == pytest.approx(hand.sum(), abs=1e-8)
    # x = 0: one term only, e.g. 0.5 * ln(10 / 40) for the first customer (B(a, b)/B(a, b) = 1)
    assert ll[0] == pytest.approx(0.5 * np.log(10 / 40), abs=1e-12)


def test_log_likelihood_stays_finite_for_long_histories_and_many_purchases():
    ll = btyd.log_likelihood(PARAMS, [0, 400, 2000], [0, 5000, 9999], [1e5, 1e5, 1e4])
    assert np.isfinite(ll).all() and (ll < 0).all()


# -- the fit -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    """10,000 customers who made their first purchase 200-500 days ago."""
    T = np.random.default_rng(11).uniform(200, 500, 10_000).round()
    x, t_x, _ = simulate(PARAMS, T, 0.0, seed=12)
    return x, t_x, T


def test_fit_recovers_the_parameters_it_was_simulated_with(sample):
    x, t_x, T = sample
    fitted = btyd.fit_bg_nbd(x, t_x, T)
    assert fitted.converged and fitted.at_bound == ()
    # over 40 seeds of 5,000 customers the relative errors had standard deviations of 2.5 %
    # (r), 3.2 % (alpha), 5.5 % (a), 7.1 % (b) and 2.3 % (the mean dropout a / (a + b)); with
    # 10,000, 15 % is at least 3 of them for each, and 5 % for the mean dropout
    for name, true in zip(("r", "alpha", "a", "b"), PARAMS, strict=True):
        assert getattr(fitted, name) == pytest.approx(true, rel=0.15), name
    r, alpha, a, b = PARAMS
    assert fitted.a / (fitted.a + fitted.b) == pytest.approx(a / (a + b), rel=0.05)
    assert fitted.r / fitted.alpha == pytest.approx(r / alpha, rel=0.05)  # mean purchase rate
    # a maximum: the log-likelihood there beats the truth's and a nudge in any direction
    best = btyd.log_likelihood(fitted, x, t_x, T).sum()
    assert best == pytest.approx(fitted.log_likelihood)
    assert best >= btyd.log_likelihood(PARAMS, x, t_x, T).sum()
    for i in range(4):
        nudged = list(fitted.params)
        nudged[i] *= 1.02
        assert best > btyd.log_likelihood(nudged, x, t_x, T).sum()


def test_the_fits_gradient_is_the_likelihoods(sample):
    """The analytic gradient the fit uses (with respect to the log-parameters) against central
    differences of the log-likelihood itself, at the truth and far from it, with customers
    who never repeated among those who did."""
    x, t_x, T = (v[:500] / np.array([1.0, 300, 300])[i] for i, v in enumerate(sample))
    w = np.arange(len(x)) % 3 + 1.0
    assert (x == 0).any() and (x > 0).any()
    for params in ((0.8, 20 / 300, 1.2, 3.5), (0.2, 3.0, 0.05, 60.0), (3.0, 0.01, 5.0, 0.5)):
        theta = np.log(params)
        ll, grad = btyd._log_likelihood_and_gradient(theta, x, t_x, T, w)
        assert ll == pytest.approx(float(w @ btyd.log_likelihood(params, x, t_x, T)), rel=1e-12)
        h, numeric = 1e-6, np.zeros(4)
        for i in range(4):
            step = np.eye(4)[i] * h
            up = btyd._log_likelihood_and_gradient(theta + step, x, t_x, T, w)[0]
            down = btyd._log_likelihood_and_gradient(theta - step, x, t_x, T, w)[0]
            numeric[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-4)


def test_weights_are_counts_of_identical_customers(sample):
    x, t_x, T = (v[:600] for v in sample)
    rows = np.stack([x, t_x, T], axis=1)
    uniq, counts = np.unique(rows, axis=0, return_counts=True)
    twice = btyd.fit_bg_nbd(*np.repeat(rows, 2, axis=0).T)
    weighted = btyd.fit_bg_nbd(uniq[:, 0], uniq[:, 1], uniq[:, 2], weights=2 * counts)
    np.testing.assert_allclose(weighted.params, twice.params, rtol=1e-4)
    assert weighted.customers == twice.customers == 1_200


def test_data_that_identify_nothing_do_not_diverge():
    # nobody ever bought again: the dropout and the rate cannot both be pinned down
    fitted = btyd.fit_bg_nbd(np.zeros(50), np.zeros(50), np.linspace(10, 300, 50))
    assert all(np.isfinite(fitted.params)) and all(1e-6 < v < 1e6 for v in fitted.params)
    with pytest.raises(ValueError):
        btyd.fit_bg_nbd([1], [5], [3])  # a last purchase after the end of the observation


# -- what the model says about a customer ---------------------------------------------------


def test_p_alive_is_one_without_repeats_and_falls_with_silence():
    assert btyd.p_alive(PARAMS, [0, 0, 0], [0, 0, 0], [1, 100, 1e4]) == pytest.approx(1.0)
    T = np.array([30.0, 60, 120, 240, 480])
    alive = btyd.p_alive(PARAMS, 3, 25, T)
    assert (np.diff(alive) < 0).all() and 0 < alive[-1] < alive[0] < 1
    # a later last purchase, the same silence: more likely alive
    assert btyd.p_alive(PARAMS, 3, 200, 230) > btyd.p_alive(PARAMS, 3, 25, 55)


def test_expected_purchases_grow_with_the_horizon_and_sum_the_tail_probabilities():
    t = np.array([1.0, 10, 30, 90, 365])
    for history in [(0, 0, 0), (0, 0, 200), (4, 150, 200), (4, 20, 200)]:
        e = btyd.expected_purchases(PARAMS, t, *history)
        assert (np.diff(e) > 0).all() and e[0] > 0
    # E[N] = sum_k P(N >= k): the hypergeometric closed form against prob_at_least, for
    # a > 1 and for a < 1 (where the closed form divides by a - 1 < 0)
    k = np.arange(1, 400)
    for params in (PARAMS, (0.8, 20.0, 0.6, 3.5)):
        for history in [(0, 0, 0), (4, 150, 200), (4, 20, 200)]:
            series = btyd.prob_at_least(params, k, 90, *history).sum()
            assert btyd.expected_purchases(params, 90, *history) == pytest.approx(series, rel=1e-8)
    near_one = btyd.expected_purchases((0.8, 20.0, 1.0, 3.5), 90, 4, 150, 200)
    assert btyd.prob_at_least((0.8, 20.0, 1.0, 3.5), k, 90, 4, 150, 200).sum() == pytest.approx(
        near_one, rel=1e-5
    )


def test_prob_at_least_for_a_new_customer_is_the_papers_distribution():
    """At x = 0, T = 0 (just after the first purchase) the conditional P(at least k) is
    1 - sum_{n < k} P(X(t) = n) of the paper's equation (8)."""
    n = np.arange(0, 60)
    for t in (30.0, 90.0, 365.0):
        pmf = btyd.pmf(PARAMS, n, t)
        assert (pmf > 0).all()
        tail = btyd.prob_at_least(PARAMS, len(n), t, 0, 0, 0)  # 60 or more
        assert pmf.sum() + tail == pytest.approx(1.0, abs=1e-12)
        for k in (1, 2, 3, 5):
            assert btyd.prob_at_least(PARAMS, k, t, 0, 0, 0) == pytest.approx(
                1 - pmf[:k].sum(), abs=1e-12
            )
    assert btyd.pmf(PARAMS, np.arange(3000), 30.0).sum() == pytest.approx(1.0, abs=1e-6)
    assert btyd.prob_at_least(PARAMS, 0, 90, 3, 10, 50) == 1.0
    # more purchases needed, or less time: less likely
    p = btyd.prob_at_least(PARAMS, [1, 2, 3], 90, 3, 150, 200)
    assert (np.diff(p) < 0).all()
    assert btyd.prob_at_least(PARAMS, 2, 30, 3, 150, 200) < p[1]


@pytest.fixture(scope="module")
def followed():
    """20,000 customers observed for 200 days, then 90 more."""
    T = np.full(20_000, 200.0)
    return (*simulate(PARAMS, T, 90.0, seed=21), T)


def test_conditional_predictions_match_simulated_futures(followed):
    x, t_x, future, T = followed
    e = btyd.expected_purchases(PARAMS, 90, x, t_x, T)
    p2 = btyd.prob_at_least(PARAMS, 2, 90, x, t_x, T)
    groups = {"x = 0": x == 0, "x = 1-3": (x >= 1) & (x <= 3), "x >= 4": x >= 4}
    groups["silent 100+ days"] = (x >= 1) & (T - t_x >= 100)
    for name, m in groups.items():
        assert m.sum() > 500, name
        se = future[m].std() / np.sqrt(m.sum())
        assert abs(e[m].mean() - future[m].mean()) < 4 * se, name
        hits = (future[m] >= 2).astype(float)
        se = np.sqrt((p2[m] * (1 - p2[m])).sum()) / m.sum()
        assert abs(p2[m].mean() - hits.mean()) < 4 * se, name
