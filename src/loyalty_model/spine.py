"""Spines: the rows a model learns from or scores, as Ibis expressions (engine-agnostic).

A spine row is (follower_id, influencer_id, brand_id, cutoff_ts). Training rows come from
campaigns: every follower of the campaign's influencer at `start_ts`; scoring rows from a
request (brand, influencers, as-of).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import ibis
import ibis.expr.types as ir

from loyalty_model.config import LabelConfig, SplitConfig
from loyalty_model.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSpine:
    rows: ir.Table  # campaign_id, follower_id, influencer_id, brand_id, cutoff_ts, label
    campaigns_used: int
    campaigns_excluded: int  # label window not fully observed in the data
    data_end: datetime | None  # last event_ts in the data
    rows_before_cap: int | None = None  # spine rows before cap_rows sampled them (None: not)
    # the same rows without their labels: as many, and far cheaper to count (no join to events)
    unlabelled: ir.Table | None = None


def following_at(follows: ir.Table, ts: ir.Value) -> ir.BooleanValue:
    """The follow row is active at `ts`: followed at or before it, not unfollowed by then."""
    return (follows.followed_at <= ts) & (
        follows.unfollowed_at.isnull() | (follows.unfollowed_at > ts)
    )


def audience_rows(campaigns: ir.Table, follows: ir.Table) -> ir.Table:
    """Every follower following the campaign's influencer at its start."""
    j = campaigns.join(
        follows,
        [
            campaigns.influencer_id == follows.influencer_id,
            following_at(follows, campaigns.start_ts),
        ],
    )
    return j.select(
        campaign_id=campaigns.campaign_id,
        follower_id=follows.follower_id,
        influencer_id=campaigns.influencer_id,
        brand_id=campaigns.brand_id,
        cutoff_ts=campaigns.start_ts,
    ).distinct()  # a follower with two overlapping follow rows counts once


def training_spine(
    tables: dict[str, ir.Table], label: LabelConfig, data_end: datetime | None
) -> TrainingSpine:
    """Labelled rows of every campaign whose label window closed before `data_end`."""
    campaigns = tables["campaigns"]
    horizon = ibis.interval(days=label.horizon_days)
    if data_end is None:
        closed = campaigns.filter(ibis.literal(False))
    else:
        closed = campaigns.filter(campaigns.start_ts + horizon <= ibis.literal(data_end))
    n_all = int(campaigns.count().execute())
    n_closed = int(closed.count().execute())
    if n_all > n_closed:
        log.info(
            "excluded %d of %d campaigns whose %d-day label window ends after the last event",
            n_all - n_closed,
            n_all,
            label.horizon_days,
        )
    rows = audience_rows(closed, tables["follows"])
    return TrainingSpine(
        rows=with_labels(rows, tables["events"], label),  # one labelled row per row
        campaigns_used=n_closed,
        campaigns_excluded=n_all - n_closed,
        data_end=data_end,
        unlabelled=rows,
    )


def with_labels(rows: ir.Table, events: ir.Table, label: LabelConfig) -> ir.Table:
    """label = 1 when the follower makes >= min_purchases purchases of the brand in
    [cutoff, cutoff + horizon); with require_attribution the first of them must carry the
    row's influencer_id."""
    p = events.filter(events.event_type == "purchase").select(
        "follower_id", "brand_id", "event_ts", p_inf="influencer_id"
    )
    r = rows
    j = r.left_join(
        p,
        [
            r.follower_id == p.follower_id,
            r.brand_id == p.brand_id,
            p.event_ts >= r.cutoff_ts,
            p.event_ts < r.cutoff_ts + ibis.interval(days=label.horizon_days),
        ],
    )
    keys = ["campaign_id", "follower_id", "influencer_id", "brand_id", "cutoff_ts"]
    agg = j.group_by([r[k] for k in keys]).aggregate(
        n_purchases=j.event_ts.count(),
        first_inf=j.p_inf.argmin(j.event_ts),
    )
    ok = agg.n_purchases >= label.min_purchases
    if label.require_attribution:
        ok = ok & (agg.first_inf == agg.influencer_id).fill_null(False)
    return agg.select(*keys, label=ok.cast("int8"))


