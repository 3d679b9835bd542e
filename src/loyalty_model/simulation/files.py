"""Writing a simulated world to a data directory (the only part of the simulator with paths)."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from loyalty_model import io
from loyalty_model.simulation import (
    EVENT_SCHEMA,
    LABEL_HORIZON_DAYS,
    LABEL_MIN_PURCHASES,
    PRESETS,
    WORLD_START,
    SimulationSummary,
    engagement_chunks,
    simulate_world,
    summarise,
)
from loyalty_model.simulation.truth import choose_scenarios, scenario_truth


def write_world(preset: str, seed: int, out: Path) -> SimulationSummary:
    """Simulate a world and write the five contract tables, ground truth and simulation.json
    to `out`, replaced atomically."""
    t0 = time.perf_counter()
    world, outcomes, tables = simulate_world(preset, seed)
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
        meta["label"] = {
            "horizon_days": LABEL_HORIZON_DAYS,
            "min_purchases": LABEL_MIN_PURCHASES,
            "require_attribution": False,
        }
        meta["world_start"] = str(WORLD_START)
        meta["preset_config"] = asdict(PRESETS[preset])
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
