"""A purchase-only world: the same world seen through a retailer's transaction log.

The world is simulated exactly as the influencer world (same preset and seed: the same people,
purchases and campaigns); only what is written differs, in the shape of a retailer's data:

* **events**: the purchase events only (no views, likes, ... and no clicks), with no
  attribution: `influencer_id` and `post_id` are null, so nothing in the data points back at
  the influencer world;
* **influencers**: one row, the retailer itself (`RETAILER_ID`), whose `follower_count` is the
  number of its customers and whose `sample_fraction` is 1 (`follows` holds every one);
* **follows**: every person who ever buys is a customer of the retailer from their first
  purchase on (a transaction log knows a person from then; people who never buy, bots
  among them, are not in it);
* **campaigns**: one per wave of the influencer world (a brand and a start time): the retailer
  promotes the brand to its whole customer base; the cost is the sum of the wave's campaigns'
  costs (null when one of them is unknown);
* **brands**: as in the influencer world.

A campaign's training rows are then every customer at its start, and the label is computed
from everyone's real purchases, as on a retailer's log. Ground truth keeps its meaning:
`p_true` of a (campaign, customer) row is the customer's true probability of >= 2 purchases of
the brand in the window given everything the world did in that wave: all of the wave's
influencer campaigns together (with their realised effects), the customer exposed to those of
the influencers they followed at the start (`truth.set_probabilities`), and the brand's
background and earlier-convert purchase streams (`outcomes.loyal_probability`). A customer
who followed none of the wave's influencers converts with probability 0 from the wave.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loyalty_model.contract import tier_of
from loyalty_model.simulation.entities import World, string_ids
from loyalty_model.simulation.outcomes import Outcomes, background_rate, repeat_probability
from loyalty_model.simulation.params import DAY, LABEL_HORIZON_DAYS, LABEL_MIN_PURCHASES
from loyalty_model.simulation.summary import holdout_cut
from loyalty_model.simulation.tables import EVENT_SCHEMA, entity_tables, take, timestamps
from loyalty_model.simulation.truth import counterfactual_parts, set_probabilities, state_at

RETAILER_ID = "retail"  # the one "influencer" of a purchase-only world: the retailer
RETAILER_CATEGORY = "retail"

GROUND_TRUTH_SCHEMA = pa.schema(
    [
        ("campaign_id", pa.string()),
        ("follower_id", pa.string()),
        ("influencer_id", pa.string()),
        ("brand_id", pa.string()),
        ("cutoff_ts", pa.timestamp("us", tz="UTC")),
        ("tier", pa.string()),
        ("is_bot", pa.bool_()),
        ("p_true", pa.float64()),
        ("loyal", pa.bool_()),
        ("window_closed", pa.bool_()),
        # followed one of the wave's influencers at its start (saw one of its campaigns)
        ("exposed", pa.bool_()),
    ]
)


@dataclass
class RetailWorld:
    """The retailer's view of a world: its purchases, customers and campaigns (one per wave),
    as numpy arrays indexed like the world's (follower f, brand b)."""

    purchases: pa.Table  # the purchase events as written (EVENT_SCHEMA, no attribution)
    pu_keys: np.ndarray  # sorted (follower, brand, time) keys of the purchases (purchase_key)
    n_brands: int
    origin: int  # the world's start: purchase times are offsets from it in the keys
    customers: np.ndarray  # follower indices of everyone who buys, sorted
    customer_since: np.ndarray  # the first purchase of each
    wave_brand: np.ndarray  # per retail campaign (sorted by start, brand)
    wave_start: np.ndarray
    wave_cost: np.ndarray  # sum of the wave's campaign costs (NaN when one is unknown)
    wave_campaigns: list[np.ndarray]  # the influencer world's campaigns of each wave

    @property
    def n_campaigns(self) -> int:
        return len(self.wave_start)

    def customers_at(self, ts: int) -> np.ndarray:
        """Follower indices of the customers at `ts` (first purchase at or before it), sorted."""
        return self.customers[self.customer_since <= ts]


