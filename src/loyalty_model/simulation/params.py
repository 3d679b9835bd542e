"""The knobs of the simulated world: sizes per preset, and every behavioural coefficient, named.

`Preset` says how big a world is; `Params` says how its people and influencers behave and is
the same for every preset (rates do not depend on the size of the world). Coefficients called
"logit" add to the log-odds of a probability; "per day" are rates of Poisson processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from loyalty_model.contract import TIER_EDGES, TIERS

DAY = 86_400  # seconds
WORLD_START = int(np.datetime64("2024-01-01T00:00:00", "s").astype(np.int64))  # a Monday
LABEL_HORIZON_DAYS = 90  # ground truth refers to the default label: >= 2 purchases in 90 days
LABEL_MIN_PURCHASES = 2

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


@dataclass(frozen=True)
class Preset:
    """Size knobs of a simulated world.

    The world's people are a uniform sample of a population: every person is in it with
    probability `sample_fraction`, with all their follows. An influencer with N followers
    therefore has Binomial(N, sample_fraction) of them in the data, the same fraction for
    every influencer, and audiences overlap in the sample as they do in the population."""

    n_influencers: int
    n_brands: int
    n_followers: int  # people drawn at least (more when the largest audience needs more)
    sample_fraction: float  # inclusion probability of every person
    days: int = 730
    warmup_days: int = 150  # history before the first campaign wave
    bot_share: float = 0.12  # share of accounts that are bots
    view_rate: float = 0.05  # scales how often a follower sees a post
    chunk_follows: int = 250_000  # follows per event chunk (bounds memory)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        n_influencers=12,
        n_brands=10,
        n_followers=1_600,
        sample_fraction=0.0012,
        days=400,
        warmup_days=120,
    ),
    "small": Preset(n_influencers=250, n_brands=40, n_followers=45_000, sample_fraction=0.0015),
    "medium": Preset(
        n_influencers=2_000, n_brands=120, n_followers=450_000, sample_fraction=0.0015
    ),
    "large": Preset(
        n_influencers=15_000, n_brands=400, n_followers=4_500_000, sample_fraction=0.0015
    ),
}


@dataclass(frozen=True)
class InfluencerParams:
    min_followers: float = 1e3  # smallest nominal follower count (bottom of nano)
    max_followers: float = 2e7  # largest (top of mega); tiers in between by contract.TIER_EDGES
    tier_share: tuple[float, ...] = (0.42, 0.33, 0.14, 0.07, 0.04)  # of influencers, nano..mega
    # logit bonus of follower affinity: small accounts feel closer to their followers
    tier_affinity: tuple[float, ...] = (1.3, 0.8, 0.1, -0.6, -1.0)
    tier_posts_per_week: tuple[float, ...] = (2.0, 2.6, 3.2, 3.8, 4.5)
    # price per post = price_scale * follower_count ** price_exponent * lognormal(0, price_sd)
    price_scale: float = 0.25
    price_exponent: float = 0.8
    price_sd: float = 0.25
    price_unknown_share: float = 0.1  # influencers whose price is missing from the data
    # bought audiences: accounts up to this tier (0 = nano) may have bought followers ...
    bought_max_tier: int = 2
    bought_share: float = 0.18  # ... with this probability ...
    bought_bot_share: tuple[float, float] = (0.25, 0.70)  # ... and then this share of bots
    organic_bot_beta: tuple[float, float] = (2.0, 22.0)  # bot share of the others: Beta(a, b)
    persuasion_sd: float = 0.35  # logit of conversion: how well the influencer sells
    quality_sd: float = 0.3  # logit of affinity: how much followers like the content

    def tier_bounds(self) -> np.ndarray:
        """(lower, upper) nominal follower count of each tier, shape (tiers, 2)."""
        edges = (self.min_followers, *TIER_EDGES, self.max_followers)
        return np.array([(edges[t], edges[t + 1]) for t in range(len(TIERS))])


@dataclass(frozen=True)
class BrandParams:
    price_median: float = 35.0  # typical price of one purchase
    price_sd: float = 0.8  # lognormal spread of brand price levels
    price_unknown_share: float = 0.15  # brands whose avg_price is missing from the data
    appeal_sd: float = 0.3  # logit of conversion: how attractive the brand is
    repeat_sd: float = 0.5  # logit of buying again: how habit-forming the brand is


@dataclass(frozen=True)
class FollowerParams:
    extra_interest_probs: tuple[float, ...] = (0.6, 0.3)  # chances of a 2nd and a 3rd interest
    activity_sd: float = 0.5  # lognormal: how much a follower looks at content
    # hidden loyalty propensity zl = corr * zp + sqrt(1 - corr^2) * N(0, 1)
    loyalty_purchase_corr: float = 0.3
    sociability_sd: float = 0.8  # lognormal: how many accounts a follower follows
    # background purchases per day = per_year / 365 * exp(zp_effect * zp - zp_effect^2 / 2)
    # (the correction keeps the mean at per_year whatever zp_effect is)
    background_per_year: float = 3.0
    background_zp_effect: float = 0.7
    # share of background purchases on the two favourite brands: sigmoid(a * zl + b)
    favourite_loyalty: float = 1.2
    favourite_intercept: float = -0.8
    interest_brand_weight: float = 3.0  # brands of a follower's interests are this much likelier


@dataclass(frozen=True)
class FollowParams:
    # people drawn: at least this many times the largest audience, so that an audience is a
    # small enough share of the people it is drawn from (without replacement)
    people_per_largest_audience: float = 4.0
    niche_match_share: float = 0.65  # of an influencer's genuine followers, share from its niche
    niche_pool_max_share: float = 0.9  # at most this share of a niche's people follow one account
    older_share: float = 0.55  # follows that started before the world does
    older_mean_days: float = 400  # exponential: how long before the start they began
    duration_mean_days: float = 300  # exponential: how long a follow lasts if it ends
    unfollow_share: float = 0.2  # follows that end (if the end falls inside the world)
    last_follow_margin_days: int = 30  # no follow starts in the world's last days
    # a bought audience arrives at one moment per influencer, drawn from a year before the
    # world starts to this many days after it ends (so some arrive before, some never) ...
    bot_wave_days_before: int = 365
    bot_wave_days_after_end: int = 300
    bot_arrival_days: float = 3  # ... all its bots within this many days
    # follower-influencer affinity = sigmoid(intercept + tier + match * interest + quality + noise)
    affinity_intercept: float = -1.1
    affinity_interest_match: float = 1.2
    affinity_noise_sd: float = 0.9


@dataclass(frozen=True)
class PostParams:
    sponsored_share: float = 0.08  # organic posts sponsored by a brand of the influencer's niche
    # weekly (Mon..Sun) and daily (UTC hour) profile of posting
    day_of_week: tuple[float, ...] = (0.85, 0.9, 1.0, 0.95, 1.05, 1.2, 1.3)
    hour_of_day: tuple[float, ...] = (
        2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 7, 7, 6, 6, 7, 8, 9, 10, 10, 9, 6, 4,
    )  # fmt: skip


@dataclass(frozen=True)
class CampaignParams:
    first_wave_jitter_days: int = 60  # first wave: warm-up plus up to this many days
    extra_influencers_mean: float = 1.3  # influencers per wave = 1 + Poisson(this), at most all
    niche_weight: float = 4.0  # influencers of the brand's niche are this much likelier
    # days between a brand's waves: horizon + [gap_min, gap_max), so label windows never overlap
    gap_min_days: int = 5
    gap_max_days: int = 70
    last_wave_margin_days: int = 20  # no wave starts in the last days of the world
    start_hour: int = 17  # UTC hour of a wave's start
    cost_sd: float = 0.15  # campaign cost = price per post * lognormal(0, cost_sd)
    cost_unknown_share: float = 0.1


@dataclass(frozen=True)
class EngagementParams:
    bot_view_factor: float = 2.5  # bots see this many times view_rate of the posts
    view_base: float = 0.25  # p(view) = view_rate * activity * (view_base + view_affinity * aff)
    view_affinity: float = 1.6
    view_max: float = 0.95
    bot_delay_s: float = 600  # bots act within minutes of a post: bursts
    # people within hours: exponential(human_delay_h) times (a - b * min(activity, cap)),
    # so that active people come sooner
    human_delay_h: float = 16
    human_delay_activity: tuple[float, float, float] = (1.5, 0.5, 2.0)  # (a, b, cap)
    action_lag_s: tuple[int, int] = (5, 600)  # a like, comment, ... this long after the view
    # per view: p = base + slope * affinity ** power (bots: bot)
    like: tuple[float, float, float] = (0.05, 0.45, 1.0)
    bot_like: float = 0.75
    comment: tuple[float, float, float] = (0.006, 0.09, 1.5)
    bot_comment: float = 0.002
    share: tuple[float, float, float] = (0.003, 0.04, 1.5)
    save: tuple[float, float, float] = (0.004, 0.05, 1.0)  # times sigmoid(zp + save_zp_shift)
    click: tuple[float, float, float] = (0.002, 0.02, 1.0)  # times sigmoid(zp + click_zp_shift)
    save_zp_shift: float = 0.0  # purchase propensity makes saves and clicks likelier
    click_zp_shift: float = 1.0
    click_brand_match: float = 3.0  # clicks on a sponsored post of a brand in one's interests


@dataclass(frozen=True)
class OutcomeParams:
    """How a campaign turns followers into buyers and buyers into loyal customers."""

    # conversion (first purchase) logit: intercept + affinity * aff + brand match + zp + the
    # influencer's persuasion + the brand's appeal - price elasticity * log(price / median)
    # + the campaign's own effect
    conversion_intercept: float = -5.3
    conversion_affinity: float = 3.2
    conversion_brand_match: float = 1.0
    conversion_purchase_propensity: float = 0.6
    conversion_price_elasticity: float = 0.25
    campaign_effect_sd: float = 0.25  # how well a campaign lands: hidden from every feature
    # repeat (second purchase within the horizon, given a conversion) logit
    repeat_intercept: float = -0.9
    repeat_loyalty: float = 1.4
    repeat_brand_match: float = 0.5
    third_purchase: float = 0.35  # a repeat buyer buys a third time in the window
    first_purchase_mean_days: float = 9  # exponential delay from campaign start ...
    first_purchase_max_share: float = 0.7  # ... capped at this share of the horizon
    attributed_share: float = 0.55  # first purchases carrying a promo code of the influencer
    click_share: float = 0.7  # converters who click the campaign post first ...
    click_lead_s: tuple[int, int] = (60, 6 * 3600)  # ... this long before buying
    # after the window: purchase rate per day of loyal converts and of one-off buyers
    loyal_rebuy_per_day: float = 1 / 45
    one_off_rebuy_per_day: float = 1 / 400
    amount_sd: float = 0.3  # purchase amount = brand price * lognormal(0, amount_sd)


@dataclass(frozen=True)
class Params:
    """Every behavioural coefficient of the world, grouped by what it describes."""

    influencers: InfluencerParams = field(default_factory=InfluencerParams)
    brands: BrandParams = field(default_factory=BrandParams)
    followers: FollowerParams = field(default_factory=FollowerParams)
    follows: FollowParams = field(default_factory=FollowParams)
    posts: PostParams = field(default_factory=PostParams)
    campaigns: CampaignParams = field(default_factory=CampaignParams)
    engagement: EngagementParams = field(default_factory=EngagementParams)
    outcomes: OutcomeParams = field(default_factory=OutcomeParams)


PARAMS = Params()
