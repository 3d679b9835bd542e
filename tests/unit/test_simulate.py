"""Simulator invariants: determinism, bots, time ranges, ground truth that matches the data,
and (on `small`, marked slow) the rates and oracle AUC the world is built to have."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

import loyalty_model as lm
from loyalty_model import simulation as sim
from loyalty_model.contract import TIERS
from loyalty_model.engines import duckdb_connection
from loyalty_model.io import validate_dir

TABLE_FILES = (
    "events.parquet",
    "follows.parquet",
    "influencers.parquet",
    "brands.parquet",
    "campaigns.parquet",
    "ground_truth.parquet",
    "ground_truth_campaigns.parquet",
    "ground_truth_scoring.parquet",
    "ground_truth_audiences.parquet",
    "simulation.json",
)


def digest(root) -> dict[str, str]:
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in TABLE_FILES}


def q(sql: str, **paths) -> pd.DataFrame:
    con = duckdb_connection()
    return con.execute(sql.format(**{k: f"'{v}'" for k, v in paths.items()})).df()


def test_same_preset_and_seed_give_identical_bytes(tiny_world, tmp_path):
    again = tmp_path / "again"
    summary = lm.simulate("tiny", 1, again)
    assert digest(again) == digest(tiny_world)
    assert isinstance(summary, lm.SimulationSummary) and summary.preset == "tiny"
    assert not summary.purchase_only  # the influencer world (simulation.retail: the other)
    assert json.loads((again / "simulation.json").read_text())["purchase_only"] is False


def test_another_seed_gives_another_world(tiny_world, tmp_path):
    other = tmp_path / "other"
    lm.simulate("tiny", 2, other)
    assert digest(other)["events.parquet"] != digest(tiny_world)["events.parquet"]


def test_simulated_world_satisfies_the_contract(tiny_world):
    assert validate_dir(duckdb_connection(), tiny_world) == []


def test_tiny_is_small_enough_for_tests(tiny_world):
    n = q("SELECT count(*) AS n FROM {e}", e=tiny_world / "events.parquet").n[0]
    assert 10_000 < n < 100_000


def test_bots_never_purchase_click_share_or_save(tiny_world):
    df = q(
        """
        SELECT e.event_type, count(*) AS n
        FROM {e} e JOIN (SELECT DISTINCT follower_id FROM {gt} WHERE is_bot) b USING (follower_id)
        GROUP BY 1
        """,
        e=tiny_world / "events.parquet",
        gt=tiny_world / "ground_truth.parquet",
    ).set_index("event_type")["n"]
    assert set(df.index) <= {"view", "like", "comment"}
    assert df["like"] > 0.5 * df["view"]  # bots like a lot ...
    assert df.get("comment", 0) < 0.01 * df["like"]  # ... and rarely comment


def test_bots_have_zero_true_probability(tiny_world):
    gt = pd.read_parquet(tiny_world / "ground_truth.parquet")
    assert gt.is_bot.any()
    assert (gt.loc[gt.is_bot, "p_true"] == 0).all()
    assert not gt.loc[gt.is_bot, "loyal"].any()


def test_timestamps_lie_inside_the_world(tiny_world):
    meta = json.loads((tiny_world / "simulation.json").read_text())
    start = pd.Timestamp(int(meta["world_start"]), unit="s", tz="UTC")
    end = start + pd.Timedelta(days=meta["preset_config"]["days"])
    r = q(
        "SELECT min(event_ts) lo, max(event_ts) hi FROM {e}", e=tiny_world / "events.parquet"
    ).iloc[0]
    assert start <= r.lo and r.hi < end
    c = pd.read_parquet(tiny_world / "campaigns.parquet")
    assert (c.start_ts >= start + pd.Timedelta(days=meta["preset_config"]["warmup_days"])).all()
    assert (c.start_ts < end).all()
    f = pd.read_parquet(tiny_world / "follows.parquet")
    assert (f.unfollowed_at.dropna() < end).all()


def test_ground_truth_label_is_the_label_definition_applied_to_the_data(tiny_world):
    """The outcome ground truth reports is exactly what the data says: >= 2 purchases of the
    brand in [start, start + 90 days), from any source (campaign, background, earlier)."""
    df = q(
        """
        WITH gt AS (SELECT * FROM {gt} WHERE window_closed),
        p AS (SELECT follower_id, brand_id, event_ts FROM {e} WHERE event_type = 'purchase')
        SELECT gt.campaign_id, gt.follower_id, any_value(gt.loyal) AS truth,
               count(p.event_ts) >= 2 AS from_data
        FROM gt LEFT JOIN p ON p.follower_id = gt.follower_id AND p.brand_id = gt.brand_id
             AND p.event_ts >= gt.cutoff_ts AND p.event_ts < gt.cutoff_ts + INTERVAL 90 DAY
        GROUP BY ALL
        """,
        e=tiny_world / "events.parquet",
        gt=tiny_world / "ground_truth.parquet",
    )
    assert len(df) > 1000 and df.from_data.sum() > 10
    assert (df.truth == df.from_data).all()


def test_ground_truth_rows_are_the_followers_at_campaign_start(tiny_world):
    expected = q(
        """
        SELECT c.campaign_id, f.follower_id
        FROM {c} c JOIN {f} f ON f.influencer_id = c.influencer_id
         AND f.followed_at <= c.start_ts
         AND (f.unfollowed_at IS NULL OR f.unfollowed_at > c.start_ts)
        ORDER BY 1, 2
        """,
        c=tiny_world / "campaigns.parquet",
        f=tiny_world / "follows.parquet",
    )
    gt = pd.read_parquet(
        tiny_world / "ground_truth.parquet", columns=["campaign_id", "follower_id"]
    )
    got = gt.sort_values(["campaign_id", "follower_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_ground_truth_campaigns_sum_the_rows(tiny_world):
    rows = pd.read_parquet(tiny_world / "ground_truth.parquet")
    camps = pd.read_parquet(tiny_world / "ground_truth_campaigns.parquet").set_index("campaign_id")
    sums = rows.groupby("campaign_id").p_true.sum()
    np.testing.assert_allclose(camps.loc[sums.index, "expected_loyal"], sums)
    assert ((rows.p_true >= 0) & (rows.p_true <= 1)).all()


def test_influencers_are_heavy_tailed_and_price_is_sublinear(tiny_world):
    inf = pd.read_parquet(tiny_world / "influencers.parquet")
    assert inf.follower_count.min() < 10_000 and inf.follower_count.max() >= 1_000_000
    known = inf.dropna(subset=["price_per_post"])
    slope = np.polyfit(np.log(known.follower_count), np.log(known.price_per_post), 1)[0]
    assert 0.5 < slope < 0.95


def test_every_audience_is_sampled_at_the_declared_fraction():
    """Every influencer has Binomial(follower_count, f) of its followers in the data, with the
    same f for all, declared in the contract column; audiences are drawn without losing
    anyone to duplicates; everyone in the data follows someone."""
    w = sim.build_world(sim.PRESETS["small"], seed=4)
    f = w.preset.sample_fraction
    n = np.bincount(w.fw_inf, minlength=len(w.inf_tier))
    expected = w.inf_followers * f
    z = (n - expected) / np.sqrt(expected * (1 - f))
    assert np.abs(z).max() < 4.5 and abs(z.mean()) < 0.3 and 0.7 < z.std() < 1.3
    assert n.sum() == pytest.approx(expected.sum(), rel=0.02)
    assert set(np.unique(w.fw_fol)) == set(range(len(w.fol_bot)))
    tables = sim.entity_tables(w)
    assert set(tables["influencers"]["sample_fraction"].to_pylist()) == {f}


def test_every_tier_present_even_in_tiny():
    w = sim.build_world(sim.PRESETS["tiny"], seed=3)
    assert set(np.unique(w.inf_tier)) == set(range(len(TIERS)))


def test_campaign_windows_of_one_brand_never_overlap():
    w = sim.build_world(sim.PRESETS["small"], seed=5)
    for b in np.unique(w.ca_brand):
        starts = np.unique(w.ca_start[w.ca_brand == b])
        assert (np.diff(starts) > sim.LABEL_HORIZON_DAYS * 86_400).all()


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        sim.simulate_world("huge", 1)


# -- the world's headline properties, on the demo's `small` world ---------------------------


@pytest.fixture(scope="module")
def small_gt(small_world) -> pd.DataFrame:
    return pd.read_parquet(small_world / "ground_truth.parquet")


@pytest.mark.slow
def test_small_has_demo_size(small_world):
    n = q("SELECT count(*) AS n FROM {e}", e=small_world / "events.parquet").n[0]
    assert 2_000_000 <= n <= 3_000_000


@pytest.mark.slow
def test_small_loyal_rate_is_realistic(small_gt):
    rate = small_gt.loc[small_gt.window_closed, "loyal"].mean()
    assert 0.005 <= rate <= 0.03


@pytest.mark.slow
def test_micro_audiences_convert_better_per_follower_than_macro(small_gt):
    closed = small_gt[small_gt.window_closed]
    per_follower = closed.groupby("tier").p_true.mean()
    assert per_follower["micro"] > 1.2 * per_follower["macro"]
    assert per_follower["nano"] > per_follower["mega"]
    # per campaign too, not only pooled over rows
    per_campaign = closed.groupby(["tier", "campaign_id"]).p_true.mean().groupby("tier").median()
    assert per_campaign["micro"] > per_campaign["macro"]


@pytest.mark.slow
def test_oracle_auc_on_held_out_campaigns_is_in_band(small_world):
    meta = json.loads((small_world / "simulation.json").read_text())
    assert 0.75 <= meta["oracle_auc_holdout"] <= 0.92
    assert meta["holdout_campaigns"] >= 50