def retail_world(w: World, outcomes: Outcomes) -> RetailWorld:
    """The retailer's view of a simulated world (see the module docstring)."""
    ev = outcomes.purchases
    ev = ev.filter(pc.equal(ev["event_type"], "purchase"))
    nulls = pa.nulls(ev.num_rows, pa.string())
    ev = ev.set_column(ev.schema.get_field_index("influencer_id"), "influencer_id", nulls)
    ev = ev.set_column(ev.schema.get_field_index("post_id"), "post_id", nulls)
    ev = ev.cast(EVENT_SCHEMA)
    fol = pc.index_in(ev["follower_id"], value_set=w.ids["f"]).to_numpy()
    brand = pc.index_in(ev["brand_id"], value_set=w.ids["b"]).to_numpy()
    ts = ev["event_ts"].cast(pa.int64()).to_numpy() // 1_000_000
    # a customer from the first purchase on
    order = np.lexsort((ts, fol))
    first = np.r_[True, fol[order][1:] != fol[order][:-1]] if len(fol) else np.zeros(0, bool)
    customers, since = fol[order][first], ts[order][first]

    waves = np.unique(w.ca_wave)
    camps = [np.flatnonzero(w.ca_wave == k) for k in waves]
    brand_of = np.array([w.ca_brand[c[0]] for c in camps])
    start_of = np.array([w.ca_start[c[0]] for c in camps], dtype=np.int64)
    cost_of = np.array(
        [w.ca_cost[c].sum() if w.ca_cost_known[c].all() else np.nan for c in camps]
    ).round(2)
    o = np.lexsort((brand_of, start_of))
    return RetailWorld(
        purchases=ev,
        pu_keys=np.sort(purchase_key(fol, brand, ts - w.start, len(w.br_niche))),
        n_brands=len(w.br_niche),
        origin=w.start,
        customers=customers,
        customer_since=since,
        wave_brand=brand_of[o],
        wave_start=start_of[o],
        wave_cost=cost_of[o],
        wave_campaigns=[camps[k] for k in o],
    )


def retail_tables(w: World, rw: RetailWorld) -> dict[str, pa.Table]:
    """follows, influencers, brands and campaigns of the purchase-only world (data contract)."""
    ids = w.ids
    n_c = len(rw.customers)
    follows = pa.table(
        {
            "follower_id": take(ids["f"], rw.customers),
            "influencer_id": pa.array([RETAILER_ID] * n_c, pa.string()),
            "followed_at": timestamps(rw.customer_since),
            "unfollowed_at": pa.nulls(n_c, pa.timestamp("us", tz="UTC")),
        }
    )
    known = rw.wave_cost[~np.isnan(rw.wave_cost)]
    price = float(np.median(known).round(2)) if len(known) else None
    influencers = pa.table(
        {
            "influencer_id": pa.array([RETAILER_ID], pa.string()),
            "follower_count": pa.array([n_c], pa.int64()),
            "category": pa.array([RETAILER_CATEGORY], pa.string()),
            # what a promotion to the whole customer base typically costs (median wave cost)
            "price_per_post": pa.array([price], pa.float64()),
            "sample_fraction": pa.array([1.0], pa.float64()),  # follows holds every customer
        }
    )
    campaigns = pa.table(
        {
            "campaign_id": campaign_ids(rw),
            "brand_id": take(ids["b"], rw.wave_brand),
            "influencer_id": pa.array([RETAILER_ID] * rw.n_campaigns, pa.string()),
            "start_ts": timestamps(rw.wave_start),
            "cost": pa.array(rw.wave_cost, pa.float64(), from_pandas=True),
        }
    )
    return {
        "follows": follows,
        "influencers": influencers,
        "brands": entity_tables(w)["brands"],
        "campaigns": campaigns,
    }


def campaign_ids(rw: RetailWorld) -> pa.Array:
    """w0000, w0001, ...: one retail campaign per wave of the influencer world."""
    return string_ids("w", rw.n_campaigns)


