"""A synthetic influencer world with ground truth.

The world is built so the question is hard and the micro-influencer thesis can be tested:

* influencers are heavy-tailed in size (nano .. mega); nominal follower counts are realistic,
  simulated audiences are scaled down sub-linearly and the scale is recorded per influencer;
* followers have interests, an activity level, a purchase propensity and a hidden loyalty
  propensity; bots view and like a lot, in bursts, rarely comment and never buy;
* follower-influencer affinity is higher for small influencers and interest matches, and it
  drives engagement (view -> like -> comment/share/save -> click) on organic and sponsored
  posts with weekly and daily seasonality;
* brands run campaigns in waves (several influencers, one start time); a follower converts
  (first purchase) with a probability driven by affinity, interest match and purchase
  propensity, and buys again within the horizon with a probability driven by the hidden loyalty
  propensity; background purchases (with favourite brands for loyal followers) and purchases by
  earlier converters run as Poisson processes, so past purchases carry real signal.

Ground truth is exact for the default label (>= 2 purchases of the brand in
``[start_ts, start_ts + 90 days)``): for every (campaign, follower) row the probability that
generated the outcome, including background and earlier converters' purchases in the window.
A brand's waves are spaced more than 90 days apart so windows of one brand never overlap.

The pure core yields tables (pyarrow); the caller writes them. Events come in chunks so
memory stays bounded on the large presets.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

NICHES: tuple[str, ...] = (
    "beauty",
    "fitness",
    "food",
    "tech",
    "gaming",
    "fashion",
    "travel",
    "parenting",
)
TIERS: tuple[str, ...] = ("nano", "micro", "mid", "macro", "mega")
# Nominal follower-count bounds per tier and the share of influencers in each tier.
TIER_BOUNDS: tuple[tuple[float, float], ...] = (
    (1e3, 1e4),
    (1e4, 1e5),
    (1e5, 5e5),
    (5e5, 1e6),
    (1e6, 2e7),
)
TIER_SHARE = np.array([0.42, 0.33, 0.14, 0.07, 0.04])
TIER_AFFINITY = np.array([1.3, 0.8, 0.1, -0.6, -1.0])  # logit bonus: small accounts feel closer
TIER_POSTS_PER_WEEK = np.array([2.0, 2.6, 3.2, 3.8, 4.5])

DAY = 86_400
WORLD_START = int(np.datetime64("2024-01-01T00:00:00", "s").astype(np.int64))
LABEL_HORIZON_DAYS = 90
LABEL_MIN_PURCHASES = 2
EVENT_TYPES = ("view", "like", "comment", "share", "save", "click", "purchase")
_ET = {name: i for i, name in enumerate(EVENT_TYPES)}
# Weekly seasonality (Mon..Sun) and a diurnal profile (UTC hour) for posting and engagement.
_DOW_WEIGHTS = np.array([0.85, 0.9, 1.0, 0.95, 1.05, 1.2, 1.3])
_HOUR_WEIGHTS = np.array(
    [2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 7, 7, 6, 6, 7, 8, 9, 10, 10, 9, 6, 4], dtype=float
)


@dataclass(frozen=True)
class Preset:
    """Size and rate knobs of a simulated world. Rates are the same across presets."""

    n_influencers: int
    n_brands: int
    n_followers: int
    n_follows: int  # target number of follow rows (audiences are scaled to hit it)
    days: int = 730
    warmup_days: int = 150  # history before the first campaign wave
    bot_share: float = 0.12  # share of accounts that are bots
    view_rate: float = 0.05  # scales how often a follower sees a post
    chunk_follows: int = 250_000  # follows per event chunk (bounds memory)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        n_influencers=12,
        n_brands=6,
        n_followers=1_600,
        n_follows=4_000,
        days=400,
        warmup_days=120,
        view_rate=0.05,
    ),
    "small": Preset(n_influencers=250, n_brands=40, n_followers=45_000, n_follows=125_000),
    "medium": Preset(n_influencers=2_000, n_brands=120, n_followers=450_000, n_follows=1_250_000),
    "large": Preset(
        n_influencers=15_000, n_brands=400, n_followers=4_500_000, n_follows=12_500_000
    ),
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _ids(prefix: str, n: int) -> pa.Array:
    width = max(4, len(str(n)))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(n)], pa.string())


def _take(ids: pa.Array, idx: np.ndarray) -> pa.Array:
    """ids[idx] with idx < 0 meaning null."""
    mask = idx < 0
    return ids.take(pa.array(np.where(mask, 0, idx), mask=mask if mask.any() else None))


def _ts(seconds: np.ndarray) -> pa.Array:
    return pa.array(seconds.astype("int64") * 1_000_000, pa.timestamp("us", tz="UTC"))


def _ts_nullable(seconds: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(seconds.astype("int64") * 1_000_000, pa.timestamp("us", tz="UTC"), mask=~valid)


def _seasonal_times(rng: np.random.Generator, start: int, days: int, n: int) -> np.ndarray:
    """n timestamps in [start, start + days) with weekly and daily seasonality."""
    day_idx = np.arange(days)
    dow = (day_idx + 0) % 7  # 2024-01-01 is a Monday
    p_day = _DOW_WEIGHTS[dow] / _DOW_WEIGHTS[dow].sum()
    d = rng.choice(days, size=n, p=p_day)
    h = rng.choice(24, size=n, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    return start + d * DAY + h * 3600 + rng.integers(0, 3600, size=n)


@dataclass
class World:
    """Entities of the simulated world (everything but the event log), as numpy arrays."""

    preset: Preset
    seed: int
    start: int
    end: int
    # influencers
    inf_tier: np.ndarray
    inf_count: np.ndarray
    inf_niche: np.ndarray
    inf_price: np.ndarray
    inf_price_known: np.ndarray
    inf_audience: np.ndarray
    inf_fake_share: np.ndarray
    inf_persuasion: np.ndarray
    # followers
    fol_bot: np.ndarray
    fol_interests: np.ndarray  # bitmask over NICHES
    fol_activity: np.ndarray
    fol_zp: np.ndarray  # purchase propensity
    fol_zl: np.ndarray  # hidden loyalty propensity
    fol_bg_rate: np.ndarray  # background purchases per day
    fol_fav: np.ndarray  # (n, 2) favourite brands
    fol_fav_share: np.ndarray  # share of background purchases on favourites
    # follows (sorted by influencer, follower)
    fw_inf: np.ndarray
    fw_fol: np.ndarray
    fw_from: np.ndarray
    fw_to: np.ndarray  # -1 when still following
    fw_aff: np.ndarray
    # brands
    br_niche: np.ndarray
    br_price: np.ndarray
    br_price_known: np.ndarray
    br_appeal: np.ndarray
    br_repeat: np.ndarray
    # posts (sorted by influencer, time)
    po_inf: np.ndarray
    po_ts: np.ndarray
    po_brand: np.ndarray  # -1 for organic posts
    po_offsets: np.ndarray  # posts of influencer i are po_*[off[i]:off[i+1]]
    # campaigns
    ca_brand: np.ndarray
    ca_inf: np.ndarray
    ca_start: np.ndarray
    ca_cost: np.ndarray
    ca_cost_known: np.ndarray
    ca_post: np.ndarray
    ca_wave: np.ndarray

    @functools.cached_property
    def ids(self) -> dict[str, pa.Array]:
        """String ids of followers, influencers, brands and posts, by index."""
        return {
            "f": _ids("f", len(self.fol_bot)),
            "i": _ids("i", len(self.inf_tier)),
            "b": _ids("b", len(self.br_niche)),
            "p": _ids("p", len(self.po_ts)),
            "c": _ids("c", len(self.ca_inf)),
        }


def build_world(preset: Preset, seed: int) -> World:
    """Draw every entity of the world; events are drawn later, in chunks."""
    ss = np.random.SeedSequence([seed, 20241])
    r_inf, r_fol, r_fw, r_br, r_po, r_ca = (np.random.default_rng(s) for s in ss.spawn(6))
    start = WORLD_START
    end = start + preset.days * DAY

    # -- influencers: tier quotas so every tier is present, log-uniform size within a tier
    n_i = preset.n_influencers
    quota = np.maximum(1, np.floor(TIER_SHARE * n_i)).astype(int)
    quota[0] += n_i - quota.sum()
    tier = r_inf.permutation(np.repeat(np.arange(len(TIERS)), quota))
    lo, hi = np.log(np.array(TIER_BOUNDS)).T
    count = np.exp(lo[tier] + r_inf.random(n_i) * (hi[tier] - lo[tier])).round().astype(np.int64)
    niche = r_inf.integers(0, len(NICHES), n_i)
    price = (0.25 * count**0.8 * r_inf.lognormal(0, 0.25, n_i)).round(2)
    price_known = r_inf.random(n_i) > 0.1
    weight = count.astype(float) ** 0.5
    audience = np.maximum(15, np.round(preset.n_follows * weight / weight.sum())).astype(int)
    bought = (tier <= 2) & (r_inf.random(n_i) < 0.18)
    fake = np.where(bought, 0.25 + 0.45 * r_inf.random(n_i), r_inf.beta(2, 22, n_i))
    persuasion = r_inf.normal(0, 0.35, n_i)
    quality = r_inf.normal(0, 0.3, n_i)

    # -- brands
    n_b = preset.n_brands
    br_niche = np.arange(n_b) % len(NICHES)
    r_br.shuffle(br_niche)
    br_price = np.exp(r_br.normal(np.log(35), 0.8, n_b)).round(2)
    br_price_known = r_br.random(n_b) > 0.15
    br_appeal = r_br.normal(0, 0.3, n_b)
    br_repeat = r_br.normal(0, 0.5, n_b)

    # -- followers: genuine accounts first, then bots
    n_f = preset.n_followers
    n_bots = round(preset.bot_share * n_f)
    bot = np.zeros(n_f, bool)
    bot[n_f - n_bots :] = True
    primary = r_fol.integers(0, len(NICHES), n_f)
    interests = (1 << primary).astype(np.int64)
    for p_extra in (0.6, 0.3):
        extra = r_fol.integers(0, len(NICHES), n_f)
        interests |= np.where(r_fol.random(n_f) < p_extra, 1 << extra, 0)
    activity = r_fol.lognormal(0, 0.5, n_f)
    zp = r_fol.normal(0, 1, n_f)
    zl = 0.3 * zp + np.sqrt(1 - 0.09) * r_fol.normal(0, 1, n_f)
    sociability = r_fol.lognormal(0, 0.8, n_f)
    bg_rate = np.where(bot, 0.0, (3.0 / 365) * np.exp(0.7 * zp - 0.245))
    fav_share = np.where(bot, 0.0, _sigmoid(1.2 * zl - 0.8))
    fav = _draw_brands(r_fol, interests, br_niche, size=(n_f, 2))

    # -- follows
    fw_inf, fw_fol = _draw_audiences(r_fw, audience, fake, niche, interests, bot, sociability)
    n_fw = len(fw_inf)
    is_bot = bot[fw_fol]
    older = r_fw.random(n_fw) < 0.55
    f_from = np.where(
        older,
        start - r_fw.exponential(400 * DAY, n_fw),
        start + r_fw.random(n_fw) * (end - start - 30 * DAY),
    ).astype(np.int64)
    f_to = (f_from + r_fw.exponential(300 * DAY, n_fw)).astype(np.int64)
    unfollow = (r_fw.random(n_fw) < 0.2) & (f_to < end)
    bought_at = start - 365 * DAY + r_fw.random(n_i) * (end - start + 300 * DAY)
    f_from = np.where(is_bot, bought_at[fw_inf] + r_fw.random(n_fw) * 3 * DAY, f_from)
    f_from = f_from.astype(np.int64)
    f_to = np.where(unfollow & ~is_bot, f_to, -1)
    match = (interests[fw_fol] >> niche[fw_inf]) & 1
    aff = _sigmoid(
        -1.1
        + TIER_AFFINITY[tier[fw_inf]]
        + 1.2 * match
        + quality[fw_inf]
        + r_fw.normal(0, 0.9, n_fw)
    )
    aff = np.where(is_bot, 0.0, aff)

    # -- organic posts (some sponsored by a brand of the influencer's niche)
    n_posts = r_po.poisson(TIER_POSTS_PER_WEEK[tier] * preset.days / 7)
    po_inf = np.repeat(np.arange(n_i), n_posts)
    po_ts = _seasonal_times(r_po, start, preset.days, len(po_inf))
    po_brand = np.where(
        r_po.random(len(po_inf)) < 0.08,
        _brand_in_niche(r_po, niche[po_inf], br_niche),
        -1,
    )

    # -- campaigns: per brand, waves more than a label horizon apart
    ca = _draw_campaigns(r_ca, preset, start, end, niche, br_niche, price, tier)
    ca_brand, ca_inf, ca_start, ca_wave = ca
    ca_cost = (price[ca_inf] * r_ca.lognormal(0, 0.15, len(ca_inf))).round(2)
    ca_cost_known = r_ca.random(len(ca_inf)) > 0.1
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
        seed=seed,
        start=start,
        end=end,
        inf_tier=tier,
        inf_count=count,
        inf_niche=niche,
        inf_price=price,
        inf_price_known=price_known,
        inf_audience=audience,
        inf_fake_share=fake,
        inf_persuasion=persuasion,
        fol_bot=bot,
        fol_interests=interests,
        fol_activity=activity,
        fol_zp=zp,
        fol_zl=zl,
        fol_bg_rate=bg_rate,
        fol_fav=fav,
        fol_fav_share=fav_share,
        fw_inf=fw_inf,
        fw_fol=fw_fol,
        fw_from=f_from,
        fw_to=f_to,
        fw_aff=aff,
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


def _brand_in_niche(rng: np.random.Generator, niches: np.ndarray, br_niche: np.ndarray):
    """A uniformly drawn brand of each given niche (any brand where a niche has none)."""
    order = np.argsort(br_niche, kind="stable")
    counts = np.bincount(br_niche, minlength=len(NICHES))
    offsets = np.r_[0, np.cumsum(counts)]
    n = counts[niches]
    pick = offsets[niches] + (rng.random(len(niches)) * np.maximum(n, 1)).astype(int)
    anyb = rng.integers(0, len(br_niche), len(niches))
    return np.where(n > 0, order[np.minimum(pick, len(order) - 1)], anyb)


def _brand_match(interests: np.ndarray, br_niche: np.ndarray) -> np.ndarray:
    return ((interests >> br_niche) & 1).astype(bool)


def _draw_brands(rng, interests: np.ndarray, br_niche: np.ndarray, size) -> np.ndarray:
    """Brands drawn with weight 3 for a brand in one of the follower's interests, else 1."""
    n, k = size
    f = np.repeat(np.arange(n), k)
    out = np.empty(n * k, np.int64)
    todo = np.arange(n * k)
    while len(todo):
        b = rng.integers(0, len(br_niche), len(todo))
        keep = _brand_match(interests[f[todo]], br_niche[b]) | (rng.random(len(todo)) < 1 / 3)
        out[todo[keep]] = b[keep]
        todo = todo[~keep]
    return out.reshape(n, k)


