"""Counterfactual ground truth for scoring: what would happen if an influencer ran a campaign.

A scoring scenario is a (brand, as-of date). For every influencer and every follower following
it at the as-of date, the simulator knows the probability that the follower becomes a
brand-loyal customer (>= 2 purchases of the brand in [as_of, as_of + 90 days)) had that
influencer alone posted for the brand at the as-of date: the same outcome model that drew the
campaigns (`outcomes.loyal_probability`), with

* the campaign's own effect, unknown before a campaign runs, integrated out (Gauss-Hermite);
* the brand's background and earlier-convert purchase streams as they stand at the as-of
  date. Scenarios are chosen where none of the brand's waves is under way (as-of outside every
  [start, start + horizon) of the brand), so these streams are known Poisson processes and the
  probability is exact.

Per audience, the true loyal rate is the mean over the followers in the data, and the full
audience's true expected loyal count is that rate times `follower_count` (the audience a price
buys): a uniform sample of people carries the rate over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from loyalty_model.contract import TIERS
from loyalty_model.simulation.entities import World, sigmoid
from loyalty_model.simulation.outcomes import (
    BrandState,
    background_rate,
    conversion_logit,
    loyal_probability,
    repeat_probability,
)
from loyalty_model.simulation.params import DAY, LABEL_HORIZON_DAYS
from loyalty_model.simulation.tables import take, timestamps

QUADRATURE_NODES = 20  # Gauss-Hermite nodes for the campaign effect


@dataclass(frozen=True)
class Scenario:
    scenario_id: str
    brand: int  # brand index
    as_of: int  # unix seconds, midnight UTC


def choose_scenarios(w: World, n: int = 3) -> list[Scenario]:
    """Up to `n` (brand, as-of) scenarios, latest first: for each brand the latest midnight
    up to the end of the world when none of its waves is under way; the brands whose date is
    latest win (ties by brand). Where a brand is quiet at the end of the world, that is the
    date `loyalty-model predict` scores by default (the day after the last event)."""
    horizon = LABEL_HORIZON_DAYS * DAY
    latest = []
    for b in range(len(w.br_niche)):
        starts = np.unique(w.ca_start[w.ca_brand == b])
        t = w.end - (w.end - w.start) % DAY  # midnight at or before the end
        while t > w.start:
            busy = starts[(starts < t) & (t < starts + horizon)]
            if not len(busy):
                break
            t = busy.min() - (busy.min() - w.start) % DAY  # the midnight before that wave
        if t > w.start:
            latest.append((-t, b))
    latest.sort()
    return [Scenario(f"s{k + 1}", b, -neg_t) for k, (neg_t, b) in enumerate(latest[:n])]


def state_at(states: list[BrandState], t: int) -> BrandState:
    """The brand's earlier converts in force at `t` (after the last window closed by then)."""
    valid = [s for s in states if s.since <= t]
    return valid[-1] if valid else BrandState(t, np.zeros(0, np.int64), np.zeros(0))


