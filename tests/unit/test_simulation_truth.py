"""Counterfactual ground truth for scoring scenarios: it is the outcome model that drew the
campaigns, at a date where the brand's purchase streams are known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from loyalty_model import simulation as sim
from loyalty_model.simulation.truth import (
    QUADRATURE_NODES,
    choose_scenarios,
    counterfactual_parts,
    counterfactual_probabilities,
    set_probabilities,
    state_at,
)

HORIZON = sim.LABEL_HORIZON_DAYS * 86_400


@pytest.fixture(scope="module")
def world_and_outcomes():
    w = sim.build_world(sim.PRESETS["tiny"], seed=1)
    return w, sim.draw_outcomes(w)


def test_truth_reproduces_the_campaigns_probabilities(world_and_outcomes):
    """With a real campaign's own effect, the counterfactual probability of each follower is
    the p_true the campaign was drawn with (single-influencer waves: no shared followers)."""
    w, out = world_and_outcomes
    gt = out.ground_truth.to_pandas()
    effects = sim.campaign_effects(w)
    checked = 0
    for c in range(len(w.ca_inf)):
        if (w.ca_wave == w.ca_wave[c]).sum() != 1:
            continue
        brand, start = int(w.ca_brand[c]), int(w.ca_start[c])
        rows = w.follows_of(w.ca_inf[c])
        rows = rows[w.following_at(rows, start)]
        state = state_at(out.brand_states[brand], start)
        p = counterfactual_probabilities(w, state, brand, rows, effect=effects[c])
        want = gt[gt.campaign_id == w.ids["c"][c].as_py()].set_index("follower_id").p_true
        got = pd.Series(p, index=[w.ids["f"][f].as_py() for f in w.fw_fol[rows]])
        np.testing.assert_allclose(got.sort_index(), want.sort_index(), rtol=1e-12)
        checked += len(rows)
    assert checked > 1000


def test_set_truth_reproduces_the_waves_of_several_influencers(world_and_outcomes):
    """The truth of several campaigns at once (what a plan books) is the simulator's own: for
    each wave of two influencers or more, with each campaign's effect, the combined
    probability of every follower is the p_true the wave was drawn with, shared followers
    included."""
    w, out = world_and_outcomes
    gt = out.ground_truth.to_pandas()
    effects = sim.campaign_effects(w)
    checked = shared = 0
    for wave in np.unique(w.ca_wave):
        camps = np.flatnonzero(w.ca_wave == wave)
        if len(camps) < 2:
            continue
        brand, start = int(w.ca_brand[camps[0]]), int(w.ca_start[camps[0]])
        state = state_at(out.brand_states[brand], start)
        ids, parts = [], []
        for c in camps:
            rows = w.follows_of(w.ca_inf[c])
            rows = rows[w.following_at(rows, start)]
            ids.append(np.array([w.ids["f"][f].as_py() for f in w.fw_fol[rows]], dtype=object))
            parts.append(counterfactual_parts(w, state, brand, rows, effect=effects[c]))
        ids_all = np.concatenate(ids)
        followers, p = set_probabilities(
            ids_all, *(np.concatenate([pt[k] for pt in parts]) for k in range(3))
        )
        names = {w.ids["c"][c].as_py() for c in camps}
        want = gt[gt.campaign_id.isin(names)].groupby("follower_id").p_true.first()
        np.testing.assert_allclose(p, want.loc[followers].to_numpy(), rtol=1e-12)
        checked += len(followers)
        shared += len(ids_all) - len(followers)
    assert checked > 100 and shared > 0


def test_the_campaign_effect_is_integrated_over_its_distribution(world_and_outcomes):
    w, out = world_and_outcomes
    rows = np.arange(200)
    state = state_at(out.brand_states[0], w.end)
    integrated = counterfactual_probabilities(w, state, 0, rows)
    sd = w.params.outcomes.campaign_effect_sd
    grid = np.linspace(-8 * sd, 8 * sd, 4001)
    dens = np.exp(-0.5 * (grid / sd) ** 2)
    dens /= dens.sum()
    dense = sum(
        d * counterfactual_probabilities(w, state, 0, rows, e)
        for e, d in zip(grid, dens, strict=True)
    )
    np.testing.assert_allclose(integrated, dense, rtol=1e-6, atol=1e-12)
    assert QUADRATURE_NODES >= 10
    # a convex-concave sigmoid: integrating is not the same as plugging in the mean effect
    assert not np.allclose(integrated, counterfactual_probabilities(w, state, 0, rows, 0.0))


def test_scenarios_are_dates_when_no_wave_of_the_brand_is_under_way(world_and_outcomes):
    w, _ = world_and_outcomes
    scenarios = choose_scenarios(w, n=10)
    assert len(scenarios) >= 3
    for s in scenarios:
        assert (s.as_of - w.start) % 86_400 == 0 and w.start < s.as_of <= w.end
        starts = w.ca_start[w.ca_brand == s.brand]
        assert not ((starts < s.as_of) & (s.as_of < starts + HORIZON)).any()
    assert [s.as_of for s in scenarios] == sorted((s.as_of for s in scenarios), reverse=True)


def test_truth_files_add_up_and_name_their_scenarios(tiny_world):
    meta = json.loads((tiny_world / "simulation.json").read_text())
    scenarios = {s["scenario_id"]: s for s in meta["scoring_scenarios"]}
    assert len(scenarios) == 3
    rows = pd.read_parquet(tiny_world / "ground_truth_scoring.parquet")
    aud = pd.read_parquet(tiny_world / "ground_truth_audiences.parquet")
    inf = pd.read_parquet(tiny_world / "influencers.parquet")
    assert set(rows.scenario_id) == set(aud.scenario_id) == set(scenarios)
    for sid, s in scenarios.items():
        a = aud[aud.scenario_id == sid].set_index("influencer_id")
        r = rows[rows.scenario_id == sid]
        assert (a.brand_id == s["brand_id"]).all()
        assert (a.as_of.dt.date.astype(str) == s["as_of"]).all()
        assert set(a.index) == set(inf.influencer_id)
        sums = r.groupby("influencer_id").p_true.agg(["sum", "count"])
        np.testing.assert_allclose(a.loc[sums.index, "true_expected_loyal_in_data"], sums["sum"])
        assert (a.loc[sums.index, "followers_in_data"] == sums["count"]).all()
        full = a.true_loyal_rate * a.follower_count
        np.testing.assert_allclose(a.true_expected_loyal, full)
        priced = a.dropna(subset=["true_cost_per_loyal"])
        np.testing.assert_allclose(
            priced.true_cost_per_loyal, priced.price_per_post / priced.true_expected_loyal
        )
    assert (rows.loc[rows.is_bot, "p_true"] == 0).all()
    assert rows.p_true.between(0, 1).all() and rows.p_true.max() > 0.05