def _draw_audiences(rng, audience, fake, niche, interests, bot, sociability):
    """(influencer, follower) pairs: genuine followers favour the influencer's niche and
    sociable accounts; bots are drawn uniformly from the bot pool. Sorted, unique."""
    n_i = len(audience)
    n_bot = rng.binomial(audience, fake)
    n_gen = audience - n_bot
    n_match = rng.binomial(n_gen, 0.65)
    genuine = np.flatnonzero(~bot)
    bots = np.flatnonzero(bot)
    parts_inf, parts_fol = [], []
    # niche-matched genuine followers
    for k in range(len(NICHES)):
        pool = genuine[((interests[genuine] >> k) & 1).astype(bool)]
        infs = np.flatnonzero(niche == k)
        draws = n_match[infs]
        if not draws.sum() or not len(pool):
            continue
        cw = np.cumsum(sociability[pool])
        pick = np.searchsorted(cw, rng.random(draws.sum()) * cw[-1], side="right")
        parts_inf.append(np.repeat(infs, draws))
        parts_fol.append(pool[np.minimum(pick, len(pool) - 1)])
    # any genuine follower
    cw = np.cumsum(sociability[genuine])
    draws = n_gen - n_match
    pick = np.searchsorted(cw, rng.random(draws.sum()) * cw[-1], side="right")
    parts_inf.append(np.repeat(np.arange(n_i), draws))
    parts_fol.append(genuine[np.minimum(pick, len(genuine) - 1)])
    # bots
    parts_inf.append(np.repeat(np.arange(n_i), n_bot))
    parts_fol.append(bots[rng.integers(0, len(bots), n_bot.sum())])
    key = np.unique(np.concatenate(parts_inf) * len(bot) + np.concatenate(parts_fol))
    return key // len(bot), key % len(bot)


