"""The feature build as it was at commit 3994dea (FEATURE_VERSION 2), before it was optimised:
each spine row joins every earlier daily row of its key, and the daily rows come from two
aggregations (per post, then per day). Straightforward; kept, with its own daily_events, as
the reference the optimised build must equal bit for bit (tests/unit/test_feature_parity.py).
Only campaign_outcomes, purchase_days, _past_rates and _tier come from the package (unchanged
since). Version 3 added three follower x brand columns, written here the same
straightforward way, and the BG/NBD features, whose reference (reference_bg_nbd) starts from
the raw events in pandas: the histories and populations, then btyd's fit and functions."""

from __future__ import annotations

import ibis.expr.types as ir
import numpy as np
import pandas as pd

from loyalty_model import btyd
from loyalty_model.config import FeatureConfig, LabelConfig
from loyalty_model.features import (
    DAY_S,
    ENGAGEMENT,
    SPINE_KEYS,
    _daynum,
    _past_rates,
    _tier,
    campaign_outcomes,
    purchase_days,
)
from loyalty_model.spine import following_at


def daily_events(events: ir.Table) -> ir.Table:
    """One row per (follower, influencer, brand, day): counts per type, amount in cents and
    distinct posts, in two steps (per post, then per day)."""
    e = events.mutate(day=_daynum(events.event_ts))
    keys = ["follower_id", "influencer_id", "brand_id", "day"]
    aggs = {f"n_{t}": (e.event_type == t).sum().cast("int64") for t in (*ENGAGEMENT, "purchase")}
    aggs["amount_cents"] = (e.amount * 100).round().cast("int64").sum()
    per_post = e.group_by([*keys, "post_id"]).aggregate(**aggs)
    sums = {c: per_post[c].sum().cast("int64") for c in aggs}
    return per_post.group_by(keys).aggregate(**sums, posts=per_post.post_id.count().cast("int64"))


def _in_window(day: ir.IntegerValue, cut: ir.IntegerValue, w: int | None) -> ir.BooleanValue:
    before = day < cut
    return before if w is None else before & (day >= cut - w)


def _wsum(value: ir.NumericValue, cond: ir.BooleanValue) -> ir.NumericValue:
    return cond.ifelse(value, 0).sum()


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
    aggs[f"f_influencers_{wmax}d"] = (
        (cmax & j.influencer_id.notnull() & (eng > 0)).ifelse(j.influencer_id, None).nunique()
    )
    aggs[f"f_active_days_{wmax}d"] = (cmax & (eng > 0)).ifelse(j.day, None).nunique()
    for t in ("like", "comment", "click", "share", "save", "view"):
        aggs[f"_all_{t}"] = j[f"n_{t}"].sum()
    aggs["f_purchases_all"] = j.n_purchase.sum().fill_null(0)
    aggs["f_brands_purchased"] = (j.n_purchase > 0).ifelse(j.brand_id, None).nunique()
    aggs["f_days_since_purchase"] = (
        j.cut.max() - (j.n_purchase > 0).ifelse(j.day, None).max()
    ).cast("float64")
    aggs["f_days_since_active"] = (j.cut.max() - (eng > 0).ifelse(j.day, None).max()).cast(
        "float64"
    )
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
        # version 3: BG/NBD's purchase days and age, the mean amount of a purchase
        "fb_purchase_days_all": bought.ifelse(j.day, None).nunique(),
        "fb_days_since_first_purchase": (j.cut.max() - bought.ifelse(j.day, None).min()).cast(
            "float64"
        ),
        "_amount_cents": _wsum(j.amount_cents.fill_null(0), same),
        f"fb_purchases_{wmax}d": _wsum(j.n_purchase, same & cmax),
        "fb_category_purchases_all": _wsum(j.n_purchase, same_cat),
        f"fb_sponsored_engagement_{wmax}d": _wsum(eng, same & cmax),
        f"fb_sponsored_clicks_{wmax}d": _wsum(j.n_click, same & cmax),
        "fb_days_since_purchase": (
            j.cut.max() - (same & (j.n_purchase > 0)).ifelse(j.day, None).max()
        ).cast("float64"),
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
    per_buyer = j.group_by([bc.brand_id, bc.cutoff_ts, j.follower_id]).aggregate(
        days=j.day.nunique()
    )
    buyers = per_buyer.group_by(["brand_id", "cutoff_ts"]).aggregate(
        br_buyers=per_buyer.follower_id.count(),
    )
    past = _past_rates(bc.select("brand_id", "cutoff_ts"), outcomes, "brand_id", "br", cfg)
    rebuy = _rebuy_rate(keys, pdays, "brand_id", horizon, 365).rename(br_rebuy_rate="_rate")
    out = bc.select("brand_id", "cutoff_ts")
    for part in (buyers, past, rebuy):
        out = out.left_join(part, ["brand_id", "cutoff_ts"]).drop(
            "brand_id_right", "cutoff_ts_right"
        )
    return out.mutate(br_buyers=lambda t: t.br_buyers.fill_null(0))