def counterfactual_parts(
    w: World, state: BrandState, brand: int, follow_rows: np.ndarray, effect: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each follow row, had its influencer alone posted for `brand` when `state` holds:
    the probability that the follower converts (the campaign's effect integrated out over its
    distribution, or fixed at `effect`), the probability of buying again having converted,
    and the purchases expected from the other sources in the window (a Poisson mean)."""
    fol = w.fw_fol[follow_rows]
    if effect is None:
        nodes, weights = np.polynomial.hermite.hermgauss(QUADRATURE_NODES)
        effects = np.sqrt(2) * w.params.outcomes.campaign_effect_sd * nodes
        weights = weights / np.sqrt(np.pi)
    else:
        effects, weights = np.array([effect]), np.ones(1)
    base = conversion_logit(w, follow_rows, brand, 0.0)
    p_convert = sigmoid(base[:, None] + effects[None, :]) @ weights
    p_convert = np.where(w.fol_bot[fol], 0.0, p_convert)
    p_repeat = repeat_probability(w, fol, brand)
    other = background_rate(w, fol, np.full(len(fol), brand)) + state.rate_of(fol)
    return p_convert, p_repeat, other * LABEL_HORIZON_DAYS


def counterfactual_probabilities(
    w: World, state: BrandState, brand: int, follow_rows: np.ndarray, effect: float | None = None
) -> np.ndarray:
    """True probability of the label for each follow row's follower, had its influencer alone
    posted for `brand` when `state` holds; the campaign's effect integrated out over its
    distribution, or fixed at `effect`."""
    return loyal_probability(*counterfactual_parts(w, state, brand, follow_rows, effect))


def set_probabilities(
    follower_id: np.ndarray, p_convert: np.ndarray, p_repeat: np.ndarray, other: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(followers, true probability of the label) had a *set* of influencers each posted for
    the brand at once, from the rows of `ground_truth_scoring` of the set's audiences (one
    row per follower and influencer): as in a wave of the simulator, a follower converts
    unless every campaign they see fails, and has one outcome whichever they follow. The
    campaigns' own effects are independent, so integrating each out before combining is
    exact: P(convert) = 1 - prod (1 - p_convert)."""
    followers, inv = np.unique(np.asarray(follower_id), return_inverse=True)
    log_miss = np.zeros(len(followers))
    np.add.at(log_miss, inv, np.log1p(-np.minimum(np.asarray(p_convert, float), 1.0)))
    first = np.zeros(len(followers), np.int64)
    first[inv[::-1]] = np.arange(len(inv))[::-1]  # a row of each follower: the follower's parts
    p = loyal_probability(
        1 - np.exp(log_miss), np.asarray(p_repeat)[first], np.asarray(other)[first]
    )
    return followers, p


def scenario_truth(
    w: World, scenarios: list[Scenario], states: dict[int, list[BrandState]]
) -> tuple[pa.Table, pa.Table]:
    """(per follower, per audience) counterfactual truth of every scenario."""
    ids = w.ids
    rows, auds = [], []
    for sc in scenarios:
        state = state_at(states.get(sc.brand, []), sc.as_of)
        active = np.flatnonzero(w.following_at(np.arange(len(w.fw_inf)), sc.as_of))
        p_convert, p_repeat, other = counterfactual_parts(w, state, sc.brand, active)
        p = loyal_probability(p_convert, p_repeat, other)
        inf = w.fw_inf[active]
        rows.append(
            pa.table(
                {
                    "scenario_id": pa.array([sc.scenario_id] * len(active)),
                    "brand_id": take(ids["b"], np.full(len(active), sc.brand)),
                    "as_of": timestamps(np.full(len(active), sc.as_of)),
                    "follower_id": take(ids["f"], w.fw_fol[active]),
                    "influencer_id": take(ids["i"], inf),
                    "is_bot": pa.array(w.fol_bot[w.fw_fol[active]]),
                    "p_true": pa.array(p),
                    # the parts of p_true, for the truth of several campaigns at once
                    # (set_probabilities)
                    "p_convert": pa.array(p_convert),
                    "p_repeat": pa.array(p_repeat),
                    "other_purchases": pa.array(other),
                }
            )
        )
        n_i = len(w.inf_tier)
        n = np.bincount(inf, minlength=n_i)
        total = np.bincount(inf, weights=p, minlength=n_i)
        bots = np.bincount(inf, weights=w.fol_bot[w.fw_fol[active]], minlength=n_i)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(n > 0, total / np.maximum(n, 1), np.nan)
            full = rate * w.inf_followers
            price = np.where(w.inf_price_known, w.inf_price, np.nan)
            cost = np.where(full > 0, price / full, np.nan)
        auds.append(
            pa.table(
                {
                    "scenario_id": pa.array([sc.scenario_id] * n_i),
                    "brand_id": take(ids["b"], np.full(n_i, sc.brand)),
                    "as_of": timestamps(np.full(n_i, sc.as_of)),
                    "influencer_id": ids["i"],
                    "tier": pa.array(np.array(TIERS)[w.inf_tier]),
                    "follower_count": pa.array(w.inf_followers, pa.int64()),
                    "price_per_post": pa.array(price, pa.float64(), from_pandas=True),
                    "followers_in_data": pa.array(n, pa.int64()),
                    "bots_in_data": pa.array(bots.astype(np.int64)),
                    "true_expected_loyal_in_data": pa.array(total),
                    "true_loyal_rate": pa.array(rate, pa.float64(), from_pandas=True),
                    "true_expected_loyal": pa.array(full, pa.float64(), from_pandas=True),
                    "true_cost_per_loyal": pa.array(cost, pa.float64(), from_pandas=True),
                }
            )
        )
    return pa.concat_tables(rows), pa.concat_tables(auds)
