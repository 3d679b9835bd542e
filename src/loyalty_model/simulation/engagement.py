"""Engagement events: views, likes, comments, shares, saves and clicks on posts.

Drawn chunk by chunk of follows, so memory is bounded by one chunk. A follower sees a post of
an influencer they follow while the follow is active, with a probability that grows with their
activity and their affinity for the influencer; every other action follows a view.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from loyalty_model.simulation.entities import World, brand_match, sigmoid
from loyalty_model.simulation.tables import EVENT_TYPE_CODE, event_table


def engagement_chunks(w: World) -> Iterator[pa.Table]:
    """Engagement events, one table per chunk of follows (seeded per chunk)."""
    n_fw = len(w.fw_inf)
    bounds = [*range(0, n_fw, w.preset.chunk_follows), n_fw]
    seeds = np.random.SeedSequence([w.seed, 20243]).spawn(len(bounds) - 1)
    for (lo, hi), ss in zip(itertools.pairwise(bounds), seeds, strict=True):
        yield _engagement(w, np.arange(lo, hi), np.random.default_rng(ss))


def _engagement(w: World, fw: np.ndarray, rng: np.random.Generator) -> pa.Table:
    ep = w.params.engagement
    inf, fol = w.fw_inf[fw], w.fw_fol[fw]
    a = np.maximum(w.fw_from[fw], w.start)
    b = np.where(w.fw_to[fw] < 0, w.end, np.minimum(w.fw_to[fw], w.end))
    off = w.po_offsets
    # posts of the influencer published while the follow was active
    p_lo = off[inf] + _searchsorted_segments(w.po_ts, off[inf], off[inf + 1], a)
    p_hi = off[inf] + _searchsorted_segments(w.po_ts, off[inf], off[inf + 1], b)
    n_avail = np.maximum(p_hi - p_lo, 0)
    bot = w.fol_bot[fol]
    aff = w.fw_affinity[fw]
    p_view = np.where(
        bot,
        ep.bot_view_factor * w.preset.view_rate,  # bots see (and like) far more posts
        np.clip(
            w.preset.view_rate * w.fol_activity[fol] * (ep.view_base + ep.view_affinity * aff),
            0,
            ep.view_max,
        ),
    )
    n_view = rng.binomial(n_avail, p_view)
    row = np.repeat(np.arange(len(fw)), n_view)
    post = p_lo[row] + (rng.random(len(row)) * n_avail[row]).astype(np.int64)
    key = np.unique((row.astype(np.int64) << 32) + post)  # at most one view per post
    row, post = key >> 32, key & 0xFFFFFFFF
    rb, ra, rf = bot[row], aff[row], fol[row]
    slow, faster, cap = ep.human_delay_activity
    delay = np.where(
        rb,
        rng.exponential(ep.bot_delay_s, len(row)),  # bots act within minutes: bursts
        rng.exponential(ep.human_delay_h * 3600, len(row))
        * (slow - faster * np.minimum(w.fol_activity[rf], cap)),  # active people sooner
    )
    v_ts = w.po_ts[post] + delay.astype(np.int64)
    sponsored = w.po_brand[post] >= 0
    matched = sponsored & brand_match(
        w.fol_interests[rf], w.br_niche[np.maximum(w.po_brand[post], 0)]
    )
    zp = w.fol_purchase_z[rf]

    def per_view(coef: tuple[float, float, float]) -> np.ndarray:
        base, slope, power = coef
        return base + slope * ra**power

    probs = {
        "like": np.where(rb, ep.bot_like, per_view(ep.like)),
        "comment": np.where(rb, ep.bot_comment, per_view(ep.comment)),
        "share": np.where(rb, 0.0, per_view(ep.share)),
        "save": np.where(rb, 0.0, per_view(ep.save) * sigmoid(zp + ep.save_zp_shift)),
        "click": np.where(
            rb,
            0.0,
            per_view(ep.click)
            * np.where(matched, ep.click_brand_match, 1.0)
            * sigmoid(zp + ep.click_zp_shift),
        ),
    }
    ts_parts, row_parts, post_parts, type_parts = [v_ts], [row], [post], [np.zeros(len(row), int)]
    for name, p in probs.items():
        hit = rng.random(len(row)) < p
        ts_parts.append(v_ts[hit] + rng.integers(*ep.action_lag_s, hit.sum()))
        row_parts.append(row[hit])
        post_parts.append(post[hit])
        type_parts.append(np.full(hit.sum(), EVENT_TYPE_CODE[name]))
    ts = np.concatenate(ts_parts)
    r = np.concatenate(row_parts)
    p = np.concatenate(post_parts)
    et = np.concatenate(type_parts)
    keep = ts < w.end
    ts, r, p, et = ts[keep], r[keep], p[keep], et[keep]
    order = np.lexsort((et, fol[r], ts))
    ts, r, p, et = ts[order], r[order], p[order], et[order]
    return event_table(w, ts, fol[r], inf[r], w.po_brand[p], p, et, np.full(len(ts), np.nan))


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
