"""The entities of a world: influencers, brands, followers, follows, posts and campaigns.

Everything but the event log, drawn once from (preset, seed) into numpy arrays (`World`).
Events are drawn later, chunk by chunk (`engagement`), and outcomes from these (`outcomes`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from loyalty_model.contract import TIERS
from loyalty_model.simulation.params import (
    DAY,
    LABEL_HORIZON_DAYS,
    NICHES,
    PARAMS,
    WORLD_START,
    Params,
    Preset,
)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def string_ids(prefix: str, n: int) -> pa.Array:
    """prefix0000, prefix0001, ... (at least four digits)."""
    width = max(4, len(str(n)))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(n)], pa.string())


@dataclass
class World:
    """Entities of the simulated world (everything but the event log), as numpy arrays
    indexed by entity number (follower f, influencer i, brand b, post p, campaign c)."""

    preset: Preset
    params: Params
    seed: int
    start: int  # first second of the world (unix time)
    end: int  # first second after it
    # influencers
    inf_tier: np.ndarray  # index into contract.TIERS
    inf_followers: np.ndarray  # nominal follower count (the whole audience a price buys)
    inf_niche: np.ndarray  # index into NICHES
    inf_price: np.ndarray  # price per post
    inf_price_known: np.ndarray
    inf_audience: np.ndarray  # its followers in the sample: Binomial(followers, sample fraction)
    inf_bot_share: np.ndarray
    inf_persuasion: np.ndarray  # logit of conversion
    # followers
    fol_bot: np.ndarray
    fol_interests: np.ndarray  # bitmask over NICHES
    fol_activity: np.ndarray
    fol_purchase_z: np.ndarray  # purchase propensity, N(0, 1)
    fol_loyalty_z: np.ndarray  # hidden loyalty propensity, N(0, 1), correlated with the above
    fol_background_rate: np.ndarray  # background purchases per day
    fol_favourites: np.ndarray  # (n, 2) favourite brands
    fol_favourite_share: np.ndarray  # share of background purchases on the favourites
    # follows (sorted by influencer, follower)
    fw_inf: np.ndarray
    fw_fol: np.ndarray
    fw_from: np.ndarray
    fw_to: np.ndarray  # -1 when still following
    fw_affinity: np.ndarray  # how close the follower feels to the influencer, 0..1
    # brands
    br_niche: np.ndarray
    br_price: np.ndarray  # typical purchase amount
    br_price_known: np.ndarray
    br_appeal: np.ndarray  # logit of conversion
    br_repeat: np.ndarray  # logit of buying again
    # posts (sorted by influencer, time)
    po_inf: np.ndarray
    po_ts: np.ndarray
    po_brand: np.ndarray  # -1 for organic posts
    po_offsets: np.ndarray  # posts of influencer i are po_*[off[i]:off[i+1]]
    # campaigns (sorted by start, influencer)
    ca_brand: np.ndarray
    ca_inf: np.ndarray
    ca_start: np.ndarray
    ca_cost: np.ndarray
    ca_cost_known: np.ndarray
    ca_post: np.ndarray  # the campaign's post
    ca_wave: np.ndarray  # campaigns of a wave share brand and start

    @functools.cached_property
    def ids(self) -> dict[str, pa.Array]:
        """String ids of followers, influencers, brands, posts and campaigns, by index."""
        return {
            "f": string_ids("f", len(self.fol_bot)),
            "i": string_ids("i", len(self.inf_tier)),
            "b": string_ids("b", len(self.br_niche)),
            "p": string_ids("p", len(self.po_ts)),
            "c": string_ids("c", len(self.ca_inf)),
        }

    def follows_of(self, influencer: int) -> np.ndarray:
        """Indices of the follow rows of one influencer (follows are sorted by influencer)."""
        lo, hi = np.searchsorted(self.fw_inf, [influencer, influencer + 1])
        return np.arange(lo, hi)

    def following_at(self, rows: np.ndarray, ts: int) -> np.ndarray:
        """Which follow rows are active at `ts`: started at or before it, not ended by then."""
        return (self.fw_from[rows] <= ts) & ((self.fw_to[rows] < 0) | (self.fw_to[rows] > ts))


def build_world(preset: Preset, seed: int, params: Params = PARAMS) -> World:
    """Draw every entity of the world; events are drawn later, in chunks."""
    ss = np.random.SeedSequence([seed, 20241])
    r_inf, r_fol, r_fw, r_br, r_po, r_ca = (np.random.default_rng(s) for s in ss.spawn(6))
    start = WORLD_START
    end = start + preset.days * DAY
    ip, fp, wp = params.influencers, params.followers, params.follows

    # -- influencers: tier quotas so every tier is present, log-uniform size within a tier
    n_i = preset.n_influencers
    quota = np.maximum(1, np.floor(np.array(ip.tier_share) * n_i)).astype(int)
    quota[0] += n_i - quota.sum()
    tier = r_inf.permutation(np.repeat(np.arange(len(TIERS)), quota))
    lo, hi = np.log(ip.tier_bounds()).T
    count = np.exp(lo[tier] + r_inf.random(n_i) * (hi[tier] - lo[tier])).round().astype(np.int64)
    niche = r_inf.integers(0, len(NICHES), n_i)
    noise = r_inf.lognormal(0, ip.price_sd, n_i)
    price = (ip.price_scale * count**ip.price_exponent * noise).round(2)
    price_known = r_inf.random(n_i) > ip.price_unknown_share
    bought = (tier <= ip.bought_max_tier) & (r_inf.random(n_i) < ip.bought_share)
    b_lo, b_hi = ip.bought_bot_share
    bot_share = np.where(
        bought,
        b_lo + (b_hi - b_lo) * r_inf.random(n_i),
        r_inf.beta(*ip.organic_bot_beta, n_i),
    )
    persuasion = r_inf.normal(0, ip.persuasion_sd, n_i)
    quality = r_inf.normal(0, ip.quality_sd, n_i)

    # -- brands
    bp = params.brands
    n_b = preset.n_brands
    br_niche = np.arange(n_b) % len(NICHES)
    r_br.shuffle(br_niche)
    br_price = np.exp(r_br.normal(np.log(bp.price_median), bp.price_sd, n_b)).round(2)
    br_price_known = r_br.random(n_b) > bp.price_unknown_share
    br_appeal = r_br.normal(0, bp.appeal_sd, n_b)
    br_repeat = r_br.normal(0, bp.repeat_sd, n_b)

    # -- people: a uniform sample of the population, drawn so the largest audience is a small
    # share of them; genuine accounts first, then bots
    largest = count.max() * preset.sample_fraction
    n_f = max(
        preset.n_followers,
        int(np.ceil(wp.people_per_largest_audience * largest / (1 - preset.bot_share))),
    )
    n_bots = round(preset.bot_share * n_f)
    bot = np.zeros(n_f, bool)
    bot[n_f - n_bots :] = True
    primary = r_fol.integers(0, len(NICHES), n_f)
    interests = (1 << primary).astype(np.int64)
    for p_extra in fp.extra_interest_probs:
        extra = r_fol.integers(0, len(NICHES), n_f)
        interests |= np.where(r_fol.random(n_f) < p_extra, 1 << extra, 0)
    activity = r_fol.lognormal(0, fp.activity_sd, n_f)
    purchase_z = r_fol.normal(0, 1, n_f)
    rho = fp.loyalty_purchase_corr
    loyalty_z = rho * purchase_z + np.sqrt(1 - rho**2) * r_fol.normal(0, 1, n_f)
    sociability = r_fol.lognormal(0, fp.sociability_sd, n_f)
    k = fp.background_zp_effect
    bg_rate = np.where(
        bot,
        0.0,
        (fp.background_per_year / 365) * np.exp(k * purchase_z - k**2 / 2),
    )
    fav_share = np.where(
        bot, 0.0, sigmoid(fp.favourite_loyalty * loyalty_z + fp.favourite_intercept)
    )
    favourites = draw_brands(
        r_fol, interests, br_niche, size=(n_f, 2), weight=fp.interest_brand_weight
    )

    # -- follows: each of an influencer's followers is in the sample with the same probability
    audience = r_fw.binomial(count, preset.sample_fraction)
    fw_inf, fw_fol = _draw_audiences(
        r_fw, audience, bot_share, niche, interests, bot, sociability, wp
    )
    # people who follow none of the influencers are invisible to follows-based data: drop them
    people = np.unique(fw_fol)
    fw_fol = np.searchsorted(people, fw_fol)
    bot, interests, activity = bot[people], interests[people], activity[people]
    purchase_z, loyalty_z = purchase_z[people], loyalty_z[people]
    bg_rate, fav_share, favourites = bg_rate[people], fav_share[people], favourites[people]
    n_fw = len(fw_inf)
    is_bot = bot[fw_fol]
    older = r_fw.random(n_fw) < wp.older_share
    f_from = np.where(
        older,
        start - r_fw.exponential(wp.older_mean_days * DAY, n_fw),
        start + r_fw.random(n_fw) * (end - start - wp.last_follow_margin_days * DAY),
    ).astype(np.int64)
    f_to = (f_from + r_fw.exponential(wp.duration_mean_days * DAY, n_fw)).astype(np.int64)
    unfollow = (r_fw.random(n_fw) < wp.unfollow_share) & (f_to < end)
    # bought bots arrive together, at one moment per influencer (sometimes before the world)
    bought_at = (
        start
        - wp.bot_wave_days_before * DAY
        + r_fw.random(n_i) * (end - start + wp.bot_wave_days_after_end * DAY)
    )
    arrival = bought_at[fw_inf] + r_fw.random(n_fw) * wp.bot_arrival_days * DAY
    f_from = np.where(is_bot, arrival, f_from)
    f_from = f_from.astype(np.int64)
    f_to = np.where(unfollow & ~is_bot, f_to, -1)
    match = (interests[fw_fol] >> niche[fw_inf]) & 1
    affinity = sigmoid(
        wp.affinity_intercept
        + np.array(ip.tier_affinity)[tier[fw_inf]]
        + wp.affinity_interest_match * match
        + quality[fw_inf]
        + r_fw.normal(0, wp.affinity_noise_sd, n_fw)
    )
    affinity = np.where(is_bot, 0.0, affinity)

    # -- organic posts (some sponsored by a brand of the influencer's niche)
    pp = params.posts
    n_posts = r_po.poisson(np.array(ip.tier_posts_per_week)[tier] * preset.days / 7)
    po_inf = np.repeat(np.arange(n_i), n_posts)
    po_ts = seasonal_times(r_po, start, preset.days, len(po_inf), pp)
    po_brand = np.where(
        r_po.random(len(po_inf)) < pp.sponsored_share,
        _brand_in_niche(r_po, niche[po_inf], br_niche),
        -1,
    )

    # -- campaigns: per brand, waves more than a label horizon apart
    ca_brand, ca_inf, ca_start, ca_wave = _draw_campaigns(
        r_ca, preset, params.campaigns, start, end, niche, br_niche
    )
    cp = params.campaigns
    ca_cost = (price[ca_inf] * r_ca.lognormal(0, cp.cost_sd, len(ca_inf))).round(2)
    ca_cost_known = r_ca.random(len(ca_inf)) > cp.cost_unknown_share
    # campaign posts join the post table, sponsored by the campaign's brand, at start_ts
    po_inf = np.concatenate([po_inf, ca_inf])
    po_ts = np.concatenate([po_ts, ca_start])
    po_brand = np.concatenate([po_brand, ca_brand])
    is_campaign = np.r_[np.zeros(len(po_ts) - len(ca_inf), bool), np.ones(len(ca_inf), bool)]
    order = np.lexsort((po_ts, po_inf))
    po_inf, po_ts, po_brand = po_inf[order], po_ts[order], po_brand[order]
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    ca_post = rank[is_campaign]
    po_offsets = np.searchsorted(po_inf, np.arange(n_i + 1))

    return World(
        preset=preset,
        params=params,
        seed=seed,
        start=start,
        end=end,
        inf_tier=tier,
        inf_followers=count,
        inf_niche=niche,
        inf_price=price,
        inf_price_known=price_known,
        inf_audience=audience,
        inf_bot_share=bot_share,
        inf_persuasion=persuasion,
        fol_bot=bot,
        fol_interests=interests,
        fol_activity=activity,
        fol_purchase_z=purchase_z,
        fol_loyalty_z=loyalty_z,
        fol_background_rate=bg_rate,
        fol_favourites=favourites,
        fol_favourite_share=fav_share,
        fw_inf=fw_inf,
        fw_fol=fw_fol,
        fw_from=f_from,
        fw_to=f_to,
        fw_affinity=affinity,
        br_niche=br_niche,
        br_price=br_price,
        br_price_known=br_price_known,
        br_appeal=br_appeal,
        br_repeat=br_repeat,
        po_inf=po_inf,
        po_ts=po_ts,
        po_brand=po_brand,
        po_offsets=po_offsets,
        ca_brand=ca_brand,
        ca_inf=ca_inf,
        ca_start=ca_start,
        ca_cost=ca_cost,
        ca_cost_known=ca_cost_known,
        ca_post=ca_post,
        ca_wave=ca_wave,
    )


def seasonal_times(
    rng: np.random.Generator, start: int, days: int, n: int, pp=PARAMS.posts
) -> np.ndarray:
    """n timestamps in [start, start + days) with weekly and daily seasonality."""
    dow_w = np.array(pp.day_of_week)
    hour_w = np.array(pp.hour_of_day, dtype=float)
    dow = np.arange(days) % 7  # the world starts on a Monday
    d = rng.choice(days, size=n, p=dow_w[dow] / dow_w[dow].sum())
    h = rng.choice(24, size=n, p=hour_w / hour_w.sum())
    return start + d * DAY + h * 3600 + rng.integers(0, 3600, size=n)


def brand_match(interests: np.ndarray, br_niche: np.ndarray) -> np.ndarray:
    """The brand's niche is one of the follower's interests."""
    return ((interests >> br_niche) & 1).astype(bool)


def draw_brands(rng, interests: np.ndarray, br_niche: np.ndarray, size, weight: float):
    """Brands drawn with `weight` for a brand in one of the follower's interests, else 1."""
    n, k = size
    f = np.repeat(np.arange(n), k)
    out = np.empty(n * k, np.int64)
    todo = np.arange(n * k)
    while len(todo):
        b = rng.integers(0, len(br_niche), len(todo))
        keep = brand_match(interests[f[todo]], br_niche[b]) | (rng.random(len(todo)) < 1 / weight)
        out[todo[keep]] = b[keep]
        todo = todo[~keep]
    return out.reshape(n, k)


