"""Point-in-time features as Ibis expressions (DuckDB in-process by default, Spark to scale).

Point-in-time rule: a feature of a spine row uses only events of UTC days strictly before the
day of its `cutoff_ts` — a subset of the events with `event_ts < cutoff_ts`, so no event at or
after the cutoff can ever contribute. Events are first reduced to daily counts per
(follower, influencer, brand, day); every window is then a range condition on day numbers,
and each spine row joins the earlier rows of its key (a range join per cutoff). The BG/NBD
features obey the rule too, the fitted parameters included: they are fitted per brand and
cutoff day on the purchases of days before it (bg_nbd_fits, at the end of this module).

Families (names carry the window in days, e.g. `fi_like_30d`):
  fi_*   follower x influencer engagement, depth, recency, follow tenure, share of attention
  f_*    follower overall: activity, influencers engaged, purchases, rebuy rate, bot signals
  fb_*   follower x brand: purchases of the brand and its category, sponsored engagement,
         the BG/NBD history (purchase days, first and last) and mean amount, and what the
         BG/NBD model fitted as of the cutoff day makes of it: P(alive), expected purchases
  inf_*  influencer as of the cutoff: size, tier, audience, engagement rate, niche match,
         sponsored posts, shrunken loyal rate of past campaigns closed before the cutoff
  br_*   brand: category, price level, buyers, rebuy rate, shrunken loyal rate of past campaigns
Features whose inputs are absent are null (or zero counts), never an error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from loyalty_model import btyd
from loyalty_model.config import FeatureConfig, LabelConfig
from loyalty_model.contract import EVENT_TYPES, TIER_EDGES
from loyalty_model.spine import audience_rows, following_at, with_labels

# 2: rebuy rates replace the repeat shares; amounts summed in cents
# 3: BG/NBD features: purchase days, days since the first purchase, mean amount (Ibis) and
#    P(alive), expected purchase days in the horizon (the fitted model; bg_nbd_fits)
FEATURE_VERSION = "3"
# the feature spec versions this package builds: each added columns and changed none of the
# earlier one's, so a model of an earlier version reads the same values it was trained on
BUILDS_VERSIONS = ("2", "3")
ENGAGEMENT = tuple(t for t in EVENT_TYPES if t != "purchase")  # in funnel order
SPINE_KEYS = ("follower_id", "influencer_id", "brand_id", "cutoff_ts")
DAY_S = 86_400
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSpec:
    """What scoring needs to rebuild exactly the training features; stored with the model."""

    version: str
    windows: tuple[int, ...]
    prior_strength: float
    horizon_days: int
    min_purchases: int
    require_attribution: bool
    names: tuple[str, ...]
    categorical: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]  # vocabulary of each categorical (codes = positions)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        d = dict(d)
        d["windows"] = tuple(d["windows"])
        d["names"] = tuple(d["names"])
        d["categorical"] = tuple(d["categorical"])
        d["categories"] = {k: tuple(v) for k, v in d["categories"].items()}
        return cls(**d)


def _daynum(ts: ir.TimestampValue) -> ir.IntegerValue:
    return (ts.epoch_seconds() // DAY_S).cast("int64")


def daily_events(events: ir.Table, before: ir.TimestampValue | None = None) -> ir.Table:
    """Events reduced to one row per (follower, influencer, brand, day) with counts per type,
    the amount in cents and the number of distinct posts; `before`: only the days before the
    day of this timestamp (the latest cutoff).

    In two steps, per post and then per day, so that the distinct posts are a count of rows
    rather than a COUNT(DISTINCT) over millions of small groups. One step (rows per post,
    `posts` summed by the families) gives the same features but took 87.6-101.5 CPU s
    against 67.8 for two steps on `medium` (benchmarks/feature_engine.py): DuckDB then
    computes the 15.7M-group aggregation once per family that reads it."""
    e = events.mutate(day=_daynum(events.event_ts))
    if before is not None:
        e = e.filter(e.day < _daynum(before))
    keys = ["follower_id", "influencer_id", "brand_id", "day"]
    aggs = {f"n_{t}": (e.event_type == t).sum().cast("int64") for t in (*ENGAGEMENT, "purchase")}
    # money in whole cents: integer sums do not depend on the order a parallel engine adds in,
    # so features (and the model fitted on them) are the same on every run
    aggs["amount_cents"] = (e.amount * 100).round().cast("int64").sum()
    per_post = e.group_by([*keys, "post_id"]).aggregate(**aggs)
    sums = {c: per_post[c].sum().cast("int64") for c in aggs}
    return per_post.group_by(keys).aggregate(**sums, posts=per_post.post_id.count().cast("int64"))


def _in_window(day: ir.IntegerValue, cut: ir.IntegerValue, w: int | None) -> ir.BooleanValue:
    before = day < cut
    return before if w is None else before & (day >= cut - w)


def _wsum(value: ir.NumericValue, cond: ir.BooleanValue) -> ir.NumericValue:
    """Sum of `value` over the rows where `cond` holds; 0 when there are none.

    An aggregate FILTER rather than a sum of CASE WHEN cond THEN value ELSE 0: the engine
    skips the rows instead of adding zeros (the follower family's windowed sums alone took
    25 % less CPU on `small`; the whole build's time did not measurably change)."""
    return value.sum(where=cond).fill_null(0)


def _follower_influencer(
    keys: ir.Table, daily: ir.Table, follows: ir.Table, cfg: FeatureConfig
) -> ir.Table:
    k = keys.select("follower_id", "influencer_id", "cutoff_ts").distinct()
    k = k.mutate(cut=_daynum(k.cutoff_ts))
    d = daily.filter(daily.influencer_id.notnull())
    j = k.left_join(
        d, [k.follower_id == d.follower_id, k.influencer_id == d.influencer_id, d.day < k.cut]
    )
    aggs = {}
    for w in cfg.windows:
        cond = _in_window(j.day, j.cut, w)
        for t in ENGAGEMENT:
            aggs[f"fi_{t}_{w}d"] = _wsum(j[f"n_{t}"], cond)
        aggs[f"fi_posts_{w}d"] = _wsum(j.posts, cond)
    aggs["fi_days_since_engaged"] = (j.cut.max() - j.day.max()).cast("float64")
    out = j.group_by([k.follower_id, k.influencer_id, k.cutoff_ts, k.cut]).aggregate(**aggs)
    out = out.mutate(
        **{
            f"fi_depth_{w}d": (
                (out[f"fi_comment_{w}d"] + out[f"fi_share_{w}d"] + out[f"fi_save_{w}d"])
                / out[f"fi_view_{w}d"].nullif(0)
            ).cast("float64")
            for w in cfg.windows
        }
    )
    # tenure of the follow active at the cutoff
    f = follows
    ten = (
        k.join(
            f,
            [
                k.follower_id == f.follower_id,
                k.influencer_id == f.influencer_id,
                f.followed_at <= k.cutoff_ts,
            ],
        )
        .group_by([k.follower_id, k.influencer_id, k.cutoff_ts])
        .aggregate(
            fi_follow_days=((k.cutoff_ts.epoch_seconds() - f.followed_at.epoch_seconds()).min())
            / DAY_S
        )
    )
    return (
        out.drop("cut")
        .left_join(ten, ["follower_id", "influencer_id", "cutoff_ts"])
        .drop("follower_id_right", "influencer_id_right", "cutoff_ts_right")
    )


def purchase_days(daily: ir.Table, horizon: int) -> ir.Table:
    """One row per (follower, brand, purchase day), flagged `rebuy` when the follower bought the
    brand again within `horizon` days. Whether a day counts as a rebuy is known only
    `horizon` days later, so a cutoff may use the flag of days before `cut - horizon` alone
    (a next purchase at or after the cutoff is more than `horizon` days later: no rebuy)."""
    p = (
        daily.filter((daily.n_purchase > 0) & daily.brand_id.notnull())
        .select("follower_id", "brand_id", "day")
        .distinct()
    )
    w = ibis.window(group_by=[p.follower_id, p.brand_id], order_by=p.day)
    nxt = p.day.lead().over(w)
    return p.mutate(rebuy=((nxt - p.day) <= horizon).fill_null(False).cast("int64"))


def _rebuy_rate(keys: ir.Table, pdays: ir.Table, by: str, horizon: int, lookback: int | None):
    """Share of purchase days (by follower or brand) followed by another purchase of the same
    brand within the horizon: a repeat tendency that does not grow with the length of
    history, unlike counts of repeat buyers."""
    k = keys.select(by, "cutoff_ts").distinct()
    k = k.mutate(cut=_daynum(k.cutoff_ts))
    cond = [k[by] == pdays[by], pdays.day < k.cut - horizon]
    if lookback is not None:
        cond.append(pdays.day >= k.cut - horizon - lookback)
    j = k.join(pdays, cond)
    return j.group_by([k[by], k.cutoff_ts]).aggregate(_rate=j.rebuy.mean().cast("float64"))


def _follower(
    keys: ir.Table, daily: ir.Table, pdays: ir.Table, cfg: FeatureConfig, horizon: int
) -> ir.Table:
    k = keys.select("follower_id", "cutoff_ts").distinct()
    k = k.mutate(cut=_daynum(k.cutoff_ts))
    j = k.left_join(daily, [k.follower_id == daily.follower_id, daily.day < k.cut])
    eng = sum(j[f"n_{t}"] for t in ENGAGEMENT)
    aggs = {}
    for w in cfg.windows:
        cond = _in_window(j.day, j.cut, w)
        aggs[f"f_events_{w}d"] = _wsum(eng, cond)
        aggs[f"f_purchases_{w}d"] = _wsum(j.n_purchase, cond)
        aggs[f"f_amount_{w}d"] = (_wsum(j.amount_cents.fill_null(0), cond) / 100).cast("float64")
    wmax = max(cfg.windows)
    cmax = _in_window(j.day, j.cut, wmax)
    aggs[f"f_influencers_{wmax}d"] = j.influencer_id.nunique(
        where=cmax & j.influencer_id.notnull() & (eng > 0)
    )
    aggs[f"f_active_days_{wmax}d"] = j.day.nunique(where=cmax & (eng > 0))
    for t in ("like", "comment", "click", "share", "save", "view"):
        aggs[f"_all_{t}"] = j[f"n_{t}"].sum()
    aggs["f_purchases_all"] = j.n_purchase.sum().fill_null(0)
    aggs["f_brands_purchased"] = j.brand_id.nunique(where=j.n_purchase > 0)
    aggs["f_days_since_purchase"] = (j.cut.max() - j.day.max(where=j.n_purchase > 0)).cast(
        "float64"
    )
    aggs["f_days_since_active"] = (j.cut.max() - j.day.max(where=eng > 0)).cast("float64")
    out = j.group_by([k.follower_id, k.cutoff_ts]).aggregate(**aggs)
    likes = out._all_like.fill_null(0)
    active = out._all_comment + out._all_click + out._all_share + out._all_save
    out = out.mutate(
        # bot-likeness: likes but never a comment, click, share or save; likes per view
        f_like_only=((likes > 0) & (active.fill_null(0) == 0)).cast("int8"),
        f_like_per_view=(likes / out._all_view.nullif(0)).cast("float64"),
        f_events_per_active_day=(
            out[f"f_events_{wmax}d"] / out[f"f_active_days_{wmax}d"].nullif(0)
        ).cast("float64"),
    )
    out = out.drop(*[c for c in out.columns if c.startswith("_all_")])
    rebuy = _rebuy_rate(keys, pdays, "follower_id", horizon, None).rename(f_rebuy_rate="_rate")
    return out.left_join(rebuy, ["follower_id", "cutoff_ts"]).drop(
        "follower_id_right", "cutoff_ts_right"
    )


def _follower_brand(
    keys: ir.Table, daily: ir.Table, tables: dict[str, ir.Table], cfg: FeatureConfig
) -> ir.Table:
    k = keys.select("follower_id", "brand_id", "cutoff_ts").distinct()
    k = k.mutate(cut=_daynum(k.cutoff_ts))
    b = tables["brands"].select("brand_id", "category")
    i = tables["influencers"].select("influencer_id", inf_cat="category")
    k = k.left_join(b, "brand_id").drop("brand_id_right").rename(brand_cat="category")
    d = (
        daily.left_join(b, "brand_id")
        .drop("brand_id_right")
        .left_join(i, "influencer_id")
        .drop("influencer_id_right")
    )
    j = k.left_join(d, [k.follower_id == d.follower_id, d.day < k.cut])
    same = j.brand_id_right == j.brand_id
    same_cat = j.category == j.brand_cat
    eng = sum(j[f"n_{t}"] for t in ENGAGEMENT)
    wmax = max(cfg.windows)
    cmax = _in_window(j.day, j.cut, wmax)
    bought = same & (j.n_purchase > 0)
    aggs = {
        "fb_purchases_all": _wsum(j.n_purchase, same),
        # BG/NBD's history (btyd.py, bg_nbd_histories): frequency in purchase days, recency
        # (fb_days_since_purchase) and age from the first purchase day of the brand
        "fb_purchase_days_all": j.day.nunique(where=bought),
        "fb_days_since_first_purchase": (j.cut.max() - j.day.min(where=bought)).cast("float64"),
        # monetary value: the mean amount of a purchase of the brand (whole cents summed, one
        # division: the same double on every engine)
        "_amount_cents": _wsum(j.amount_cents, bought),
        f"fb_purchases_{wmax}d": _wsum(j.n_purchase, same & cmax),
        "fb_category_purchases_all": _wsum(j.n_purchase, same_cat),
        f"fb_sponsored_engagement_{wmax}d": _wsum(eng, same & cmax),
        f"fb_sponsored_clicks_{wmax}d": _wsum(j.n_click, same & cmax),
        "fb_days_since_purchase": (j.cut.max() - j.day.max(where=bought)).cast("float64"),
        "_cat_eng": _wsum(eng, cmax & (j.inf_cat == j.brand_cat)),
        "_eng": _wsum(eng, cmax),
    }
    out = j.group_by([k.follower_id, k.brand_id, k.cutoff_ts]).aggregate(**aggs)
    # how much of the follower's attention goes to creators of the brand's category
    share = (out._cat_eng / out._eng.nullif(0)).cast("float64")
    mean = (out._amount_cents / (out.fb_purchases_all * 100).nullif(0)).cast("float64")
    return out.mutate(**{f"fb_category_engagement_share_{wmax}d": share}, fb_amount_mean=mean).drop(
        "_cat_eng", "_eng", "_amount_cents"
    )


def _brand(
    keys: ir.Table,
    daily: ir.Table,
    pdays: ir.Table,
    outcomes: ir.Table,
    cfg: FeatureConfig,
    horizon: int,
) -> ir.Table:
    """Brand as of the cutoff: loyal rate of its closed campaigns, buyers, rebuy rate over the
    last year of purchase days whose horizon has closed."""
    bc = keys.select("brand_id", "cutoff_ts").distinct()
    bc = bc.mutate(cut=_daynum(bc.cutoff_ts))
    p = daily.filter((daily.n_purchase > 0) & daily.brand_id.notnull())
    j = bc.join(p, [bc.brand_id == p.brand_id, p.day < bc.cut])
    buyers = j.group_by([bc.brand_id, bc.cutoff_ts]).aggregate(br_buyers=j.follower_id.nunique())
    past = _past_rates(bc.select("brand_id", "cutoff_ts"), outcomes, "brand_id", "br", cfg)
    rebuy = _rebuy_rate(keys, pdays, "brand_id", horizon, 365).rename(br_rebuy_rate="_rate")
    out = bc.select("brand_id", "cutoff_ts")
    for part in (buyers, past, rebuy):
        out = out.left_join(part, ["brand_id", "cutoff_ts"]).drop(
            "brand_id_right", "cutoff_ts_right"
        )
    return out.mutate(br_buyers=lambda t: t.br_buyers.fill_null(0))


def _tier(count: ir.NumericValue) -> ir.IntegerValue:
    t = ibis.literal(0)
    for i, edge in enumerate(TIER_EDGES, start=1):
        t = (count >= edge).ifelse(i, t)
    return t.cast("int8")


def _influencer(
    keys: ir.Table,
    tables: dict[str, ir.Table],
    outcomes: ir.Table,
    cfg: FeatureConfig,
) -> ir.Table:
    k = keys.select("influencer_id", "brand_id", "cutoff_ts").distinct()
    k = k.mutate(cut=_daynum(k.cutoff_ts))
    inf = tables["influencers"].select("influencer_id", "follower_count", inf_cat="category")
    br = tables["brands"].select("brand_id", br_cat="category", avg_price="avg_price")
    ic = k.select("influencer_id", "cutoff_ts", "cut").distinct()
    # audience at the cutoff
    f = tables["follows"]
    aud = (
        ic.join(
            f,
            [ic.influencer_id == f.influencer_id, following_at(f, ic.cutoff_ts)],
        )
        .group_by([ic.influencer_id, ic.cutoff_ts])
        .aggregate(inf_audience=f.follower_id.nunique())
    )
    # engagement and days with sponsored posts engaged (a brand and a post: not an attributed
    # purchase) over the last 90 days, from the influencer's days: far fewer rows than daily
    ev = tables["events"]
    e = ev.filter(ev.influencer_id.notnull()).mutate(day=_daynum(ev.event_ts))
    per_day = e.group_by(["influencer_id", "day"]).aggregate(
        eng=e.event_type.isin(["like", "comment", "share", "save"]).cast("int64").sum(),
        views=(e.event_type == "view").cast("int64").sum(),
        sponsored=(e.brand_id.notnull() & e.post_id.notnull()).any(),
    )
    j = ic.left_join(
        per_day, [ic.influencer_id == per_day.influencer_id, _in_window(per_day.day, ic.cut, 90)]
    )
    eng90 = j.group_by([ic.influencer_id, ic.cutoff_ts]).aggregate(
        _eng=j.eng.sum(),
        _views=j.views.sum(),
        inf_sponsored_days_90d=j.day.nunique(where=j.sponsored),
    )
    # posts published, seen as the first day anyone engaged with them
    posts = (
        ev.filter(ev.post_id.notnull() & ev.influencer_id.notnull())
        .group_by(["influencer_id", "post_id"])
        .aggregate(first_day=_daynum(ev.event_ts.min()))
    )
    jp = ic.left_join(posts, [ic.influencer_id == posts.influencer_id, posts.first_day < ic.cut])
    n_posts = jp.group_by([ic.influencer_id, ic.cutoff_ts]).aggregate(
        **{
            f"inf_posts_{w}d": jp.count(where=_in_window(jp.first_day, jp.cut, w))
            for w in cfg.windows
        }
    )
    past = _past_rates(ic, outcomes, "influencer_id", "inf", cfg)
    out = (
        k.left_join(inf, "influencer_id")
        .drop("influencer_id_right")
        .left_join(br, "brand_id")
        .drop("brand_id_right")
    )
    for extra in (aud, eng90, n_posts, past):
        out = out.left_join(extra, ["influencer_id", "cutoff_ts"]).drop(
            "influencer_id_right", "cutoff_ts_right"
        )
    out = out.mutate(
        inf_log_followers=(out.follower_count.cast("float64") + 1).ln(),
        inf_tier=_tier(out.follower_count),
        inf_engagement_rate_90d=(out._eng / out.inf_audience.nullif(0)).cast("float64"),
        inf_like_per_view_90d=(out._eng / out._views.nullif(0)).cast("float64"),
        inf_category_match=(out.inf_cat == out.br_cat).cast("int8"),
        br_log_price=(out.avg_price + 1).ln(),
        inf_category=out.inf_cat,
        br_category=out.br_cat,
    )
    return out.drop("follower_count", "inf_cat", "br_cat", "avg_price", "_eng", "_views", "cut")


def campaign_outcomes(tables: dict[str, ir.Table], label: LabelConfig) -> ir.Table:
    """Per campaign: followers at start, loyal followers, and when its label window closes."""
    rows = with_labels(
        audience_rows(tables["campaigns"], tables["follows"]), tables["events"], label
    )
    per = rows.group_by(["campaign_id", "influencer_id", "brand_id", "cutoff_ts"]).aggregate(
        n=rows.label.count(), y=rows.label.sum()
    )
    return per.mutate(closes=per.cutoff_ts + ibis.interval(days=label.horizon_days))


def _past_rates(
    keys: ir.Table, outcomes: ir.Table, by: str, prefix: str, cfg: FeatureConfig
) -> ir.Table:
    """Loyal rate of earlier campaigns (of the same influencer or brand) whose label window
    closed before the cutoff, shrunk toward the pooled rate of all such campaigns."""
    per = outcomes
    k = keys.select(by, "cutoff_ts").distinct()
    cuts = k.select("cutoff_ts").distinct()
    pooled = (
        cuts.join(per, per.closes <= cuts.cutoff_ts)
        .group_by(cuts.cutoff_ts)
        .aggregate(_pn=per.n.sum(), _py=per.y.sum())
    )
    mine = (
        k.join(per, [per[by] == k[by], per.closes <= k.cutoff_ts])
        .group_by([k[by], k.cutoff_ts])
        .aggregate(_c=per.campaign_id.nunique(), _n=per.n.sum(), _y=per.y.sum())
    )
    out = (
        k.left_join(mine, [by, "cutoff_ts"])
        .drop(f"{by}_right", "cutoff_ts_right")
        .left_join(pooled, "cutoff_ts")
        .drop("cutoff_ts_right")
    )
    prior = (out._py / out._pn.nullif(0)).cast("float64")
    a = cfg.prior_strength
    rate = (out._y.fill_null(0) + a * prior) / (out._n.fill_null(0) + a)
    return out.mutate(
        **{
            f"{prefix}_past_campaigns": out._c.fill_null(0),
            f"{prefix}_past_loyal_rate": rate.cast("float64"),
        }
    ).drop("_c", "_n", "_y", "_pn", "_py")


def build_features(
    spine: ir.Table, tables: dict[str, ir.Table], cfg: FeatureConfig, label: LabelConfig
) -> ir.Table:
    """The spine with every feature column appended (one expression; nothing runs yet)."""
    keys = spine.select(*SPINE_KEYS).distinct()
    # no feature reads a day at or after the latest cutoff (the rebuy flags of purchase_days
    # included: a purchase after it is more than a horizon after any day they are used for)
    daily = daily_events(tables["events"], before=keys.cutoff_ts.max())
    outcomes = campaign_outcomes(tables, label)
    pdays = purchase_days(daily, label.horizon_days)
    fi = _follower_influencer(keys, daily, tables["follows"], cfg)
    fo = _follower(keys, daily, pdays, cfg, label.horizon_days)
    fb = _follower_brand(keys, daily, tables, cfg)
    inf = _influencer(keys, tables, outcomes, cfg)
    br = _brand(keys, daily, pdays, outcomes, cfg, label.horizon_days)
    out = spine
    for part, on in (
        (fi, ["follower_id", "influencer_id", "cutoff_ts"]),
        (fo, ["follower_id", "cutoff_ts"]),
        (fb, ["follower_id", "brand_id", "cutoff_ts"]),
        (inf, ["influencer_id", "brand_id", "cutoff_ts"]),
        (br, ["brand_id", "cutoff_ts"]),
    ):
        out = out.left_join(part, on).drop(*[f"{c}_right" for c in on])
    # share of the follower's attention this influencer gets
    wmax = max(cfg.windows)
    fi_all = sum(out[f"fi_{t}_{wmax}d"] for t in ENGAGEMENT)
    out = out.mutate(
        fi_attention_share=(fi_all / out[f"f_events_{wmax}d"].nullif(0)).cast("float64"),
        # share of the influencer's posts the follower engaged with: exposure-adjusted affinity
        **{
            f"fi_post_share_{w}d": (out[f"fi_posts_{w}d"] / out[f"inf_posts_{w}d"].nullif(0)).cast(
                "float64"
            )
            for w in cfg.windows
        },
    )
    return out


CATEGORICAL = ("inf_category", "br_category")


def feature_names(frame_columns: list[str], spine_columns: list[str]) -> tuple[str, ...]:
    return tuple(c for c in frame_columns if c not in spine_columns)


# -- BG/NBD features: the fitted repeat-buying model's view of each follower x brand ---------
#
# A spine row's history of the brand is three of its Ibis features (bg_nbd_histories). The
# model's parameters are fitted per (brand, cutoff day) on every follower who bought the
# brand on a day before that cutoff day (bg_nbd_populations: from the events, not from the
# spine, so that training and scoring fit the same population whichever rows are scored),
# so P(alive) and the expected purchases of a row use no day at or after its cutoff day, the
# parameters included. BG/NBD's time is in days and a transaction is a purchase day (two
# purchases of the brand on one day are one: the model's clock cannot tell them apart).


# a (brand, cutoff day) whose population has fewer buyers than this, or nobody who bought on
# a second day, gets no fit: its rows' BG/NBD features are NaN, as they are for a follower
# who never bought the brand
BG_NBD_MIN_BUYERS = btyd.MIN_CUSTOMERS
# the columns of a feature frame the BG/NBD features are computed from
BG_NBD_INPUTS = (
    "brand_id",
    "cutoff_ts",
    "fb_purchase_days_all",
    "fb_days_since_purchase",
    "fb_days_since_first_purchase",
)
_EPOCH = pd.Timestamp(0, tz="UTC")


def bg_nbd_columns(horizon_days: int) -> tuple[str, ...]:
    """The names of the BG/NBD features (added to a collected frame by BGNBDFits.apply)."""
    return ("fb_p_alive", f"fb_expected_purchase_days_{horizon_days}d")


def cut_days(cutoff_ts) -> np.ndarray:
    """The UTC day number of each cutoff, as the Ibis features compute it (`_daynum`); naive
    timestamps are UTC."""
    ts = pd.to_datetime(pd.Series(cutoff_ts), utc=True)
    return ((ts - _EPOCH) // pd.Timedelta(days=1)).to_numpy(dtype="int64")


def bg_nbd_histories(
    frame: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(buyer, x, t_x, T) of each row of a feature frame, in days: repeat purchase days
    x = fb_purchase_days_all - 1, age T = fb_days_since_first_purchase (first purchase day to
    the cutoff day), t_x = T - fb_days_since_purchase (first to last purchase day). Rows
    without a purchase of the brand before the cutoff day (buyer False) get zeros."""
    days = frame["fb_purchase_days_all"].astype("float64").fillna(0).to_numpy()
    recency = frame["fb_days_since_purchase"].astype("float64").to_numpy()
    age = frame["fb_days_since_first_purchase"].astype("float64").to_numpy()
    buyer = (days >= 1) & ~np.isnan(recency) & ~np.isnan(age)
    x = np.where(buyer, days - 1, 0.0)
    T = np.where(buyer, age, 0.0)
    return buyer, x, np.where(buyer, age - recency, 0.0), T


def bg_nbd_populations(pairs: ir.Table, events: ir.Table) -> ir.Table:
    """For each (brand_id, cut) of `pairs` (cut: a UTC day number), every follower who bought
    the brand on a day before `cut`, as of `cut` (the history bg_nbd_histories reads from a
    row's features), compressed to the distinct (x, t_x, T) and the number of followers of
    each (`customers`): small enough to collect (a few thousand rows per pair)."""
    e = events.filter((events.event_type == "purchase") & events.brand_id.notnull())
    p = e.select("follower_id", "brand_id", day=_daynum(e.event_ts)).distinct()
    j = pairs.join(p, [pairs.brand_id == p.brand_id, p.day < pairs.cut])
    per = j.group_by([pairs.brand_id, pairs.cut, p.follower_id]).aggregate(
        days=j.day.count(), first=j.day.min(), last=j.day.max()
    )
    per = per.select(
        "brand_id",
        "cut",
        x=(per.days - 1).cast("int64"),
        t_x=(per["last"] - per["first"]).cast("int64"),
        T=(per.cut - per["first"]).cast("int64"),
    )
    return per.group_by(["brand_id", "cut", "x", "t_x", "T"]).aggregate(
        customers=per.count().cast("int64")
    )


@dataclass(frozen=True)
class BGNBDFits:
    """BG/NBD parameters per (brand, cutoff day), and the features they give a frame.

    `params`: one row per (brand_id, cut): r, alpha, a, b (NaN where there was no fit),
    buyers and repeat_buyers (followers who bought on two days or more) of its population,
    converged. `seconds`: the time the fits took."""

    horizon_days: int
    params: pd.DataFrame
    seconds: float = 0.0

    @classmethod
    def empty(cls, horizon_days: int) -> BGNBDFits:
        """No fit: every row's BG/NBD features are NaN."""
        params = pd.DataFrame({c: pd.Series(dtype="float64") for c in _PARAM_COLUMNS})
        params = params.astype({"brand_id": "object", "cut": "int64"}).assign(converged=False)
        return cls(horizon_days, params)

    @property
    def fits(self) -> int:
        return int(self.params["r"].notna().sum())

    def columns(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """P(alive) (btyd.p_alive) and the expected purchase days in the next horizon_days
        (btyd.expected_purchases) of each row of `frame` (its BG_NBD_INPUTS), with the
        parameters of its brand and cutoff day; NaN for a row without a purchase of the
        brand before its cutoff day or without a fit."""
        n = len(frame)
        alive, expected = np.full(n, np.nan), np.full(n, np.nan)
        fitted = self.params[self.params["r"].notna()].reset_index(drop=True)
        buyer, x, t_x, T = bg_nbd_histories(frame)
        if buyer.any() and len(fitted):
            keys = pd.MultiIndex.from_arrays(
                [fitted["brand_id"].astype(str), fitted["cut"].astype("int64")]
            )
            rows = np.flatnonzero(buyer)
            which = keys.get_indexer(
                pd.MultiIndex.from_arrays(
                    [
                        frame["brand_id"].astype(str).to_numpy()[rows],
                        cut_days(frame["cutoff_ts"].iloc[rows]),
                    ]
                )
            )
            rows, which = rows[which >= 0], which[which >= 0]
            order = np.argsort(which, kind="stable")
            rows, which = rows[order], which[order]
            starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
            for lo, hi in zip(starts, np.r_[starts[1:], len(rows)], strict=True):
                m = rows[lo:hi]
                p = fitted.loc[which[lo], ["r", "alpha", "a", "b"]].to_numpy(dtype="float64")
                alive[m] = btyd.p_alive(p, x[m], t_x[m], T[m])
                expected[m] = btyd.expected_purchases(p, self.horizon_days, x[m], t_x[m], T[m])
        return dict(zip(bg_nbd_columns(self.horizon_days), (alive, expected), strict=True))

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`frame` with the BG/NBD features appended (a new frame; the input is unchanged).
        The one step every path takes after the Ibis features: training, scoring in
        batches, Spark's executors."""
        out = frame.copy(deep=False)
        for name, values in self.columns(frame).items():
            out[name] = values
        return out


_PARAM_COLUMNS = ("brand_id", "cut", "r", "alpha", "a", "b", "buyers", "repeat_buyers")


def fit_populations(pop: pd.DataFrame, pairs: pd.DataFrame, horizon_days: int) -> BGNBDFits:
    """One BG/NBD fit (btyd.fit_bg_nbd) per (brand_id, cut) of `pairs` on its population
    (bg_nbd_populations, collected), where it has BG_NBD_MIN_BUYERS buyers and a repeat
    buyer. Each fit starts from the same default point: a (brand, day)'s parameters depend
    on its population alone, not on which other cutoffs are fitted with it."""
    t0 = time.perf_counter()
    groups = dict(iter(pop.groupby(["brand_id", "cut"], sort=False)))
    rows = []
    for b, c in sorted({(str(b), int(c)) for b, c in pairs[["brand_id", "cut"]].itertuples(False)}):
        g = groups.get((b, c))
        w = np.zeros(0) if g is None else g["customers"].to_numpy(dtype="float64")
        x = np.zeros(0) if g is None else g["x"].to_numpy(dtype="float64")
        row = {"brand_id": b, "cut": c, "buyers": w.sum(), "repeat_buyers": w[x > 0].sum()}
        if row["buyers"] >= BG_NBD_MIN_BUYERS and row["repeat_buyers"] > 0:
            t_x, T = g["t_x"].to_numpy(dtype="float64"), g["T"].to_numpy(dtype="float64")
            f = btyd.fit_bg_nbd(x, t_x, T, w)
            row.update(r=f.r, alpha=f.alpha, a=f.a, b=f.b, converged=f.converged)
        rows.append(row)
    params = pd.DataFrame(rows).reindex(columns=[*_PARAM_COLUMNS, "converged"])
    params = params.astype({c: "float64" for c in _PARAM_COLUMNS[2:]} | {"cut": "int64"})
    params["converged"] = params["converged"].eq(True)  # False without a fit
    return BGNBDFits(horizon_days, params, time.perf_counter() - t0)


def bg_nbd_fits(pairs: pd.DataFrame, events: ir.Table, horizon_days: int) -> BGNBDFits:
    """The BG/NBD fits for the (brand_id, cutoff_ts) of `pairs` (any rows: one fit per
    brand and cutoff day): their populations are built on the engine of `events` (DuckDB or
    Spark), collected, and fitted here."""
    keys = pd.DataFrame(
        {
            "brand_id": pairs["brand_id"].astype(str).to_numpy(),
            "cut": cut_days(pairs["cutoff_ts"]),
        }
    ).drop_duplicates(ignore_index=True)
    if keys.empty:
        return BGNBDFits.empty(horizon_days)
    schema = {"brand_id": "string", "cut": "int64"}
    t0 = time.perf_counter()
    pop = bg_nbd_populations(ibis.memtable(keys, schema=schema), events).to_pyarrow().to_pandas()
    built = time.perf_counter() - t0
    fits = fit_populations(pop, keys, horizon_days)
    log.info(
        "bg_nbd features: %d (brand, cutoff day) populations (%d distinct histories) built in "
        "%.2f s; %d fitted in %.2f s (%d converged), %d without enough buyers (NaN)",
        len(keys),
        len(pop),
        built,
        fits.fits,
        fits.seconds,
        int(fits.params["converged"].sum()),
        len(keys) - fits.fits,
    )
    return fits


def collect_features(
    spine: ir.Table, tables: dict[str, ir.Table], cfg: FeatureConfig, label: LabelConfig
) -> pd.DataFrame:
    """The spine with every feature, collected: build_features run on the tables' engine,
    then the BG/NBD features of its brands and cutoff days."""
    frame = build_features(spine, tables, cfg, label).to_pyarrow().to_pandas()
    fits = bg_nbd_fits(frame[["brand_id", "cutoff_ts"]], tables["events"], label.horizon_days)
    return fits.apply(frame)