def scoring_spine(
    tables: dict[str, ir.Table],
    brand_id: str,
    as_of: datetime,
    influencer_ids: list[str] | None = None,
) -> ir.Table:
    """Followers of each requested influencer at `as_of`, to be scored for `brand_id`."""
    f = tables["follows"]
    f = f.filter(following_at(f, ibis.literal(as_of)))
    if influencer_ids is not None:
        f = f.filter(f.influencer_id.isin(influencer_ids))
    return f.select(
        "follower_id",
        "influencer_id",
        brand_id=ibis.literal(brand_id),
        cutoff_ts=ibis.literal(as_of).cast("timestamp('UTC')"),
    ).distinct()


def _md5(follower_id: ir.StringValue) -> ir.StringValue:
    """A random-like, reproducible order of followers, the same on DuckDB and Spark (an
    engine's own hash() differs between engines): the hex MD5 of the id."""
    return follower_id.hexdigest("md5")


def sample_followers(rows: ir.Table, fraction: float) -> ir.Table:
    """The rows of about `fraction` of the followers: those whose MD5 (as a number in
    [0, 1), compared as 8 hex digits) is below `fraction`."""
    threshold = format(int(fraction * 16**8), "08x")
    return rows.filter(_md5(rows.follower_id).substr(0, 8) < threshold)


def cap_rows(rows: ir.Table, cap: int, counted: ir.Table | None = None) -> tuple[ir.Table, int]:
    """(rows, their count before sampling): at most about `cap` rows, every campaign keeping
    the same share of its followers, ceil(share x its rows), so that no campaign vanishes and
    the split by campaign start keeps its proportions; the followers kept are the first by
    MD5 (see _md5). `counted`: a cheaper table with as many rows, to count instead."""
    n = int((rows if counted is None else counted).count().execute())
    if n <= cap:
        return rows, n
    share = cap / n
    per = rows.mutate(
        _rank=ibis.row_number().over(  # 0, 1, ...
            ibis.window(group_by=rows.campaign_id, order_by=[_md5(rows.follower_id)])
        ),
        _n=rows.count().over(ibis.window(group_by=rows.campaign_id)),
    )
    return per.filter(per._rank < (per._n * share).ceil()).drop("_rank", "_n"), n


def split_bounds(starts: list[datetime], cfg: SplitConfig) -> tuple[datetime, datetime]:
    """(valid_from, test_from): train is start < valid_from, valid is [valid_from, test_from),
    test is start >= test_from. Never random: campaign start times only."""
    uniq = sorted(set(starts))
    if cfg.method == "date":
        tz = uniq[0].tzinfo if uniq else None
        v = datetime.combine(cfg.valid_start, datetime.min.time(), tzinfo=tz)
        t = datetime.combine(cfg.test_start, datetime.min.time(), tzinfo=tz)
    else:
        if len(uniq) < 3:
            raise DataError(
                f"need campaigns with at least 3 distinct start times to split train < valid < "
                f"test, found {len(uniq)}"
            )
        n = len(uniq)
        n_test = max(1, round(cfg.test_fraction * n))
        n_valid = max(1, round(cfg.valid_fraction * n))
        n_train = n - n_test - n_valid
        if n_train < 1:
            n_train, n_valid, n_test = n - 2, 1, 1
        v, t = uniq[n_train], uniq[n_train + n_valid]
    train = sum(s < v for s in starts)
    valid = sum(v <= s < t for s in starts)
    test = sum(s >= t for s in starts)
    if min(train, valid, test) == 0:
        raise DataError(
            f"split leaves an empty part (campaigns train/valid/test = {train}/{valid}/{test}); "
            "adjust split.valid_start/test_start or the fractions"
        )
    return v, t
