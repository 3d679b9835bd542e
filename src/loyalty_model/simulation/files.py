"""Writing a simulated world to a data directory (the only part of the simulator with paths)."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from loyalty_model import io
from loyalty_model.contract import tier_of
from loyalty_model.simulation import (
    EVENT_SCHEMA,
    LABEL_HORIZON_DAYS,
    LABEL_MIN_PURCHASES,
    PRESETS,
    WORLD_START,
    SimulationSummary,
    campaign_effects,
    engagement_chunks,
    retail,
    simulate_world,
    summarise,
)
from loyalty_model.simulation.truth import choose_scenarios, scenario_truth


def write_world(
    preset: str, seed: int, out: Path, purchase_only: bool = False
) -> SimulationSummary:
    """Simulate a world and write the five contract tables, ground truth and simulation.json
    to `out`, replaced atomically. `purchase_only`: the same world (same preset and seed: the
    same people, purchases and campaigns) written in a retailer's shape: its purchases, one
    "influencer" (the retailer), its customers and one campaign per wave (simulation.retail)."""
    t0 = time.perf_counter()
    world, outcomes, tables = simulate_world(preset, seed)
    if purchase_only:
        return _write_retail(preset, world, outcomes, out, t0)
    with io.atomic_dir(out) as tmp:
        # engagement chunk by chunk (memory bounded by one chunk), then the purchases
        chunks = itertools.chain(engagement_chunks(world), [outcomes.purchases])
        n_events = io.write_parquet_chunks(chunks, tmp / "events.parquet", EVENT_SCHEMA)
        for name, table in tables.items():
            io.write_parquet(table, tmp / f"{name}.parquet")
        io.write_parquet(outcomes.ground_truth, tmp / "ground_truth.parquet")
        io.write_parquet(outcomes.campaigns, tmp / "ground_truth_campaigns.parquet")
        scenarios = choose_scenarios(world)
        followers, audiences = scenario_truth(world, scenarios, outcomes.brand_states)
        io.write_parquet(followers, tmp / "ground_truth_scoring.parquet")
        io.write_parquet(audiences, tmp / "ground_truth_audiences.parquet")
        summary = summarise(preset, world, outcomes.ground_truth, n_events, 0.0)
        meta = summary.to_dict()
        meta.pop("seconds")
        meta |= _common_meta(preset)
        meta["audience_design"] = {
            "kind": "uniform sample of people",
            "sample_fraction": PRESETS[preset].sample_fraction,
            "meaning": "every person of the population is in the data with this probability, "
            "with all their follows: each influencer has Binomial(follower_count, "
            "sample_fraction) of its followers in follows, and counts of people (audiences, "
            "overlaps, unique reach) scale to the population by 1 / sample_fraction",
        }
        meta["scoring_scenarios"] = [
            {
                "scenario_id": s.scenario_id,
                "brand_id": world.ids["b"][s.brand].as_py(),
                "as_of": datetime.fromtimestamp(s.as_of, UTC).date().isoformat(),
            }
            for s in scenarios
        ]
        io.write_json(meta, tmp / "simulation.json")
    return SimulationSummary(**{**summary.to_dict(), "seconds": round(time.perf_counter() - t0, 1)})


def _common_meta(preset: str) -> dict:
    return {
        "label": {
            "horizon_days": LABEL_HORIZON_DAYS,
            "min_purchases": LABEL_MIN_PURCHASES,
            "require_attribution": False,
        },
        "world_start": str(WORLD_START),
        "preset_config": asdict(PRESETS[preset]),
    }


def _write_retail(preset: str, world, outcomes, out: Path, t0: float) -> SimulationSummary:
    """The purchase-only world: the retailer's tables, ground truth per (campaign, customer)
    and per campaign, simulation.json. No scoring scenarios: their truth is per influencer
    (had it alone posted), which a world of one channel does not have."""
    rw = retail.retail_world(world, outcomes)
    tables = retail.retail_tables(world, rw)
    effects = campaign_effects(world)
    tally = retail.Tally(world, rw)
    tier = tier_of(len(rw.customers))
    per_campaign = []

    def chunks():
        for k, truth, rows in retail.truth_chunks(world, outcomes, rw, effects):
            tally.add(k, truth)
            per_campaign.append((len(truth.people), truth.p_true.sum(), truth.loyal.sum()))
            yield rows

    with io.atomic_dir(out) as tmp:
        io.write_parquet(rw.purchases, tmp / "events.parquet")
        for name, table in tables.items():
            io.write_parquet(table, tmp / f"{name}.parquet")
        io.write_parquet_chunks(chunks(), tmp / "ground_truth.parquet", retail.GROUND_TRUTH_SCHEMA)
        io.write_parquet(
            retail.campaign_truth(world, rw, per_campaign, tier),
            tmp / "ground_truth_campaigns.parquet",
        )
        summary = SimulationSummary(
            preset=preset,
            seed=world.seed,
            events=rw.purchases.num_rows,
            followers=len(rw.customers),
            bots=int(world.fol_bot[rw.customers].sum()),
            follows=len(rw.customers),
            influencers=1,
            sample_fraction=1.0,
            brands=len(world.br_niche),
            campaigns=rw.n_campaigns,
            seconds=0.0,
            purchase_only=True,
            **tally.figures(tier),
        )
        meta = summary.to_dict()
        meta.pop("seconds")
        meta |= _common_meta(preset)
        meta["audience_design"] = {
            "kind": "a retailer's customer base",
            "sample_fraction": 1.0,
            "meaning": "follows holds every customer of the retailer (everyone in the world who "
            "buys), each from their first purchase; the people are the influencer world's "
            f"uniform sample of the population ({PRESETS[preset].sample_fraction} of it)",
        }
        meta["retail"] = {
            "influencer_id": retail.RETAILER_ID,
            "events": "purchases only, no attribution (influencer_id and post_id null)",
            "campaigns": "one per wave of the influencer world (a brand and a start time): "
            "the retailer promotes the brand to every customer; cost = the sum of the wave's "
            "campaign costs, null when one is unknown",
            "ground_truth": "p_true per (campaign, customer at its start): >= 2 purchases of "
            "the brand in the window given all of the wave's influencer campaigns (the "
            "customer exposed to those whose influencers they followed), with their realised "
            "effects; `exposed` says whether they followed one",
        }
        meta["scoring_scenarios"] = []
        io.write_json(meta, tmp / "simulation.json")
    return SimulationSummary(**{**summary.to_dict(), "seconds": round(time.perf_counter() - t0, 1)})