@dataclass
class WaveTruth:
    """The truth of one retail campaign: per customer at its start (sorted follower index),
    the true probability of the label, the realised label and whether they were exposed."""

    people: np.ndarray
    p_true: np.ndarray
    loyal: np.ndarray
    exposed: np.ndarray


def wave_truth(
    w: World, outcomes: Outcomes, rw: RetailWorld, k: int, effects: np.ndarray
) -> WaveTruth:
    """The truth of retail campaign `k` (the influencer world's wave k, in start order) for
    every customer at its start: set_probabilities over the wave's campaigns, each with its
    realised effect (`effects`, outcomes.campaign_effects), every customer one row with no
    exposure (p_convert 0) so that the unexposed get the same model without the campaign."""
    brand, start = int(rw.wave_brand[k]), int(rw.wave_start[k])
    state = state_at(outcomes.brand_states.get(brand, []), start)
    people = rw.customers_at(start)
    ids, p_convert, p_repeat, other = [people], [np.zeros(len(people))], [], []
    p_repeat.append(repeat_probability(w, people, brand))
    rate = background_rate(w, people, np.full(len(people), brand)) + state.rate_of(people)
    other.append(rate * LABEL_HORIZON_DAYS)
    exposed_fol = []
    for c in rw.wave_campaigns[k]:
        rows = w.follows_of(w.ca_inf[c])
        rows = rows[w.following_at(rows, start)]
        pc_, pr_, ot_ = counterfactual_parts(w, state, brand, rows, effect=float(effects[c]))
        ids.append(w.fw_fol[rows])
        p_convert.append(pc_)
        p_repeat.append(pr_)
        other.append(ot_)
        exposed_fol.append(w.fw_fol[rows])
    # customers' rows first: set_probabilities takes each follower's parts from its first row
    # (the parts of one follower are the same in every row)
    followers, p = set_probabilities(
        np.concatenate(ids),
        np.concatenate(p_convert),
        np.concatenate(p_repeat),
        np.concatenate(other),
    )
    p_true = p[np.searchsorted(followers, people)]
    loyal = count_purchases(rw, people, brand, start, start + LABEL_HORIZON_DAYS * DAY)
    exposed = np.isin(people, np.concatenate(exposed_fol)) if exposed_fol else people < 0
    return WaveTruth(people, p_true, loyal >= LABEL_MIN_PURCHASES, exposed)


def purchase_key(fol: np.ndarray, brand, offset, n_brands: int) -> np.ndarray:
    """(follower, brand, seconds since the world's start) as one sortable integer (the
    purchases lie inside the world, so offsets fit in 32 bits)."""
    return ((fol.astype(np.int64) * n_brands + brand) << 32) | offset


def count_purchases(rw: RetailWorld, fol: np.ndarray, brand: int, lo: int, hi: int) -> np.ndarray:
    """How many purchases of `brand` each of `fol` made in [lo, hi) (unix seconds)."""

    def at(ts: int) -> np.ndarray:
        key = purchase_key(fol, brand, max(ts - rw.origin, 0), rw.n_brands)
        return np.searchsorted(rw.pu_keys, key, "left")

    return at(hi) - at(lo)


def truth_chunks(
    w: World, outcomes: Outcomes, rw: RetailWorld, effects: np.ndarray
) -> Iterator[tuple[int, WaveTruth, pa.Table]]:
    """(k, truth, ground_truth rows) of each retail campaign in turn (memory: one wave)."""
    ids = w.ids
    cids = campaign_ids(rw)
    tier = tier_of(len(rw.customers))
    for k in range(rw.n_campaigns):
        t = wave_truth(w, outcomes, rw, k, effects)
        n = len(t.people)
        start = int(rw.wave_start[k])
        table = pa.Table.from_arrays(
            [
                pa.array([cids[k].as_py()] * n, pa.string()),
                take(ids["f"], t.people),
                pa.array([RETAILER_ID] * n, pa.string()),
                pa.array([ids["b"][int(rw.wave_brand[k])].as_py()] * n, pa.string()),
                timestamps(np.full(n, start, np.int64)),
                pa.array([tier] * n, pa.string()),
                pa.array(w.fol_bot[t.people]),
                pa.array(t.p_true, pa.float64()),
                pa.array(t.loyal),
                pa.array(np.full(n, start + LABEL_HORIZON_DAYS * DAY <= w.end)),
                pa.array(t.exposed),
            ],
            schema=GROUND_TRUTH_SCHEMA,
        )
        yield k, t, table