def _brand_in_niche(rng: np.random.Generator, niches: np.ndarray, br_niche: np.ndarray):
    """A uniformly drawn brand of each given niche (any brand where a niche has none)."""
    order = np.argsort(br_niche, kind="stable")
    counts = np.bincount(br_niche, minlength=len(NICHES))
    offsets = np.r_[0, np.cumsum(counts)]
    n = counts[niches]
    pick = offsets[niches] + (rng.random(len(niches)) * np.maximum(n, 1)).astype(int)
    anyb = rng.integers(0, len(br_niche), len(niches))
    return np.where(n > 0, order[np.minimum(pick, len(order) - 1)], anyb)


def _draw_audiences(rng, audience, bot_share, niche, interests, bot, sociability, wp):
    """(influencer, follower) pairs, sorted: `audience[i]` distinct people per influencer.
    Genuine followers come from the influencer's niche (a share of them) and from anyone,
    sociable people more often; bots come uniformly from the bots."""
    n_bot = rng.binomial(audience, bot_share)
    n_gen = audience - n_bot
    n_match = rng.binomial(n_gen, wp.niche_match_share)
    genuine = np.flatnonzero(~bot)
    bots = np.flatnonzero(bot)
    niche_pools = [genuine[brand_match(interests[genuine], k)] for k in range(len(NICHES))]
    niche_cw = [np.cumsum(sociability[pool]) for pool in niche_pools]
    genuine_cw = np.cumsum(sociability[genuine])
    parts_inf, parts_fol = [], []
    for i in np.flatnonzero(audience):
        pool, cw = niche_pools[niche[i]], niche_cw[niche[i]]
        m = min(n_match[i], int(wp.niche_pool_max_share * len(pool)))
        matched = _sample_distinct(rng, pool, cw, m)
        others = _sample_distinct(rng, genuine, genuine_cw, n_gen[i] - m, exclude=matched)
        fake = _sample_distinct(rng, bots, None, n_bot[i])
        chosen = np.concatenate([matched, others, fake])
        parts_inf.append(np.full(len(chosen), i))
        parts_fol.append(chosen)
    key = np.sort(np.concatenate(parts_inf) * len(bot) + np.concatenate(parts_fol))
    return key // len(bot), key % len(bot)