def _draw_campaigns(rng, preset, start, end, niche, br_niche, price, tier):
    """Waves per brand: one start time, 1-5 influencers (niche matches preferred)."""
    brands, infs, starts, waves = [], [], [], []
    wave_id = 0
    n_i = len(niche)
    for b in range(len(br_niche)):
        t = start + (preset.warmup_days + rng.integers(0, 60)) * DAY
        while t < end - 20 * DAY:
            k = min(n_i, 1 + rng.poisson(1.3))
            w = np.where(niche == br_niche[b], 4.0, 1.0)
            chosen = rng.choice(n_i, size=k, replace=False, p=w / w.sum())
            ts = t + 17 * 3600
            brands += [b] * k
            infs += list(np.sort(chosen))
            starts += [ts] * k
            waves += [wave_id] * k
            wave_id += 1
            t += rng.integers(LABEL_HORIZON_DAYS + 5, LABEL_HORIZON_DAYS + 70) * DAY
    order = np.lexsort((np.array(infs), np.array(starts)))
    return (
        np.array(brands)[order],
        np.array(infs)[order],
        np.array(starts, dtype=np.int64)[order],
        np.array(waves)[order],
    )


# ---------------------------------------------------------------------------------------------
# Outcomes: campaign conversions, repeat purchases, background purchases, ground truth