def _influencer(
    keys: ir.Table,
    tables: dict[str, ir.Table],
    daily: ir.Table,
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
    # engagement and sponsored posts over the last 90 days
    d = daily.filter(daily.influencer_id.notnull())
    j = ic.left_join(d, [ic.influencer_id == d.influencer_id, _in_window(d.day, ic.cut, 90)])
    eng90 = j.group_by([ic.influencer_id, ic.cutoff_ts]).aggregate(
        _eng=(j.n_like + j.n_comment + j.n_share + j.n_save).sum(),
        _views=j.n_view.sum(),
        # days with sponsored posts engaged (a brand and a post: not an attributed purchase)
        inf_sponsored_days_90d=(j.brand_id.notnull() & (j.posts > 0)).ifelse(j.day, None).nunique(),
    )
    # posts published, seen as the first day anyone engaged with them
    ev = tables["events"]
    posts = (
        ev.filter(ev.post_id.notnull() & ev.influencer_id.notnull())
        .group_by(["influencer_id", "post_id"])
        .aggregate(first_day=_daynum(ev.event_ts.min()))
    )
    jp = ic.left_join(posts, [ic.influencer_id == posts.influencer_id, posts.first_day < ic.cut])
    n_posts = jp.group_by([ic.influencer_id, ic.cutoff_ts]).aggregate(
        **{f"inf_posts_{w}d": _wsum(1, _in_window(jp.first_day, jp.cut, w)) for w in cfg.windows}
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


def reference_features(
    spine: ir.Table, tables: dict[str, ir.Table], cfg: FeatureConfig, label: LabelConfig
) -> ir.Table:
    """The spine with every feature column appended (one expression; nothing runs yet)."""
    daily = daily_events(tables["events"])
    outcomes = campaign_outcomes(tables, label)
    pdays = purchase_days(daily, label.horizon_days)
    keys = spine.select(*SPINE_KEYS).distinct()
    fi = _follower_influencer(keys, daily, tables["follows"], cfg)
    fo = _follower(keys, daily, pdays, cfg, label.horizon_days)
    fb = _follower_brand(keys, daily, tables, cfg)
    inf = _influencer(keys, tables, daily, outcomes, cfg)
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


def reference_bg_nbd(
    rows: pd.DataFrame, events: pd.DataFrame, horizon_days: int, min_buyers: int
) -> pd.DataFrame:
    """(fb_p_alive, fb_expected_purchase_days_{horizon}d) of each of `rows` (brand_id,
    follower_id, cutoff_ts), from the raw `events` in pandas: a follower's purchase days of
    the brand before the cutoff's UTC day give (x, t_x, T); every buyer of the brand before
    that day, the population fitted (btyd.fit_bg_nbd), when it has `min_buyers` buyers and a
    repeat buyer. NaN for non-buyers and populations without a fit."""
    day = lambda ts: (  # noqa: E731
        (pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(days=1)
    ).astype("int64")
    p = events[(events["event_type"] == "purchase") & events["brand_id"].notna()]
    p = p.assign(day=day(p["event_ts"]))[["follower_id", "brand_id", "day"]].drop_duplicates()
    by_brand = dict(iter(p.groupby("brand_id")))
    rows = rows.assign(cut=day(rows["cutoff_ts"]).to_numpy())
    alive = np.full(len(rows), np.nan)
    expected = np.full(len(rows), np.nan)
    for (b, cut), idx in rows.groupby(["brand_id", "cut"]).indices.items():
        before = by_brand.get(b, p.iloc[:0])
        before = before[before["day"] < cut]
        hist = before.groupby("follower_id")["day"].agg(["count", "min", "max"])
        x = (hist["count"] - 1).to_numpy(float)
        t_x = (hist["max"] - hist["min"]).to_numpy(float)
        T = (cut - hist["min"]).to_numpy(float)
        if len(hist) < min_buyers or not (x > 0).any():
            continue
        params = btyd.fit_bg_nbd(x, t_x, T)
        pos = hist.index.get_indexer(rows.iloc[idx]["follower_id"].to_numpy())
        buyers, pos = idx[pos >= 0], pos[pos >= 0]  # the rows of the brand's past buyers
        xs, ts, Ts = x[pos], t_x[pos], T[pos]
        alive[buyers] = btyd.p_alive(params, xs, ts, Ts)
        expected[buyers] = btyd.expected_purchases(params, horizon_days, xs, ts, Ts)
    return pd.DataFrame(
        {"fb_p_alive": alive, f"fb_expected_purchase_days_{horizon_days}d": expected},
        index=rows.index,
    )
