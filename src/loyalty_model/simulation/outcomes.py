"""Outcomes: campaign conversions, repeat purchases, background purchases and ground truth.

Purchases of a brand come from three sources, and the label counts them all:

1. **the campaign**: a follower exposed at the wave's start converts (first purchase) with
   probability `p_convert` and, having converted, buys again within the horizon with
   probability `p_repeat` (and a third time with a fixed chance);
2. **background buying**: a Poisson process per (follower, brand) at a constant rate, higher
   for favourite brands and brands of the follower's interests;
3. **earlier converts** of the same brand keep buying after their own window, as a Poisson
   process (loyal converts often, one-off buyers rarely), until the brand's next wave.

Because a brand's waves are spaced more than a horizon apart, sources 2 and 3 are Poisson
processes with known rates throughout a window, and the probability of the label has a
closed form (`loyal_probability`). That is the ground truth `p_true`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from loyalty_model.simulation.entities import World, brand_match, draw_brands, sigmoid
from loyalty_model.simulation.params import DAY, LABEL_HORIZON_DAYS, NICHES, OutcomeParams
from loyalty_model.simulation.tables import ground_truth_tables, purchase_table


@dataclass
class BrandState:
    """After a wave's window closes: the brand's earlier converts and their purchase rates per
    day (sorted by follower), valid from `since` until the brand's next wave."""

    since: int
    followers: np.ndarray
    rates: np.ndarray

    def rate_of(self, fol: np.ndarray) -> np.ndarray:
        out = np.zeros(len(fol))
        if len(self.followers):
            pos = np.minimum(np.searchsorted(self.followers, fol), len(self.followers) - 1)
            hit = self.followers[pos] == fol
            out[hit] = self.rates[pos[hit]]
        return out


@dataclass
class Outcomes:
    purchases: pa.Table  # all purchase events and the clicks that led to campaign purchases
    ground_truth: pa.Table  # one row per (campaign, follower following at start_ts)
    campaigns: pa.Table  # per campaign: expected and realised loyal count
    brand_states: dict[int, list[BrandState]]  # per brand, its earlier converts after each wave


def conversion_logit(
    w: World, follow_rows: np.ndarray, brand: int, campaign_effect: np.ndarray | float
) -> np.ndarray:
    """Log-odds that the follower of each follow row makes a first purchase of `brand` when
    the influencer posts for it: closeness to the influencer, interest in the brand's niche,
    purchase propensity, the influencer's persuasion, the brand's appeal and price, and the
    campaign's own (hidden) effect."""
    op = w.params.outcomes
    fol = w.fw_fol[follow_rows]
    matched = brand_match(w.fol_interests[fol], w.br_niche[brand])
    return (
        op.conversion_intercept
        + op.conversion_affinity * w.fw_affinity[follow_rows]
        + op.conversion_brand_match * matched
        + op.conversion_purchase_propensity * w.fol_purchase_z[fol]
        + w.inf_persuasion[w.fw_inf[follow_rows]]
        + w.br_appeal[brand]
        - op.conversion_price_elasticity * np.log(w.br_price[brand] / w.params.brands.price_median)
        + campaign_effect
    )


def repeat_probability(w: World, followers: np.ndarray, brand: int) -> np.ndarray:
    """Probability that a converted follower buys the brand again within the horizon: the
    hidden loyalty propensity, interest in the brand's niche and the brand's pull. Bots: 0."""
    op = w.params.outcomes
    matched = brand_match(w.fol_interests[followers], w.br_niche[brand])
    p = sigmoid(
        op.repeat_intercept
        + op.repeat_loyalty * w.fol_loyalty_z[followers]
        + op.repeat_brand_match * matched
        + w.br_repeat[brand]
    )
    return np.where(w.fol_bot[followers], 0.0, p)