class Tally:
    """The figures of a purchase-only world's summary, gathered wave by wave (a `medium`
    world has ~10^8 truth rows: only the held-out rows' probabilities and labels are kept).
    Rows, rates and the oracle ROC-AUC mean what `summary.summarise` says they mean."""

    def __init__(self, w: World, rw: RetailWorld, holdout_share: float = 0.25):
        closed = rw.wave_start + LABEL_HORIZON_DAYS * DAY <= w.end
        sizes = np.array([len(rw.customers_at(int(s))) for s in rw.wave_start])
        self.closed = closed
        self.cut = holdout_cut(rw.wave_start[closed & (sizes > 0)], holdout_share)
        self.rows = self.loyal = 0
        self.p_sum = 0.0
        self.held_p: list[np.ndarray] = []
        self.held_y: list[np.ndarray] = []
        self.held_waves = 0
        self.starts = rw.wave_start

    def add(self, k: int, t: WaveTruth) -> None:
        if not self.closed[k] or not len(t.people):
            return
        self.rows += len(t.people)
        self.loyal += int(t.loyal.sum())
        self.p_sum += float(t.p_true.sum())
        if self.cut is None or self.starts[k] > self.cut:
            self.held_p.append(t.p_true)
            self.held_y.append(t.loyal)
            self.held_waves += 1

    def figures(self, tier: str) -> dict:
        from sklearn.metrics import roc_auc_score

        p = np.concatenate(self.held_p) if self.held_p else np.zeros(0)
        y = np.concatenate(self.held_y) if self.held_y else np.zeros(0, bool)
        two = len(np.unique(y)) == 2
        auc = float(roc_auc_score(y, p)) if two else float("nan")
        return {
            "campaigns_closed": int(self.closed.sum()),
            "training_rows": self.rows,
            "loyal_rate": round(self.loyal / self.rows, 5) if self.rows else float("nan"),
            "true_rate_by_tier": {tier: round(self.p_sum / self.rows, 5)} if self.rows else {},
            "oracle_auc_holdout": round(auc, 4),
            "holdout_campaigns": self.held_waves,
        }


def campaign_truth(
    w: World, rw: RetailWorld, per_campaign: list[tuple[int, float, int]], tier: str
) -> pa.Table:
    """Per retail campaign, as ground_truth_campaigns in the influencer world: customers at
    its start (`followers`), expected (sum of p_true) and realised loyal customers, plus the
    influencer world's campaigns it stands for (`source_campaigns`)."""
    n = rw.n_campaigns
    size, exp, real = (np.array(v) for v in zip(*per_campaign, strict=True))
    return pa.table(
        {
            "campaign_id": campaign_ids(rw),
            "influencer_id": pa.array([RETAILER_ID] * n, pa.string()),
            "brand_id": take(w.ids["b"], rw.wave_brand),
            "start_ts": timestamps(rw.wave_start),
            "tier": pa.array([tier] * n, pa.string()),
            "followers": pa.array(size.astype(np.int64)),
            "expected_loyal": pa.array(exp.astype(float)),
            "realised_loyal": pa.array(real.astype(np.int64)),
            "window_closed": pa.array(rw.wave_start + LABEL_HORIZON_DAYS * DAY <= w.end),
            "source_campaigns": pa.array(
                [w.ids["c"].take(pa.array(c)).to_pylist() for c in rw.wave_campaigns],
                pa.list_(pa.string()),
            ),
        }
    )