@dataclass
class Outcomes:
    purchases: pa.Table  # all purchase events and the clicks that led to campaign purchases
    ground_truth: pa.Table  # one row per (campaign, follower following at start_ts)
    campaigns: pa.Table  # per campaign: expected and realised loyal count


def _bg_lambda(w: World, fol: np.ndarray, brand: np.ndarray) -> np.ndarray:
    """Background purchase rate (per day) of each (follower, brand) pair."""
    match = _brand_match(w.fol_interests[fol], w.br_niche[brand])
    n_match = np.zeros(len(fol))
    for k in range(len(NICHES)):
        n_match += ((w.fol_interests[fol] >> k) & 1) * np.sum(w.br_niche == k)
    total_w = 3 * n_match + (len(w.br_niche) - n_match)
    is_fav = (w.fol_fav[fol, 0] == brand).astype(float) + (w.fol_fav[fol, 1] == brand)
    share = (
        w.fol_fav_share[fol] * is_fav / 2
        + (1 - w.fol_fav_share[fol]) * np.where(match, 3.0, 1.0) / total_w
    )
    return w.fol_bg_rate[fol] * share


def _background(w: World, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background purchases: Poisson per follower, brand by favourites and interests."""
    n = rng.poisson(w.fol_bg_rate * (w.end - w.start) / DAY)
    fol = np.repeat(np.arange(len(n)), n)
    ts = w.start + (rng.random(len(fol)) * (w.end - w.start)).astype(np.int64)
    fav = rng.random(len(fol)) < w.fol_fav_share[fol]
    brand = np.where(
        fav,
        w.fol_fav[fol, rng.integers(0, 2, len(fol))],
        _draw_brands(rng, w.fol_interests[fol], w.br_niche, (len(fol), 1))[:, 0],
    )
    return fol, brand, ts


def _count_in(sorted_keys: np.ndarray, key: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """How many (key, t) in sorted_keys (encoded key << 32 | t-offset) fall in [lo, hi)."""
    return np.searchsorted(sorted_keys, (key << 32) | hi, "left") - np.searchsorted(
        sorted_keys, (key << 32) | lo, "left"
    )


def _outcome_draws(w: World):
    """The outcome generator after its first draws: (rng, background purchases, each
    campaign's effect — how well it lands, on the logit). One place, so an analysis can
    replay the hidden campaign effects exactly."""
    rng = np.random.default_rng(np.random.SeedSequence([w.seed, 20242]))
    background = _background(w, rng)
    return rng, background, rng.normal(0, 0.25, len(w.ca_inf))


def campaign_effects(w: World) -> np.ndarray:
    """Each campaign's hidden effect (by campaign index), as `draw_outcomes` draws it."""
    return _outcome_draws(w)[2]


def draw_outcomes(w: World) -> Outcomes:
    rng, (bg_fol, bg_brand, bg_ts), ca_effect = _outcome_draws(w)
    n_b = len(w.br_niche)
    H = LABEL_HORIZON_DAYS * DAY
    base = w.start - 400 * DAY  # offsets fit in 32 bits for worlds up to ~130 years

    def enc(fol, brand, ts):
        return ((fol.astype(np.int64) * n_b + brand) << 32) | (ts - base)

    bg_keys = np.sort(enc(bg_fol, bg_brand, bg_ts))
    p_fol, p_brand, p_ts, p_inf, p_kind = (
        [bg_fol],
        [bg_brand],
        [bg_ts],
        [np.full(len(bg_fol), -1)],
        [],
    )
    p_kind.append(np.zeros(len(bg_fol), np.int8))  # 0 purchase, 1 click
    post_parts: list[np.ndarray] = []
    gt_parts: list[dict] = []
    wave_order = np.unique(w.ca_wave)
    # follows indexed by influencer for audience look-ups
    fw_off = np.searchsorted(w.fw_inf, np.arange(len(w.inf_tier) + 1))
    wave_info = []
    for wv in wave_order:
        cs = np.flatnonzero(w.ca_wave == wv)
        wave_info.append((w.ca_brand[cs[0]], w.ca_start[cs[0]], cs))
    wave_info.sort(key=lambda x: (x[0], x[1]))
    by_brand: dict[int, list] = {}
    for b, s, cs in wave_info:
        by_brand.setdefault(int(b), []).append((int(s), cs))

    for b, brand_waves in by_brand.items():
        s_fol = np.zeros(0, np.int64)
        s_rate = np.zeros(0)
        for k, (s, cs) in enumerate(brand_waves):
            # audience rows: followers of each campaign's influencer at start_ts
            r_ca, r_fw = [], []
            for c in cs:
                i = w.ca_inf[c]
                idx = np.arange(fw_off[i], fw_off[i + 1])
                active = (w.fw_from[idx] <= s) & ((w.fw_to[idx] < 0) | (w.fw_to[idx] > s))
                r_ca.append(np.full(active.sum(), c))
                r_fw.append(idx[active])
            row_c = np.concatenate(r_ca)
            row_fw = np.concatenate(r_fw)
            fol = w.fw_fol[row_fw]
            inf = w.fw_inf[row_fw]
            bot = w.fol_bot[fol]
            match_b = _brand_match(w.fol_interests[fol], np.full(len(fol), w.br_niche[b]))
            logit_pc = (
                -5.3
                + 3.2 * w.fw_aff[row_fw]
                + 1.0 * match_b
                + 0.6 * w.fol_zp[fol]
                + w.inf_persuasion[inf]
                + w.br_appeal[b]
                - 0.25 * np.log(w.br_price[b] / 35)
                + ca_effect[row_c]
            )
            pc_row = np.where(bot, 0.0, _sigmoid(logit_pc))
            # one outcome per follower and wave, whichever of the wave's influencers they follow
            ufol, first, inv = np.unique(fol, return_index=True, return_inverse=True)
            log_miss = np.zeros(len(ufol))
            np.add.at(log_miss, inv, np.log1p(-pc_row))
            pc = 1 - np.exp(log_miss)
            pr = _sigmoid(-0.9 + 1.4 * w.fol_zl[ufol] + 0.5 * match_b[first] + w.br_repeat[b])
            pr = np.where(w.fol_bot[ufol], 0.0, pr)
            # rates of the Poisson purchase streams running through the window
            lam = _bg_lambda(w, ufol, np.full(len(ufol), b))
            post = np.zeros(len(ufol))
            if len(s_fol):
                pos = np.searchsorted(s_fol, ufol)
                hit = (pos < len(s_fol)) & (s_fol[np.minimum(pos, len(s_fol) - 1)] == ufol)
                post[hit] = s_rate[pos[hit]]
            mu = (lam + post) * LABEL_HORIZON_DAYS
            p0, p1 = np.exp(-mu), mu * np.exp(-mu)
            p_true = pc * pr + pc * (1 - pr) * (1 - p0) + (1 - pc) * (1 - p0 - p1)

            conv = rng.random(len(ufol)) < pc
            rep = conv & (rng.random(len(ufol)) < pr)
            third = rep & (rng.random(len(ufol)) < 0.35)
            t1 = s + np.minimum(rng.exponential(9 * DAY, len(ufol)), 0.7 * H).astype(np.int64)
            t2 = t1 + (rng.random(len(ufol)) * (s + H - 1 - t1)).astype(np.int64)
            t3 = t2 + (rng.random(len(ufol)) * (s + H - 1 - t2)).astype(np.int64)
            # the first purchase is attributed (promo code) to one of the wave's influencers
            row_pick = _pick_row_per_follower(rng, inv, pc_row)
            attributed = conv & (rng.random(len(ufol)) < 0.55)
            a_inf = np.where(attributed, inf[row_pick], -1)
            clicked = conv & (rng.random(len(ufol)) < 0.7)
            for mask, t, ainf in ((conv, t1, a_inf), (rep, t2, None), (third, t3, None)):
                p_fol.append(ufol[mask])
                p_brand.append(np.full(mask.sum(), b))
                p_ts.append(t[mask])
                p_inf.append(ainf[mask] if ainf is not None else np.full(mask.sum(), -1))
                p_kind.append(np.zeros(mask.sum(), np.int8))
            ct = t1[clicked] - rng.integers(60, 6 * 3600, clicked.sum())
            ct = np.maximum(ct, s)
            p_fol.append(ufol[clicked])
            p_brand.append(np.full(clicked.sum(), b))
            p_ts.append(ct)
            p_inf.append(inf[row_pick][clicked])
            p_kind.append(np.ones(clicked.sum(), np.int8))

            # realised label: every purchase of the brand in the window, whatever its source
            n_c = conv.astype(int) + rep + third
            key = ufol.astype(np.int64) * n_b + b
            n_bg = _count_in(
                bg_keys, key, np.full(len(ufol), s - base), np.full(len(ufol), s + H - base)
            )
            n_post = np.zeros(len(ufol), int)
            if post_parts and k > 0:
                last = post_parts[-1]
                n_post = _count_in(
                    last, key, np.full(len(ufol), s - base), np.full(len(ufol), s + H - base)
                )
            loyal = (n_c + n_bg + n_post) >= LABEL_MIN_PURCHASES

            gt_parts.append(
                dict(
                    campaign=row_c,
                    follower=fol,
                    influencer=inf,
                    brand=np.full(len(fol), b),
                    start=np.full(len(fol), s),
                    p_true=p_true[inv],
                    loyal=loyal[inv],
                    bot=bot,
                    tier=w.inf_tier[inf],
                )
            )
            # later purchases: loyal converters keep buying, one-off buyers rarely come back
            new_rate = np.where(rep, 1 / 45, np.where(conv, 1 / 400, 0.0))
            all_fol = np.union1d(s_fol, ufol[new_rate > 0])
            rate = np.zeros(len(all_fol))
            if len(s_fol):
                rate[np.searchsorted(all_fol, s_fol)] = s_rate
            pos = np.searchsorted(all_fol, ufol[new_rate > 0])
            rate[pos] = np.maximum(rate[pos], new_rate[new_rate > 0])
            s_fol, s_rate = all_fol, rate
            seg_lo = s + H
            seg_hi = brand_waves[k + 1][0] + H if k + 1 < len(brand_waves) else w.end
            seg_hi = min(seg_hi, w.end)
            n_seg = rng.poisson(s_rate * max(0, seg_hi - seg_lo) / DAY)
            sf = np.repeat(s_fol, n_seg)
            st = seg_lo + (rng.random(len(sf)) * max(0, seg_hi - seg_lo)).astype(np.int64)
            p_fol.append(sf)
            p_brand.append(np.full(len(sf), b))
            p_ts.append(st)
            p_inf.append(np.full(len(sf), -1))
            p_kind.append(np.zeros(len(sf), np.int8))
            post_parts.append(np.sort(enc(sf, np.full(len(sf), b), st)))

    purchases = _purchase_table(w, rng, p_fol, p_brand, p_ts, p_inf, p_kind)
    gt = {k: np.concatenate([g[k] for g in gt_parts]) for k in gt_parts[0]}
    return Outcomes(purchases, *_ground_truth_tables(w, gt))


def _pick_row_per_follower(rng, inv: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """For each follower (inverse index inv), one of its rows drawn with prob. ∝ weight."""
    key = rng.random(len(inv)) ** (1 / np.maximum(weight, 1e-12))  # weighted reservoir keys
    order = np.lexsort((-key, inv))
    first = np.r_[True, inv[order][1:] != inv[order][:-1]]
    return order[first]


def _purchase_table(w, rng, p_fol, p_brand, p_ts, p_inf, p_kind) -> pa.Table:
    fol = np.concatenate(p_fol)
    brand = np.concatenate(p_brand)
    ts = np.concatenate(p_ts)
    inf = np.concatenate(p_inf)
    kind = np.concatenate(p_kind)
    keep = (ts >= w.start) & (ts < w.end)
    fol, brand, ts, inf, kind = fol[keep], brand[keep], ts[keep], inf[keep], kind[keep]
    order = np.lexsort((kind, fol, ts))
    fol, brand, ts, inf, kind = fol[order], brand[order], ts[order], inf[order], kind[order]
    amount = (w.br_price[brand] * rng.lognormal(0, 0.3, len(fol))).round(2)
    is_click = kind == 1
    # a campaign click points at the campaign post of (influencer, brand) before it
    post = np.full(len(fol), -1)
    if is_click.any():
        ckey = w.ca_inf.astype(np.int64) * len(w.br_niche) + w.ca_brand
        c_order = np.lexsort((w.ca_start, ckey))
        k_sorted = ckey[c_order]
        q = inf[is_click].astype(np.int64) * len(w.br_niche) + brand[is_click]
        # latest campaign of this (influencer, brand) starting at or before the click
        t_sorted = w.ca_start[c_order]
        combo = (k_sorted << 34) | (t_sorted - w.start + (1 << 33))
        qc = (q << 34) | (ts[is_click] - w.start + (1 << 33))
        pos = np.searchsorted(combo, qc, side="right") - 1
        post[is_click] = w.ca_post[c_order[pos]]
    return _event_table(
        w,
        ts,
        fol,
        inf,
        brand,
        post,
        np.where(is_click, _ET["click"], _ET["purchase"]),
        np.where(is_click, np.nan, amount),
    )


def _ground_truth_tables(w: World, gt: dict) -> tuple[pa.Table, pa.Table]:
    closed = gt["start"] + LABEL_HORIZON_DAYS * DAY <= w.end
    rows = pa.table(
        {
            "campaign_id": _take(w.ids["c"], gt["campaign"]),
            "follower_id": _take(w.ids["f"], gt["follower"]),
            "influencer_id": _take(w.ids["i"], gt["influencer"]),
            "brand_id": _take(w.ids["b"], gt["brand"]),
            "cutoff_ts": _ts(gt["start"]),
            "tier": pa.array(np.array(TIERS)[gt["tier"]]),
            "is_bot": pa.array(gt["bot"]),
            "p_true": pa.array(gt["p_true"]),
            "loyal": pa.array(gt["loyal"]),
            "window_closed": pa.array(closed),
        }
    )
    n_c = len(w.ca_inf)
    exp = np.bincount(gt["campaign"], weights=gt["p_true"], minlength=n_c)
    real = np.bincount(gt["campaign"], weights=gt["loyal"], minlength=n_c)
    size = np.bincount(gt["campaign"], minlength=n_c)
    camps = pa.table(
        {
            "campaign_id": w.ids["c"],
            "influencer_id": _take(w.ids["i"], w.ca_inf),
            "brand_id": _take(w.ids["b"], w.ca_brand),
            "start_ts": _ts(w.ca_start),
            "tier": pa.array(np.array(TIERS)[w.inf_tier[w.ca_inf]]),
            "followers": pa.array(size),
            "expected_loyal": pa.array(exp),
            "realised_loyal": pa.array(real.astype(np.int64)),
            "window_closed": pa.array(w.ca_start + LABEL_HORIZON_DAYS * DAY <= w.end),
        }
    )
    return rows, camps


# ---------------------------------------------------------------------------------------------
# Engagement events, in chunks of follows


EVENT_SCHEMA = pa.schema(
    [
        ("event_ts", pa.timestamp("us", tz="UTC")),
        ("follower_id", pa.string()),
        ("influencer_id", pa.string()),
        ("brand_id", pa.string()),
        ("post_id", pa.string()),
        ("event_type", pa.string()),
        ("amount", pa.float64()),
    ]
)


def _event_table(w: World, ts, fol, inf, brand, post, etype, amount) -> pa.Table:
    ids = w.ids
    return pa.Table.from_arrays(
        [
            _ts(ts),
            _take(ids["f"], fol),
            _take(ids["i"], inf),
            _take(ids["b"], brand),
            _take(ids["p"], post),
            pa.array(np.array(EVENT_TYPES)[etype], pa.string()),
            pa.array(amount, pa.float64(), from_pandas=True),
        ],
        schema=EVENT_SCHEMA,
    )


def engagement_chunks(w: World) -> Iterator[pa.Table]:
    """Views, likes, comments, shares, saves and clicks on posts, chunk by chunk of follows."""
    n_fw = len(w.fw_inf)
    bounds = [*range(0, n_fw, w.preset.chunk_follows), n_fw]
    seeds = np.random.SeedSequence([w.seed, 20243]).spawn(len(bounds) - 1)
    for (lo, hi), ss in zip(itertools.pairwise(bounds), seeds, strict=True):
        yield _engagement(w, np.arange(lo, hi), np.random.default_rng(ss))


def _engagement(w: World, fw: np.ndarray, rng: np.random.Generator) -> pa.Table:
    inf, fol = w.fw_inf[fw], w.fw_fol[fw]
    a = np.maximum(w.fw_from[fw], w.start)
    b = np.where(w.fw_to[fw] < 0, w.end, np.minimum(w.fw_to[fw], w.end))
    off = w.po_offsets
    # posts of the influencer published while the follow was active
    p_lo = off[inf] + _searchsorted_segments(w.po_ts, off[inf], off[inf + 1], a)
    p_hi = off[inf] + _searchsorted_segments(w.po_ts, off[inf], off[inf + 1], b)
    n_avail = np.maximum(p_hi - p_lo, 0)
    bot = w.fol_bot[fol]
    aff = w.fw_aff[fw]
    p_view = np.where(
        bot,
        2.5 * w.preset.view_rate,  # bots see (and like) far more posts
        np.clip(w.preset.view_rate * w.fol_activity[fol] * (0.25 + 1.6 * aff), 0, 0.95),
    )
    n_view = rng.binomial(n_avail, p_view)
    row = np.repeat(np.arange(len(fw)), n_view)
    post = p_lo[row] + (rng.random(len(row)) * n_avail[row]).astype(np.int64)
    key = np.unique((row.astype(np.int64) << 32) + post)  # at most one view per post
    row, post = key >> 32, key & 0xFFFFFFFF
    rb, ra, rf = bot[row], aff[row], fol[row]
    delay = np.where(
        rb,
        rng.exponential(600, len(row)),  # bots act within minutes: bursts
        rng.exponential(16 * 3600, len(row)) * (1.5 - 0.5 * np.minimum(w.fol_activity[rf], 2)),
    )
    v_ts = w.po_ts[post] + delay.astype(np.int64)
    sponsored = w.po_brand[post] >= 0
    brand_match = sponsored & _brand_match(
        w.fol_interests[rf], w.br_niche[np.maximum(w.po_brand[post], 0)]
    )
    probs = {
        "like": np.where(rb, 0.75, 0.05 + 0.45 * ra),
        "comment": np.where(rb, 0.002, 0.006 + 0.09 * ra**1.5),
        "share": np.where(rb, 0.0, 0.003 + 0.04 * ra**1.5),
        "save": np.where(rb, 0.0, (0.004 + 0.05 * ra) * _sigmoid(w.fol_zp[rf])),
        "click": np.where(
            rb,
            0.0,
            (0.002 + 0.02 * ra) * np.where(brand_match, 3.0, 1.0) * _sigmoid(w.fol_zp[rf] + 1),
        ),
    }
    ts_parts, row_parts, post_parts, type_parts = [v_ts], [row], [post], [np.zeros(len(row), int)]
    for name, p in probs.items():
        hit = rng.random(len(row)) < p
        ts_parts.append(v_ts[hit] + rng.integers(5, 600, hit.sum()))
        row_parts.append(row[hit])
        post_parts.append(post[hit])
        type_parts.append(np.full(hit.sum(), _ET[name]))
    ts = np.concatenate(ts_parts)
    r = np.concatenate(row_parts)
    p = np.concatenate(post_parts)
    et = np.concatenate(type_parts)
    keep = ts < w.end
    ts, r, p, et = ts[keep], r[keep], p[keep], et[keep]
    order = np.lexsort((et, fol[r], ts))
    ts, r, p, et = ts[order], r[order], p[order], et[order]
    return _event_table(w, ts, fol[r], inf[r], w.po_brand[p], p, et, np.full(len(ts), np.nan))


def _searchsorted_segments(values, seg_lo, seg_hi, x):
    """Position of x within each sorted segment values[seg_lo:seg_hi] (vectorised)."""
    lo = seg_lo.copy()
    hi = seg_hi.copy()
    while True:
        active = lo < hi
        if not active.any():
            return lo - seg_lo
        mid = (lo + hi) // 2
        go_right = active & (values[np.minimum(mid, len(values) - 1)] < x)
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)


# ---------------------------------------------------------------------------------------------
# Entity tables and the summary


def entity_tables(w: World) -> dict[str, pa.Table]:
    ids = w.ids
    n_i = len(w.inf_tier)
    influencers = pa.table(
        {
            "influencer_id": ids["i"],
            "follower_count": pa.array(w.inf_count, pa.int64()),
            "category": pa.array(np.array(NICHES)[w.inf_niche]),
            "price_per_post": pa.array(w.inf_price, pa.float64(), mask=~w.inf_price_known),
            # extra columns (allowed by the contract): what the simulation did to audiences
            "sim_audience_size": pa.array(np.bincount(w.fw_inf, minlength=n_i), pa.int64()),
            "sim_audience_scale": pa.array(np.bincount(w.fw_inf, minlength=n_i) / w.inf_count),
        }
    )
    follows = pa.table(
        {
            "follower_id": _take(ids["f"], w.fw_fol),
            "influencer_id": _take(ids["i"], w.fw_inf),
            "followed_at": _ts(w.fw_from),
            "unfollowed_at": _ts_nullable(np.maximum(w.fw_to, 0), w.fw_to >= 0),
        }
    )
    brands = pa.table(
        {
            "brand_id": ids["b"],
            "category": pa.array(np.array(NICHES)[w.br_niche]),
            "avg_price": pa.array(w.br_price, pa.float64(), mask=~w.br_price_known),
        }
    )
    campaigns = pa.table(
        {
            "campaign_id": w.ids["c"],
            "brand_id": _take(ids["b"], w.ca_brand),
            "influencer_id": _take(ids["i"], w.ca_inf),
            "start_ts": _ts(w.ca_start),
            "cost": pa.array(w.ca_cost, pa.float64(), mask=~w.ca_cost_known),
        }
    )
    return {
        "follows": follows,
        "influencers": influencers,
        "brands": brands,
        "campaigns": campaigns,
    }


@dataclass(frozen=True)
class Summary:
    preset: str
    seed: int
    events: int
    followers: int
    bots: int
    follows: int
    influencers: int
    brands: int
    campaigns: int
    campaigns_closed: int
    training_rows: int
    loyal_rate: float  # realised, per exposed follower, closed campaigns
    true_rate_by_tier: dict[str, float]
    oracle_auc_holdout: float
    holdout_campaigns: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(
    preset: str, w: World, gt: pa.Table, n_events: int, seconds: float, holdout_share: float = 0.25
) -> Summary:
    """The figures a simulate run prints: rates, tier contrast, oracle AUC on held-out campaigns."""
    from sklearn.metrics import roc_auc_score

    closed = gt["window_closed"].to_numpy(zero_copy_only=False)
    start = gt["cutoff_ts"].cast(pa.int64()).to_numpy()[closed]
    p = gt["p_true"].to_numpy()[closed]
    y = gt["loyal"].to_numpy(zero_copy_only=False)[closed]
    tier = gt["tier"].to_numpy(zero_copy_only=False)[closed]
    camp = gt["campaign_id"].to_numpy(zero_copy_only=False)[closed]
    starts = np.unique(start)
    cut = starts[int(np.floor((1 - holdout_share) * (len(starts) - 1)))] if len(starts) else 0
    held = start > cut if len(starts) > 1 else np.ones(len(start), bool)
    auc = float(roc_auc_score(y[held], p[held])) if len(np.unique(y[held])) == 2 else float("nan")
    by_tier = {t: round(float(p[tier == t].mean()), 5) for t in TIERS if (tier == t).any()}
    return Summary(
        preset=preset,
        seed=w.seed,
        events=n_events,
        followers=len(w.fol_bot),
        bots=int(w.fol_bot.sum()),
        follows=len(w.fw_inf),
        influencers=len(w.inf_tier),
        brands=len(w.br_niche),
        campaigns=len(w.ca_inf),
        campaigns_closed=int((w.ca_start + LABEL_HORIZON_DAYS * DAY <= w.end).sum()),
        training_rows=int(closed.sum()),
        loyal_rate=round(float(y.mean()), 5) if len(y) else float("nan"),
        true_rate_by_tier=by_tier,
        oracle_auc_holdout=round(auc, 4),
        holdout_campaigns=len(np.unique(camp[held])),
        seconds=round(seconds, 1),
    )


def simulate(preset_name: str, seed: int) -> tuple[World, Outcomes, dict[str, pa.Table]]:
    """Entities, outcomes and entity tables. Engagement events come from `engagement_chunks`."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    w = build_world(PRESETS[preset_name], seed)
    return w, draw_outcomes(w), entity_tables(w)
