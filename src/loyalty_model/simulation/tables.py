"""From numpy arrays to the tables the simulator writes: contract tables and ground truth."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from loyalty_model.contract import EVENT_TYPES, TIERS
from loyalty_model.simulation.params import DAY, LABEL_HORIZON_DAYS, NICHES

if TYPE_CHECKING:
    from loyalty_model.simulation.entities import World

EVENT_TYPE_CODE = {name: i for i, name in enumerate(EVENT_TYPES)}
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


def take(ids: pa.Array, idx: np.ndarray) -> pa.Array:
    """ids[idx], with idx < 0 meaning null."""
    mask = idx < 0
    return ids.take(pa.array(np.where(mask, 0, idx), mask=mask if mask.any() else None))


def timestamps(seconds: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Unix seconds as UTC timestamps (null where not `valid`)."""
    return pa.array(
        seconds.astype("int64") * 1_000_000,
        pa.timestamp("us", tz="UTC"),
        mask=None if valid is None else ~valid,
    )


def event_table(w: World, ts, fol, inf, brand, post, etype, amount) -> pa.Table:
    ids = w.ids
    return pa.Table.from_arrays(
        [
            timestamps(ts),
            take(ids["f"], fol),
            take(ids["i"], inf),
            take(ids["b"], brand),
            take(ids["p"], post),
            pa.array(np.array(EVENT_TYPES)[etype], pa.string()),
            pa.array(amount, pa.float64(), from_pandas=True),
        ],
        schema=EVENT_SCHEMA,
    )


def purchase_table(w: World, rng: np.random.Generator, log) -> pa.Table:
    """Purchases (with amounts) and the clicks before campaign purchases, in time order; a
    campaign click points at the campaign post of (influencer, brand) before it."""
    fol = np.concatenate(log.fol)
    brand = np.concatenate(log.brand)
    ts = np.concatenate(log.ts)
    inf = np.concatenate(log.inf)
    kind = np.concatenate(log.kind)
    keep = (ts >= w.start) & (ts < w.end)
    fol, brand, ts, inf, kind = fol[keep], brand[keep], ts[keep], inf[keep], kind[keep]
    order = np.lexsort((kind, fol, ts))
    fol, brand, ts, inf, kind = fol[order], brand[order], ts[order], inf[order], kind[order]
    amount = (w.br_price[brand] * rng.lognormal(0, w.params.outcomes.amount_sd, len(fol))).round(2)
    is_click = kind == 1
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
    return event_table(
        w,
        ts,
        fol,
        inf,
        brand,
        post,
        np.where(is_click, EVENT_TYPE_CODE["click"], EVENT_TYPE_CODE["purchase"]),
        np.where(is_click, np.nan, amount),
    )


def ground_truth_tables(w: World, gt: dict) -> tuple[pa.Table, pa.Table]:
    """Per (campaign, follower) row and per campaign: true probability and realised label."""
    closed = gt["start"] + LABEL_HORIZON_DAYS * DAY <= w.end
    rows = pa.table(
        {
            "campaign_id": take(w.ids["c"], gt["campaign"]),
            "follower_id": take(w.ids["f"], gt["follower"]),
            "influencer_id": take(w.ids["i"], gt["influencer"]),
            "brand_id": take(w.ids["b"], gt["brand"]),
            "cutoff_ts": timestamps(gt["start"]),
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
            "influencer_id": take(w.ids["i"], w.ca_inf),
            "brand_id": take(w.ids["b"], w.ca_brand),
            "start_ts": timestamps(w.ca_start),
            "tier": pa.array(np.array(TIERS)[w.inf_tier[w.ca_inf]]),
            "followers": pa.array(size),
            "expected_loyal": pa.array(exp),
            "realised_loyal": pa.array(real.astype(np.int64)),
            "window_closed": pa.array(w.ca_start + LABEL_HORIZON_DAYS * DAY <= w.end),
        }
    )
    return rows, camps


def entity_tables(w: World) -> dict[str, pa.Table]:
    """follows, influencers, brands and campaigns as the data contract defines them."""
    ids = w.ids
    n_i = len(w.inf_tier)
    fraction = np.full(n_i, w.preset.sample_fraction)
    influencers = pa.table(
        {
            "influencer_id": ids["i"],
            "follower_count": pa.array(w.inf_followers, pa.int64()),
            "category": pa.array(np.array(NICHES)[w.inf_niche]),
            "price_per_post": pa.array(w.inf_price, pa.float64(), mask=~w.inf_price_known),
            # the design: every person is in the data with this probability
            "sample_fraction": pa.array(fraction, pa.float64()),
        }
    )
    follows = pa.table(
        {
            "follower_id": take(ids["f"], w.fw_fol),
            "influencer_id": take(ids["i"], w.fw_inf),
            "followed_at": timestamps(w.fw_from),
            "unfollowed_at": timestamps(np.maximum(w.fw_to, 0), w.fw_to >= 0),
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
            "brand_id": take(ids["b"], w.ca_brand),
            "influencer_id": take(ids["i"], w.ca_inf),
            "start_ts": timestamps(w.ca_start),
            "cost": pa.array(w.ca_cost, pa.float64(), mask=~w.ca_cost_known),
        }
    )
    return {
        "follows": follows,
        "influencers": influencers,
        "brands": brands,
        "campaigns": campaigns,
    }
