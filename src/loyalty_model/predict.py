"""Batch scoring and audience aggregation.

Rows stream out of the engine in batches ordered by (influencer, follower); each batch is
scored and appended to the follower file, and per-influencer accumulators build the audience
rows. Python memory is bounded by the batch size (and the largest audience kept for an exact
interval, at most EXACT_MAX followers); the engine spills to disk beyond its memory limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.stats import gamma, norm

from loyalty_model.compat import duckdb_batches
from loyalty_model.config import FeatureConfig, LabelConfig
from loyalty_model.contract import tier_of
from loyalty_model.features import FEATURE_VERSION, build_features
from loyalty_model.model import LoyaltyModel
from loyalty_model.spine import scoring_spine

OUTPUT_SCHEMA_VERSION = "1.1"  # 1.1: manifest key audience_dispersion
INTERVAL = 0.90
EXACT_MAX = 5_000  # audiences up to this size get the exact Poisson-binomial interval

FOLLOWER_SCHEMA = pa.schema(
    [
        ("follower_id", pa.string()),
        ("influencer_id", pa.string()),
        ("brand_id", pa.string()),
        ("as_of", pa.timestamp("us", tz="UTC")),
        ("p_loyal", pa.float64()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
    ]
)


class ScoringError(ValueError):
    """The request cannot be scored; the message is one line."""


@dataclass(frozen=True)
class ModelRef:
    uri: str
    name: str | None
    version: str | None
    run_id: str | None


def check_spec(model: LoyaltyModel) -> tuple[FeatureConfig, LabelConfig]:
    """The feature and label config a model was trained with, or a clear refusal."""
    spec = model.spec
    if spec.version != FEATURE_VERSION:
        raise ScoringError(
            f"model feature spec version {spec.version!r} cannot be built by this package "
            f"(it builds version {FEATURE_VERSION!r}); retrain or install a matching version"
        )
    try:
        fcfg = FeatureConfig(windows=spec.windows, prior_strength=spec.prior_strength)
        lcfg = LabelConfig(
            horizon_days=spec.horizon_days,
            min_purchases=spec.min_purchases,
            require_attribution=spec.require_attribution,
        )
    except ValueError as exc:
        raise ScoringError(f"model feature spec is not valid: {exc}".splitlines()[0]) from exc
    return fcfg, lcfg


def feature_batches(
    con,
    tables: dict,
    brand_id: str,
    as_of: datetime,
    influencer_ids: list[str] | None,
    model: LoyaltyModel,
    batch_rows: int,
) -> Iterator[pd.DataFrame]:
    """Feature frames of the scoring spine, ordered by influencer then follower."""
    fcfg, lcfg = check_spec(model)
    spine = scoring_spine(tables, brand_id, as_of, influencer_ids)
    expr = build_features(spine, tables, fcfg, lcfg).order_by(["influencer_id", "follower_id"])
    for rb in duckdb_batches(con, expr, batch_rows):
        if rb.num_rows:
            yield rb.to_pandas()


# -- audience intervals ---------------------------------------------------------------------


RATE_NODES = 16  # quadrature nodes of the audience rate multiplier


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
    return lo, min(hi, len(cdf) - 1)


def exact_interval(
    p: np.ndarray, level: float = INTERVAL, dispersion: float = 0.0
) -> tuple[int, int]:
    pmf = poisson_binomial_pmf(p, rate_scales(dispersion))
    return _quantiles_from_cdf(np.cumsum(pmf), level)


def _rna_cdf(k: np.ndarray, m1: float, m2: float, m3: float) -> np.ndarray:
    if m2 <= 0:
        return (k >= round(m1)).astype(float)
    sd = math.sqrt(m2)
    gamma_ = m3 / sd**3
    x = (k + 0.5 - m1) / sd
    return np.clip(norm.cdf(x) + gamma_ * (1 - x**2) * norm.pdf(x) / 6, 0, 1)


def rna_interval(
    n: int, m1: float, m2: float, m3: float, level: float = INTERVAL, dispersion: float = 0.0
):
    """Refined normal approximation (Volkova 1996) from Σp, Σp(1-p), Σp(1-p)(1-2p); with a
    dispersion, the mixture over the rate multiplier (p scaled by each node)."""
    s1 = m1
    s2 = m1 - m2  # Σp²
    s3 = (m3 - s1 + 3 * s2) / 2  # Σp³
    scales = rate_scales(dispersion)
    mus = [(c * s1, c * s1 - c**2 * s2, c * s1 - 3 * c**2 * s2 + 2 * c**3 * s3) for c in scales]
    if all(v <= 0 for _, v, _ in mus):
        return round(m1), round(m1)
    lo_k = min(mu - 10 * math.sqrt(max(v, 0)) for mu, v, _ in mus)
    hi_k = max(mu + 10 * math.sqrt(max(v, 0)) for mu, v, _ in mus)
    k = np.arange(max(0, math.floor(lo_k)), min(n, math.ceil(hi_k)) + 1)
    cdf = np.mean([_rna_cdf(k, *mu) for mu in mus], axis=0)
    cdf = np.maximum.accumulate(cdf)
    lo, hi = _quantiles_from_cdf(cdf, level)
    return int(k[min(lo, len(k) - 1)]), int(k[hi])


@dataclass
class AudienceAccumulator:
    """Streaming per-influencer sums of p, p(1-p), p(1-p)(1-2p); the probabilities
    themselves are kept only up to EXACT_MAX followers, for the exact interval."""

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

    def interval(self, dispersion: float = 0.0) -> tuple[int, int]:
        """90 % interval of the loyal count; `dispersion` widens it for the uncertainty of
        the audience's rate itself (the model's `audience_dispersion`)."""
        if self.kept <= EXACT_MAX:
            p = np.concatenate(self.ps) if self.ps else np.zeros(0)
            return exact_interval(p, dispersion=dispersion)
        return rna_interval(self.n, self.m1, self.m2, self.m3, dispersion=dispersion)


# -- the run --------------------------------------------------------------------------------


def score(
    batches: Iterator[pd.DataFrame],
    model: LoyaltyModel,
    ref: ModelRef,
    brand_id: str,
    as_of: datetime,
    write: Callable[[pa.Table], None],
    on_batch: Callable[[int], None] = lambda n: None,
) -> tuple[int, dict[str, AudienceAccumulator], float]:
    """Score every batch, hand follower rows to `write`, accumulate audiences."""
    import time

    audiences: dict[str, AudienceAccumulator] = {}
    written = 0
    t_pred = 0.0
    as_of_ts = pd.Timestamp(as_of)
    for frame in batches:
        t0 = time.perf_counter()
        p = model.predict_proba(frame)
        t_pred += time.perf_counter() - t0
        inf = frame["influencer_id"].to_numpy(dtype=object)
        # rows arrive ordered by influencer: split at the boundaries
        bounds = np.flatnonzero(inf[1:] != inf[:-1]) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(inf)], strict=True):
            audiences.setdefault(inf[lo], AudienceAccumulator()).add(p[lo:hi])
        n = len(frame)
        write(
            pa.table(
                {
                    "follower_id": pa.array(frame["follower_id"].astype(str), pa.string()),
                    "influencer_id": pa.array(inf.astype(str), pa.string()),
                    "brand_id": pa.array([brand_id] * n, pa.string()),
                    "as_of": pa.array([as_of_ts] * n, pa.timestamp("us", tz="UTC")),
                    "p_loyal": pa.array(p, pa.float64()),
                    "model_name": pa.array([ref.name] * n, pa.string()),
                    "model_version": pa.array([ref.version] * n, pa.string()),
                },
                schema=FOLLOWER_SCHEMA,
            )
        )
        written += n
        on_batch(n)
    return written, audiences, t_pred


def audience_table(
    audiences: dict[str, AudienceAccumulator],
    influencers: pd.DataFrame,
    brand_id: str,
    as_of: datetime,
    requested: list[str],
    dispersion: float = 0.0,
) -> pd.DataFrame:
    """One row per requested influencer (an empty audience scores zero), ranked; intervals
    carry the model's audience `dispersion`."""
    info = influencers.set_index("influencer_id")
    rows = []
    for inf_id in requested:
        a = audiences.get(inf_id, AudienceAccumulator())
        lo, hi = a.interval(dispersion)
        count = info.at[inf_id, "follower_count"]
        price = info.at[inf_id, "price_per_post"]
        rate = a.m1 / a.n if a.n else float("nan")
        rows.append(
            {
                "influencer_id": inf_id,
                "brand_id": brand_id,
                "as_of": pd.Timestamp(as_of),
                "followers_scored": a.n,
                "follower_count": int(count),
                "tier": tier_of(count),
                "category": info.at[inf_id, "category"],
                "expected_loyal": a.m1,
                "expected_loyal_low": float(lo),
                "expected_loyal_high": float(hi),
                "loyal_rate": rate,
                "loyal_per_1k_followers": 1000 * rate,
                "price_per_post": None if pd.isna(price) else float(price),
                "cost_per_expected_loyal": (
                    float(price) / a.m1 if not pd.isna(price) and a.m1 > 0 else None
                ),
            }
        )
    df = pd.DataFrame(rows)
    return rank(df)


def rank(df: pd.DataFrame) -> pd.DataFrame:
    """Rank 1 = best. With prices: expected loyal customers per unit of cost (influencers
    without a price follow, by rate); without any price: loyal rate per follower."""
    df = df.copy()
    per_cost = df["expected_loyal"] / df["price_per_post"].astype("float64")
    has_price = per_cost.notna()
    key_price = np.where(has_price, -per_cost.fillna(0), np.inf)
    key_rate = -df["loyal_rate"].fillna(-1)
    order = np.lexsort((df["influencer_id"].to_numpy(), key_rate, key_price))
    df = df.iloc[order].reset_index(drop=True)
    df.insert(len(df.columns), "rank", np.arange(1, len(df) + 1))
    df["rank_basis"] = np.where(has_price.iloc[order], "expected_loyal_per_cost", "loyal_rate")
    return df
