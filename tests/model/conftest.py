"""Fixtures of the model-behaviour tests: one scoring request on the tiny world (the
simulator's first scoring scenario, a few influencers), and its baseline scores and features
from the model trained on tiny (`tiny_trained`)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from . import _data


@pytest.fixture(scope="session")
def scenario(tiny_world) -> _data.Request:
    """The simulator's first scoring scenario (brand, as-of), scored for the three largest
    audiences under 500 followers at the as-of: every kind of feature, a short predict call."""
    first = json.loads((tiny_world / "simulation.json").read_text())["scoring_scenarios"][0]
    brand, as_of = first["brand_id"], first["as_of"]
    tables = _data.read_tables(tiny_world)
    everyone = _data.Request(brand, as_of, tuple(tables["influencers"]["influencer_id"]))
    size = _data.audience(tables, everyone).groupby("influencer_id").size()
    chosen = size[size < 500].sort_values(ascending=False, kind="stable").head(3)
    assert len(chosen) == 3 and chosen.min() >= 10, size
    return _data.Request(brand, as_of, tuple(sorted(chosen.index)))


@pytest.fixture(scope="session")
def tables(tiny_world) -> dict[str, pd.DataFrame]:
    """The tiny world's five tables. Shared: build changed copies, never change these."""
    return _data.read_tables(tiny_world)


@pytest.fixture(scope="session")
def model(tiny_trained):
    """The trained LoyaltyModel (what `predict` loads from the registry)."""
    return tiny_trained.outcome.model


@pytest.fixture(scope="session")
def baseline_result(tiny_world, scenario, tiny_trained, tiny_config, tmp_path_factory):
    """The scenario scored on the unchanged world."""
    out = tmp_path_factory.mktemp("baseline") / "scores"
    return _data.predict(tiny_world, scenario, out, tiny_trained, tiny_config)


@pytest.fixture(scope="session")
def baseline(baseline_result) -> pd.Series:
    """p_loyal of the scenario on the unchanged world, by (follower_id, influencer_id)."""
    return _data.p_loyal(baseline_result)


@pytest.fixture(scope="session")
def baseline_features(tiny_world, scenario, model) -> pd.DataFrame:
    """The scenario's scoring features on the unchanged world."""
    return _data.feature_frame(tiny_world, scenario, model)


@pytest.fixture
def score(scenario, tiny_trained, tiny_config, model, tmp_path):
    """score(tables[, req]) -> (PredictionResult, features) of a request (default: the
    scenario) on a world written from `tables` under tmp_path."""
    n = 0

    def run(tables: dict[str, pd.DataFrame], req: _data.Request = scenario):
        nonlocal n
        n += 1
        data = _data.write_tables(tables, tmp_path / f"world{n}")
        result = _data.predict(data, req, tmp_path / f"scores{n}", tiny_trained, tiny_config)
        return result, _data.feature_frame(data, req, model)

    return run