def loyal_probability(
    p_convert: np.ndarray, p_repeat: np.ndarray, other_purchases: np.ndarray
) -> np.ndarray:
    """P(at least 2 purchases of the brand in the window), where the campaign gives one
    purchase with probability p_convert and a second with p_repeat given the first, and the
    other sources together are Poisson with mean `other_purchases` in the window
    (P0 = exp(-mu) of none, P1 = mu exp(-mu) of exactly one):

        converts and repeats                  p_convert * p_repeat
      + converts once, other buying adds >= 1  p_convert * (1 - p_repeat) * (1 - P0)
      + does not convert, other buying >= 2    (1 - p_convert) * (1 - P0 - P1)
    """
    mu = other_purchases
    p0, p1 = np.exp(-mu), mu * np.exp(-mu)
    return (
        p_convert * p_repeat
        + p_convert * (1 - p_repeat) * (1 - p0)
        + (1 - p_convert) * (1 - p0 - p1)
    )


def background_rate(w: World, fol: np.ndarray, brand: np.ndarray) -> np.ndarray:
    """Background purchase rate (per day) of each (follower, brand) pair: the follower's rate
    times the brand's share of it (favourites first, then brands weighted by interest)."""
    weight = w.params.followers.interest_brand_weight
    matched = brand_match(w.fol_interests[fol], w.br_niche[brand])
    n_match = np.zeros(len(fol))
    for k in range(len(NICHES)):
        n_match += ((w.fol_interests[fol] >> k) & 1) * np.sum(w.br_niche == k)
    total_w = weight * n_match + (len(w.br_niche) - n_match)
    is_fav = (w.fol_favourites[fol, 0] == brand).astype(float) + (w.fol_favourites[fol, 1] == brand)
    share = (
        w.fol_favourite_share[fol] * is_fav / 2
        + (1 - w.fol_favourite_share[fol]) * np.where(matched, weight, 1.0) / total_w
    )
    return w.fol_background_rate[fol] * share