def _sample_distinct(rng, pool, cum_weight, k: int, exclude=None) -> np.ndarray:
    """k distinct members of `pool` (not in `exclude`), drawn with probability proportional
    to their weight (`cum_weight`: cumulative weights; None: uniform), one after another."""
    out = np.zeros(0, dtype=pool.dtype)
    taken = np.zeros(0, dtype=pool.dtype) if exclude is None else exclude
    k = min(k, len(pool) - len(taken))  # exclude is drawn from the same pool
    while len(out) < k:
        need = k - len(out)
        draws = need + need // 4 + 8
        if cum_weight is None:
            cand = pool[rng.integers(0, len(pool), draws)]
        else:
            idx = np.searchsorted(cum_weight, rng.random(draws) * cum_weight[-1], side="right")
            cand = pool[np.minimum(idx, len(pool) - 1)]
        cand = cand[~np.isin(cand, taken)]
        _, first = np.unique(cand, return_index=True)
        new = cand[np.sort(first)][:need]  # distinct, in the order drawn
        out = np.concatenate([out, new])
        taken = np.concatenate([taken, new])
    return out


def _draw_campaigns(rng, preset: Preset, cp, start: int, end: int, niche, br_niche):
    """Waves per brand: one start time, 1 + Poisson influencers (niche matches preferred),
    spaced more than a label horizon apart so the label windows of one brand never overlap."""
    brands, infs, starts, waves = [], [], [], []
    wave_id = 0
    n_i = len(niche)
    for b in range(len(br_niche)):
        t = start + (preset.warmup_days + rng.integers(0, cp.first_wave_jitter_days)) * DAY
        while t < end - cp.last_wave_margin_days * DAY:
            k = min(n_i, 1 + rng.poisson(cp.extra_influencers_mean))
            w = np.where(niche == br_niche[b], cp.niche_weight, 1.0)
            chosen = rng.choice(n_i, size=k, replace=False, p=w / w.sum())
            ts = t + cp.start_hour * 3600
            brands += [b] * k
            infs += list(np.sort(chosen))
            starts += [ts] * k
            waves += [wave_id] * k
            wave_id += 1
            gap = rng.integers(cp.gap_min_days, cp.gap_max_days)
            t += (LABEL_HORIZON_DAYS + gap) * DAY
    order = np.lexsort((np.array(infs), np.array(starts)))
    return (
        np.array(brands)[order],
        np.array(infs)[order],
        np.array(starts, dtype=np.int64)[order],
        np.array(waves)[order],
    )
