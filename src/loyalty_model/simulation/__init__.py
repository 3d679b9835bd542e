"""A synthetic influencer world with ground truth.

The world is built so the question is hard and the micro-influencer thesis can be tested:

* influencers are heavy-tailed in size (nano .. mega) with realistic nominal follower counts;
  the world's people are a uniform sample of the population (the preset's `sample_fraction`,
  with all their follows), so every audience is sampled at the same known fraction;
* followers have interests, an activity level, a purchase propensity and a hidden loyalty
  propensity; bots view and like a lot, in bursts, rarely comment and never buy;
* follower-influencer affinity is higher for small influencers and interest matches, and it
  drives engagement (view -> like -> comment/share/save -> click) on organic and sponsored
  posts with weekly and daily seasonality;
* brands run campaigns in waves (several influencers, one start time); a follower converts
  (first purchase) and buys again within the horizon with probabilities the outcome model
  (`outcomes`) spells out; background purchases and purchases by earlier converters run as
  Poisson processes, so past purchases carry real signal and ground truth is exact.

Modules: `params` (sizes and every behavioural coefficient), `entities` (influencers, brands,
followers, follows, posts, campaigns), `engagement` (the event log, in chunks), `outcomes`
(purchases, labels and their true probabilities), `tables` (what is written), `summary`,
`retail` (the same world as a retailer's transaction log: purchases only, one channel).
The pure core yields tables (pyarrow); `write_world` writes them.
"""

from __future__ import annotations

from loyalty_model.simulation.engagement import engagement_chunks
from loyalty_model.simulation.entities import World, build_world
from loyalty_model.simulation.outcomes import Outcomes, campaign_effects, draw_outcomes
from loyalty_model.simulation.params import (
    LABEL_HORIZON_DAYS,
    LABEL_MIN_PURCHASES,
    PARAMS,
    PRESETS,
    WORLD_START,
    Params,
    Preset,
)
from loyalty_model.simulation.summary import SimulationSummary, summarise
from loyalty_model.simulation.tables import EVENT_SCHEMA, entity_tables

__all__ = [
    "EVENT_SCHEMA",
    "LABEL_HORIZON_DAYS",
    "LABEL_MIN_PURCHASES",
    "PARAMS",
    "PRESETS",
    "WORLD_START",
    "Outcomes",
    "Params",
    "Preset",
    "SimulationSummary",
    "World",
    "build_world",
    "campaign_effects",
    "draw_outcomes",
    "engagement_chunks",
    "entity_tables",
    "simulate_world",
    "summarise",
]


def simulate_world(preset_name: str, seed: int):
    """(world, outcomes, entity tables). Engagement events come from `engagement_chunks`."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    w = build_world(PRESETS[preset_name], seed)
    return w, draw_outcomes(w), entity_tables(w)
