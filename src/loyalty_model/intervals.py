"""Intervals of an audience's loyal count: Poisson-binomial, campaign-level dispersion, sampling.

The count of loyal customers in an audience is a sum of Bernoulli outcomes. Three things make
it uncertain, and an interval accounts for each that applies:

1. **chance** given every follower's probability: the Poisson-binomial distribution (exact up
   to `EXACT_MAX` followers, refined normal approximation above);
2. **the campaign** itself: followers of one campaign share its fate (how well it lands), which
   no feature sees. The rate is multiplied by a Gamma variable with mean 1 and variance tau^2
   (the model's `audience_dispersion`), integrated over `RATE_NODES` equal-probability nodes;
3. **sampling**, on the full-audience scale: when `follows` holds n of an audience of N, the
   other N - n followers are unseen. Under a uniform sample each of them is loyal with the
   sample's mean rate r, and r itself is uncertain by the spread s^2 of the probabilities (the
   sample's own spread shrunk toward a prior spread with the weight of `VARIANCE_PRIOR_DF`
   followers, so that a handful of followers does not claim certainty; the prior is the
   model's spread within audiences of the influencer's tier): for a rate multiplier c the
   count has mean c (sum p + (N - n) r) and variance

       sum c p (1 - c p)  +  (N - n) c r (1 - c r)  +  (N - n)^2 c^2 s^2 / n

   which is the Poisson-binomial of the scored followers when n = N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import gamma, norm

INTERVAL = 0.90
EXACT_MAX = 5_000  # audiences up to this size get the exact Poisson-binomial interval
RATE_NODES = 16  # quadrature nodes of the audience rate multiplier
GRID_POINTS = 4_001  # counts at which a wide approximate CDF is evaluated
VARIANCE_PRIOR_DF = 10  # pseudo-followers of the prior spread in a sample's spread of p


def rate_scales(dispersion: float, nodes: int = RATE_NODES) -> np.ndarray:
    """Equal-probability nodes of the audience's rate multiplier, Gamma with mean 1 and
    variance `dispersion` (tau^2); [1.0] when there is none."""
    if dispersion <= 0:
        return np.ones(1)
    shape = 1.0 / dispersion
    return gamma.ppf((np.arange(nodes) + 0.5) / nodes, a=shape, scale=1.0 / shape)


def poisson_binomial_pmf(p: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
    """Exact pmf of the number of successes of independent Bernoulli(p_i) (DP, truncated to
    where the mass is); with `scales`, the equal-weight mixture over p_i * scale."""
    p = np.asarray(p, dtype=float)
    s = np.ones(1) if scales is None else np.asarray(scales, dtype=float)
    q_all = np.minimum(np.outer(s, p), 1.0)  # (nodes, followers)
    mu = q_all.sum(axis=1).max()
    var = (q_all * (1 - q_all)).sum(axis=1).max()
    k_max = int(min(len(p), math.ceil(mu + 12 * math.sqrt(var) + 12)))
    pmf = np.zeros((len(s), k_max + 1))
    pmf[:, 0] = 1.0
    for q in q_all.T:
        qc = q[:, None]
        pmf[:, 1:] = pmf[:, 1:] * (1 - qc) + pmf[:, :-1] * qc
        pmf[:, 0] *= 1 - q
    pmf = pmf.mean(axis=0)
    return pmf / pmf.sum()


def _quantiles_from_cdf(cdf: np.ndarray, level: float) -> tuple[int, int]:
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    lo = int(np.searchsorted(cdf, lo_q - 1e-12, side="left"))
    hi = int(np.searchsorted(cdf, hi_q - 1e-12, side="left"))
    return min(lo, len(cdf) - 1), min(hi, len(cdf) - 1)


def exact_interval(
    p: np.ndarray, level: float = INTERVAL, dispersion: float = 0.0
) -> tuple[int, int]:
    pmf = poisson_binomial_pmf(p, rate_scales(dispersion))
    return _quantiles_from_cdf(np.cumsum(pmf), level)


def _rna_cdf(k: np.ndarray, k1: float, k2: float, k3: float) -> np.ndarray:
    """Refined normal approximation (Volkova 1996) of P(K <= k) from the first three
    cumulants of K."""
    if k2 <= 0:
        return (k >= round(k1)).astype(float)
    sd = math.sqrt(k2)
    skew = k3 / sd**3
    x = (k + 0.5 - k1) / sd
    return np.clip(norm.cdf(x) + skew * (1 - x**2) * norm.pdf(x) / 6, 0, 1)


def mixture_interval(
    cumulants: list[tuple[float, float, float]], upper: float, level: float = INTERVAL
) -> tuple[int, int]:
    """Interval of a count in [0, upper] whose law is the equal-weight mixture of refined
    normal approximations with these (mean, variance, third cumulant)."""
    if all(v <= 0 for _, v, _ in cumulants):
        m = round(float(np.mean([k1 for k1, _, _ in cumulants])))
        return m, m
    lo_k = max(0.0, min(k1 - 10 * math.sqrt(max(v, 0)) for k1, v, _ in cumulants))
    hi_k = min(upper, max(k1 + 10 * math.sqrt(max(v, 0)) for k1, v, _ in cumulants))
    if hi_k - lo_k < GRID_POINTS:
        k = np.arange(math.floor(lo_k), math.ceil(hi_k) + 1, dtype=float)
    else:  # a wide range: quantiles to within (range / GRID_POINTS)
        k = np.unique(np.round(np.linspace(lo_k, hi_k, GRID_POINTS)))
    # a node whose rate multiplier pushes probabilities past 1 has no valid moments: keep its
    # mean within [0, upper] and its variance non-negative
    cumulants = [(min(max(k1, 0.0), upper), max(v, 0.0), k3) for k1, v, k3 in cumulants]
    cdf = np.maximum.accumulate(np.mean([_rna_cdf(k, *c) for c in cumulants], axis=0))
    lo, hi = _quantiles_from_cdf(cdf, level)
    return int(k[lo]), int(k[hi])


def rna_interval(
    n: int, m1: float, m2: float, m3: float, level: float = INTERVAL, dispersion: float = 0.0
) -> tuple[int, int]:
    """The Poisson-binomial interval from Σp, Σp(1-p), Σp(1-p)(1-2p), mixed over the rate
    multiplier when there is a dispersion."""
    s1, s2, s3 = _power_sums(m1, m2, m3)
    cumulants = [
        (c * s1, c * s1 - c**2 * s2, c * s1 - 3 * c**2 * s2 + 2 * c**3 * s3)
        for c in rate_scales(dispersion)
    ]
    return mixture_interval(cumulants, n, level)


def _power_sums(m1: float, m2: float, m3: float) -> tuple[float, float, float]:
    """Σp, Σp², Σp³ from Σp, Σp(1-p), Σp(1-p)(1-2p)."""
    s2 = m1 - m2
    return m1, s2, (m3 - m1 + 3 * s2) / 2


@dataclass
class AudienceAccumulator:
    """Streaming sums of p, p(1-p), p(1-p)(1-2p) over an audience's followers; the
    probabilities themselves are kept only up to EXACT_MAX followers, for the exact
    interval."""

    n: int = 0
    m1: float = 0.0
    m2: float = 0.0
    m3: float = 0.0
    ps: list[np.ndarray] = field(default_factory=list)
    kept: int = 0

    def add(self, p: np.ndarray) -> None:
        self.n += len(p)
        self.m1 += float(p.sum())
        q = p * (1 - p)
        self.m2 += float(q.sum())
        self.m3 += float((q * (1 - 2 * p)).sum())
        if self.kept + len(p) <= EXACT_MAX:
            self.ps.append(p)
            self.kept += len(p)
        else:
            self.ps, self.kept = [], EXACT_MAX + 1  # too large: approximate

    @classmethod
    def from_sums(cls, n: int, m1: float, m2: float, m3: float) -> AudienceAccumulator:
        """An audience known only by its sums (computed elsewhere, e.g. by Spark): too large
        for the exact interval, as `add` marks one that outgrew EXACT_MAX."""
        return cls(int(n), float(m1), float(m2), float(m3), [], EXACT_MAX + 1)

    @property
    def rate(self) -> float:
        return self.m1 / self.n if self.n else float("nan")

    def spread(self) -> tuple[float, int]:
        """(sum of squared deviations of p from their mean, degrees of freedom n - 1)."""
        if self.n < 2:
            return 0.0, 0
        return max(0.0, (self.m1 - self.m2) - self.m1**2 / self.n), self.n - 1

    def interval(self, dispersion: float = 0.0, level: float = INTERVAL) -> tuple[int, int]:
        """Interval of the loyal count among these followers; `dispersion` widens it for the
        uncertainty of the campaign's rate itself (the model's `audience_dispersion`)."""
        if self.kept <= EXACT_MAX:
            p = np.concatenate(self.ps) if self.ps else np.zeros(0)
            return exact_interval(p, level, dispersion)
        return rna_interval(self.n, self.m1, self.m2, self.m3, level, dispersion)

    def full_interval(
        self,
        full_size: int,
        dispersion: float = 0.0,
        prior_variance: float | None = None,
        level: float = INTERVAL,
    ) -> tuple[int, int]:
        """Interval of the loyal count in the whole audience of `full_size` followers, of
        which these are a uniform sample (the module docstring has the model).
        `prior_variance`: the spread of p to shrink this sample's spread toward (the model's
        spread within audiences of this tier); None: r (1 - r), the largest spread an audience
        with mean r can have."""
        if self.n == 0:
            raise ValueError("no followers scored: the audience's rate is unknown")
        unseen = full_size - self.n
        if unseen <= 0:  # no one unseen (or a follower count below the followers scored)
            lo, hi = self.interval(dispersion, level)
            scale = full_size / self.n
            return math.floor(lo * scale), math.ceil(hi * scale)
        s1, s2, s3 = _power_sums(self.m1, self.m2, self.m3)
        r = s1 / self.n
        ss, df = self.spread()
        prior = r * (1 - r) if prior_variance is None else prior_variance
        var_p = (ss + VARIANCE_PRIOR_DF * prior) / (df + VARIANCE_PRIOR_DF)
        cumulants = []
        for c in rate_scales(dispersion):
            mean = c * (s1 + unseen * r)
            var = (
                (c * s1 - c**2 * s2)
                + unseen * (c * r - (c * r) ** 2)
                + unseen**2 * c**2 * var_p / self.n
            )
            third = (c * s1 - 3 * c**2 * s2 + 2 * c**3 * s3) + unseen * (
                c * r - 3 * (c * r) ** 2 + 2 * (c * r) ** 3
            )
            cumulants.append((mean, var, third))
        return mixture_interval(cumulants, full_size, level)


def pooled_variance(audiences: list[AudienceAccumulator]) -> float | None:
    """The spread of p within audiences, pooled over audiences of two followers or more."""
    ss, df = 0.0, 0
    for a in audiences:
        s, d = a.spread()
        ss, df = ss + s, df + d
    return ss / df if df else None