def _background(w: World, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background purchases: Poisson per follower, brand by favourites and interests."""
    n = rng.poisson(w.fol_background_rate * (w.end - w.start) / DAY)
    fol = np.repeat(np.arange(len(n)), n)
    ts = w.start + (rng.random(len(fol)) * (w.end - w.start)).astype(np.int64)
    fav = rng.random(len(fol)) < w.fol_favourite_share[fol]
    brand = np.where(
        fav,
        w.fol_favourites[fol, rng.integers(0, 2, len(fol))],
        draw_brands(
            rng,
            w.fol_interests[fol],
            w.br_niche,
            (len(fol), 1),
            w.params.followers.interest_brand_weight,
        )[:, 0],
    )
    return fol, brand, ts


def _outcome_draws(w: World):
    """The outcome generator after its first draws: (rng, background purchases, each
    campaign's effect — how well it lands, on the logit). One place, so an analysis can
    replay the hidden campaign effects exactly."""
    rng = np.random.default_rng(np.random.SeedSequence([w.seed, 20242]))
    background = _background(w, rng)
    return rng, background, rng.normal(0, w.params.outcomes.campaign_effect_sd, len(w.ca_inf))


def campaign_effects(w: World) -> np.ndarray:
    """Each campaign's hidden effect (by campaign index), as `draw_outcomes` draws it."""
    return _outcome_draws(w)[2]


class _PurchaseLog:
    """Purchase and click events as they are drawn, by source, plus a sorted index of
    (follower, brand, time) keys to count purchases in a window."""

    def __init__(self, n_brands: int, origin: int):
        self.n_brands, self.origin = n_brands, origin  # offsets fit in 32 bits for ~130 years
        self.fol, self.brand, self.ts, self.inf, self.kind = [], [], [], [], []

    def key(self, fol, brand, ts=None) -> np.ndarray:
        k = fol.astype(np.int64) * self.n_brands + brand
        return k if ts is None else (k << 32) | (ts - self.origin)

    def add(self, fol, brand, ts, inf=None, click: bool = False) -> None:
        self.fol.append(fol)
        self.brand.append(np.broadcast_to(brand, len(fol)))
        self.ts.append(ts)
        self.inf.append(np.full(len(fol), -1) if inf is None else inf)
        self.kind.append(np.full(len(fol), 1 if click else 0, np.int8))  # 0 purchase, 1 click

    def count_in(self, sorted_keys, fol, brand: int, lo: int, hi: int) -> np.ndarray:
        """How many purchases in `sorted_keys` each follower made of `brand` in [lo, hi)."""
        k = self.key(fol, brand) << 32
        return np.searchsorted(sorted_keys, k | (hi - self.origin), "left") - np.searchsorted(
            sorted_keys, k | (lo - self.origin), "left"
        )


def draw_outcomes(w: World) -> Outcomes:
    """Every purchase; for every (campaign, follower following at its start) the true
    probability of the label and the realised label; and each brand's earlier converts after
    each of its waves (what the counterfactual ground truth needs at a later date)."""
    op = w.params.outcomes
    rng, (bg_fol, bg_brand, bg_ts), ca_effect = _outcome_draws(w)
    horizon = LABEL_HORIZON_DAYS * DAY
    log = _PurchaseLog(len(w.br_niche), w.start - 400 * DAY)
    background_keys = np.sort(log.key(bg_fol, bg_brand, bg_ts))
    log.add(bg_fol, bg_brand, bg_ts)
    gt_parts: list[dict] = []
    states: dict[int, list[BrandState]] = {}

    for brand, brand_waves in _waves_by_brand(w).items():
        state = BrandState(w.start, np.zeros(0, np.int64), np.zeros(0))
        states[brand] = []
        last_converts_keys = None
        for start, camps in brand_waves:
            # audience rows: followers of each campaign's influencer at its start
            rows_c, rows_fw = [], []
            for c in camps:
                idx = w.follows_of(w.ca_inf[c])
                active = idx[w.following_at(idx, start)]
                rows_c.append(np.full(len(active), c))
                rows_fw.append(active)
            row_campaign = np.concatenate(rows_c)
            row_follow = np.concatenate(rows_fw)
            fol = w.fw_fol[row_follow]
            inf = w.fw_inf[row_follow]
            bot = w.fol_bot[fol]
            p_convert_row = np.where(
                bot, 0.0, sigmoid(conversion_logit(w, row_follow, brand, ca_effect[row_campaign]))
            )
            # one outcome per follower and wave, whichever of the wave's influencers they follow
            people, inv = np.unique(fol, return_inverse=True)
            log_miss = np.zeros(len(people))
            np.add.at(log_miss, inv, np.log1p(-p_convert_row))
            p_convert = 1 - np.exp(log_miss)
            p_repeat = repeat_probability(w, people, brand)
            # purchases from the other sources expected in the window (Poisson means)
            other_rate = background_rate(w, people, np.full(len(people), brand))
            other_rate = other_rate + state.rate_of(people)
            p_true = loyal_probability(p_convert, p_repeat, other_rate * LABEL_HORIZON_DAYS)

            converts = rng.random(len(people)) < p_convert
            repeats = converts & (rng.random(len(people)) < p_repeat)
            thirds = repeats & (rng.random(len(people)) < op.third_purchase)
            delay = rng.exponential(op.first_purchase_mean_days * DAY, len(people))
            t1 = start + np.minimum(delay, op.first_purchase_max_share * horizon).astype(np.int64)
            t2 = t1 + (rng.random(len(people)) * (start + horizon - 1 - t1)).astype(np.int64)
            t3 = t2 + (rng.random(len(people)) * (start + horizon - 1 - t2)).astype(np.int64)
            # the first purchase is attributed (promo code) to one of the wave's influencers
            row_pick = _pick_row_per_follower(rng, inv, p_convert_row)
            attributed = converts & (rng.random(len(people)) < op.attributed_share)
            promo_inf = np.where(attributed, inf[row_pick], -1)
            clicked = converts & (rng.random(len(people)) < op.click_share)
            log.add(people[converts], brand, t1[converts], promo_inf[converts])
            log.add(people[repeats], brand, t2[repeats])
            log.add(people[thirds], brand, t3[thirds])
            click_ts = t1[clicked] - rng.integers(*op.click_lead_s, clicked.sum())
            log.add(
                people[clicked], brand, np.maximum(click_ts, start), inf[row_pick][clicked], True
            )

            # realised label: every purchase of the brand in the window, whatever its source
            n_campaign = converts.astype(int) + repeats + thirds
            n_background = log.count_in(background_keys, people, brand, start, start + horizon)
            n_earlier = np.zeros(len(people), int)
            if last_converts_keys is not None:
                n_earlier = log.count_in(last_converts_keys, people, brand, start, start + horizon)
            loyal = (n_campaign + n_background + n_earlier) >= 2

            gt_parts.append(
                dict(
                    campaign=row_campaign,
                    follower=fol,
                    influencer=inf,
                    brand=np.full(len(fol), brand),
                    start=np.full(len(fol), start),
                    p_true=p_true[inv],
                    loyal=loyal[inv],
                    bot=bot,
                    tier=w.inf_tier[inf],
                )
            )
            # after the window: loyal converts keep buying, one-off buyers rarely come back
            state = _next_state(state, people, converts, repeats, start + horizon, op)
            states[brand].append(state)
            # their purchases until the brand's next window closes (or the world ends)
            nxt = _next_start(brand_waves, start)
            seg_lo = start + horizon
            seg_hi = min(nxt + horizon if nxt is not None else w.end, w.end)
            span = max(0, seg_hi - seg_lo)
            n_seg = rng.poisson(state.rates * span / DAY)
            seg_fol = np.repeat(state.followers, n_seg)
            seg_ts = seg_lo + (rng.random(len(seg_fol)) * span).astype(np.int64)
            log.add(seg_fol, brand, seg_ts)
            last_converts_keys = np.sort(log.key(seg_fol, np.full(len(seg_fol), brand), seg_ts))

    purchases = purchase_table(w, rng, log)
    gt = {k: np.concatenate([g[k] for g in gt_parts]) for k in gt_parts[0]}
    return Outcomes(purchases, *ground_truth_tables(w, gt), states)


def _waves_by_brand(w: World) -> dict[int, list[tuple[int, np.ndarray]]]:
    """brand -> [(start, campaign indices)] in time order."""
    info = []
    for wave in np.unique(w.ca_wave):
        camps = np.flatnonzero(w.ca_wave == wave)
        info.append((int(w.ca_brand[camps[0]]), int(w.ca_start[camps[0]]), camps))
    info.sort(key=lambda x: (x[0], x[1]))
    out: dict[int, list] = {}
    for brand, start, camps in info:
        out.setdefault(brand, []).append((start, camps))
    return out


def _next_start(brand_waves, start: int) -> int | None:
    later = [s for s, _ in brand_waves if s > start]
    return later[0] if later else None


def _next_state(state: BrandState, people, converts, repeats, since: int, op: OutcomeParams):
    """Earlier converts after a wave: the new converts join (the higher rate wins)."""
    new_rate = np.where(
        repeats, op.loyal_rebuy_per_day, np.where(converts, op.one_off_rebuy_per_day, 0.0)
    )
    buyers = new_rate > 0
    followers = np.union1d(state.followers, people[buyers])
    rates = np.zeros(len(followers))
    if len(state.followers):
        rates[np.searchsorted(followers, state.followers)] = state.rates
    pos = np.searchsorted(followers, people[buyers])
    rates[pos] = np.maximum(rates[pos], new_rate[buyers])
    return BrandState(since, followers, rates)


def _pick_row_per_follower(rng, inv: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """For each follower (inverse index inv), one of its rows drawn with prob. ∝ weight."""
    key = rng.random(len(inv)) ** (1 / np.maximum(weight, 1e-12))  # weighted reservoir keys
    order = np.lexsort((-key, inv))
    first = np.r_[True, inv[order][1:] != inv[order][:-1]][: len(inv)]  # none for no rows
    return order[first]
