"""The purchase-only world (simulation.retail): the same world as the influencer world, written
as a retailer's transaction log, with ground truth that keeps its meaning."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from loyalty_model import simulation as sim
from loyalty_model.engines import duckdb_connection
from loyalty_model.io import validate_dir
from loyalty_model.simulation import retail
from loyalty_model.simulation.files import write_world
from loyalty_model.simulation.truth import counterfactual_parts, set_probabilities, state_at

FILES = (
    "events.parquet",
    "follows.parquet",
    "influencers.parquet",
    "brands.parquet",
    "campaigns.parquet",
    "ground_truth.parquet",
    "ground_truth_campaigns.parquet",
    "simulation.json",
)


@pytest.fixture(scope="module")
def retail_world(tmp_path_factory):
    """The purchase-only `tiny` world, seed 1 (the influencer world of the `tiny_world`
    fixture). Read-only."""
    out = tmp_path_factory.mktemp("tiny-retail") / "data"
    write_world("tiny", 1, out, purchase_only=True)
    return out


def digest(root) -> dict[str, str]:
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in FILES}


def test_same_seed_gives_identical_bytes(retail_world, tmp_path):
    again = tmp_path / "again"
    summary = write_world("tiny", 1, again, purchase_only=True)
    assert digest(again) == digest(retail_world)
    assert summary.purchase_only and summary.influencers == 1
    assert not (again / "ground_truth_scoring.parquet").exists()
    assert not (again / "ground_truth_audiences.parquet").exists()


def test_satisfies_the_contract_with_one_influencer_and_purchases_only(retail_world):
    assert validate_dir(duckdb_connection(), retail_world) == []
    ev = pd.read_parquet(retail_world / "events.parquet")
    assert set(ev.event_type) == {"purchase"}
    assert ev.influencer_id.isna().all() and ev.post_id.isna().all()  # no attribution
    inf = pd.read_parquet(retail_world / "influencers.parquet")
    fol = pd.read_parquet(retail_world / "follows.parquet")
    assert inf.influencer_id.tolist() == [retail.RETAILER_ID]
    assert inf.follower_count.tolist() == [len(fol)] and inf.sample_fraction.tolist() == [1.0]
    # every buyer is a customer from their first purchase on, and nobody else is
    first = ev.groupby("follower_id").event_ts.min()
    assert fol.follower_id.is_unique and set(fol.follower_id) == set(first.index)
    assert (fol.set_index("follower_id").followed_at == first.loc[fol.follower_id]).all()
    assert fol.unfollowed_at.isna().all() and (fol.influencer_id == retail.RETAILER_ID).all()
    meta = json.loads((retail_world / "simulation.json").read_text())
    assert meta["purchase_only"] is True and meta["scoring_scenarios"] == []


def test_purchases_are_the_influencer_worlds(retail_world, tiny_world):
    cols = ["event_ts", "follower_id", "brand_id", "amount"]
    full = pd.read_parquet(tiny_world / "events.parquet", filters=[("event_type", "=", "purchase")])
    ours = pd.read_parquet(retail_world / "events.parquet")
    assert len(ours) > 1000
    pd.testing.assert_frame_equal(
        ours[cols].reset_index(drop=True), full[cols].reset_index(drop=True)
    )
    for name in ("brands.parquet",):
        pd.testing.assert_frame_equal(
            pd.read_parquet(retail_world / name), pd.read_parquet(tiny_world / name)
        )


def test_one_campaign_per_wave_with_the_waves_cost(retail_world, tiny_world):
    ours = pd.read_parquet(retail_world / "campaigns.parquet")
    full = pd.read_parquet(tiny_world / "campaigns.parquet")
    waves = full.groupby(["brand_id", "start_ts"]).agg(
        cost=("cost", lambda c: c.sum() if c.notna().all() else np.nan), n=("cost", "size")
    )
    assert len(ours) == len(waves) and (waves.n > 1).any()
    assert (ours.influencer_id == retail.RETAILER_ID).all()
    got = ours.set_index(["brand_id", "start_ts"]).cost.loc[waves.index]
    np.testing.assert_allclose(got.to_numpy(), waves.cost.round(2).to_numpy())
    src = pd.read_parquet(retail_world / "ground_truth_campaigns.parquet")
    assert sorted(c for cs in src.source_campaigns for c in cs) == sorted(full.campaign_id)


def test_truth_rows_are_the_spine_and_their_labels_the_data(retail_world):
    """One ground truth row per customer at each campaign's start (who spine.training_spine
    reads from follows), and `loyal` is the label definition applied to the events."""
    df = pd.DataFrame(
        duckdb_connection()
        .execute(
            f"""
            WITH p AS (SELECT follower_id, brand_id, event_ts FROM '{retail_world}/events.parquet')
            SELECT c.campaign_id, f.follower_id, count(p.event_ts) >= 2 AS from_data
            FROM '{retail_world}/campaigns.parquet' c
            JOIN '{retail_world}/follows.parquet' f ON f.followed_at <= c.start_ts
            LEFT JOIN p ON p.follower_id = f.follower_id AND p.brand_id = c.brand_id
             AND p.event_ts >= c.start_ts AND p.event_ts < c.start_ts + INTERVAL 90 DAY
            GROUP BY ALL ORDER BY 1, 2
            """
        )
        .df()
    )
    gt = pd.read_parquet(retail_world / "ground_truth.parquet")
    gt = gt.sort_values(["campaign_id", "follower_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        gt[["campaign_id", "follower_id"]], df[["campaign_id", "follower_id"]], check_dtype=False
    )
    assert (gt.loyal == df.from_data).all() and gt.loyal.sum() > 100
    assert not gt.is_bot.any() and gt.p_true.between(0, 1).all()
    camps = pd.read_parquet(retail_world / "ground_truth_campaigns.parquet").set_index(
        "campaign_id"
    )
    sums = gt.groupby("campaign_id").agg(
        p=("p_true", "sum"), y=("loyal", "sum"), n=("loyal", "size")
    )
    np.testing.assert_allclose(camps.loc[sums.index, "expected_loyal"], sums.p)
    assert (camps.loc[sums.index, "realised_loyal"] == sums.y).all()
    assert (camps.loc[sums.index, "followers"] == sums.n).all()


def test_p_true_is_the_waves_truth_exposed_or_not(retail_world, tiny_world):
    """p_true of an exposed customer is the influencer world's p_true of the wave (all its
    campaigns together); of every customer, set_probabilities over the wave's campaigns with
    their realised effects, which for the unexposed is the world without the campaign."""
    ours = pd.read_parquet(retail_world / "ground_truth.parquet")
    full = pd.read_parquet(tiny_world / "ground_truth.parquet")
    src = pd.read_parquet(retail_world / "ground_truth_campaigns.parquet")
    wave_of = {
        c: w for w, cs in zip(src.campaign_id, src.source_campaigns, strict=True) for c in cs
    }
    full = full.assign(w=full.campaign_id.map(wave_of)).groupby(["w", "follower_id"]).p_true.first()
    exposed = ours[ours.exposed].set_index(["campaign_id", "follower_id"]).p_true
    assert len(exposed) > 1000 and (~ours.exposed).sum() > 1000
    np.testing.assert_allclose(exposed, full.loc[exposed.index].to_numpy(), rtol=1e-12)
    # recomputed for a few customers of a wave of several campaigns, from the parts
    w = sim.build_world(sim.PRESETS["tiny"], seed=1)
    out = sim.draw_outcomes(w)
    effects = sim.campaign_effects(w)
    k = next(i for i, cs in enumerate(src.source_campaigns) if len(cs) > 1)
    camps = [int(c[1:]) for c in src.source_campaigns[k]]
    brand, start = int(w.ca_brand[camps[0]]), int(w.ca_start[camps[0]])
    state = state_at(out.brand_states[brand], start)
    rows = [w.follows_of(w.ca_inf[c]) for c in camps]
    rows = [r[w.following_at(r, start)] for r in rows]
    mine = ours[ours.campaign_id == src.campaign_id[k]].set_index("follower_id").p_true
    seen = np.unique(np.concatenate([w.fw_fol[r] for r in rows]))
    people = [f"f{i:04d}" for i in seen[:5]]
    unexposed = sorted(set(mine.index) - {f"f{i:04d}" for i in seen})[:5]
    follow_rows = np.concatenate(rows)
    parts = [
        counterfactual_parts(w, state, brand, r, effect=float(effects[c]))
        for r, c in zip(rows, camps, strict=True)
    ]
    ids, p = set_probabilities(
        np.array([f"f{i:04d}" for i in w.fw_fol[follow_rows]]),
        *(np.concatenate([pt[j] for pt in parts]) for j in range(3)),
    )
    got = pd.Series(p, index=ids)
    people = [f for f in people if f in mine.index]
    assert people and unexposed
    np.testing.assert_allclose(mine.loc[people], got.loc[people], rtol=1e-12)
    # the unexposed: no campaign of the wave reaches them (p_convert 0)
    idx = np.array([int(f[1:]) for f in unexposed])
    rate = sim.outcomes.background_rate(w, idx, np.full(len(idx), brand)) + state.rate_of(idx)
    want = sim.outcomes.loyal_probability(
        np.zeros(len(idx)),
        sim.outcomes.repeat_probability(w, idx, brand),
        rate * sim.LABEL_HORIZON_DAYS,
    )
    np.testing.assert_allclose(mine.loc[unexposed], want, rtol=1e-12)
