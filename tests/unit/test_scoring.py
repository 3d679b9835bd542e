"""Audience scores on the full-audience scale, ranking and the spec check, on numbers the
tests compute themselves."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from loyalty_model import scoring
from loyalty_model.errors import ModelError
from loyalty_model.features import BUILDS_VERSIONS, FEATURE_VERSION, FeatureSpec
from loyalty_model.intervals import AudienceAccumulator


def _audiences(p_by_influencer: dict[str, list[float]]) -> dict:
    out = {}
    for inf, p in p_by_influencer.items():
        a = AudienceAccumulator()
        a.add(np.array(p, dtype=float))
        out[inf] = a
    return out


INFLUENCERS = pd.DataFrame(
    {
        "influencer_id": ["big", "small", "unpriced", "empty"],
        "follower_count": [1_000_000, 2_000, 50_000, 4_000],
        "category": ["food"] * 4,
        "price_per_post": [10_000.0, 100.0, None, 50.0],
    }
)


def test_audience_scores_put_counts_and_costs_on_the_full_audience():
    aud = scoring.audience_scores(
        _audiences({"big": [0.01] * 1000, "small": [0.05] * 20, "unpriced": [0.1, 0.2]}),
        INFLUENCERS,
        "b1",
        datetime(2025, 1, 1, tzinfo=UTC),
        ["big", "small", "unpriced", "empty"],
        dispersion=0.1,
    ).set_index("influencer_id")
    assert list(aud.columns) == list(scoring.AUDIENCE_COLUMNS)[1:]
    big, small = aud.loc["big"], aud.loc["small"]
    # the rate carries over; counts and costs refer to follower_count
    assert big.loyal_rate == pytest.approx(0.01) and big.expected_loyal == pytest.approx(10_000)
    assert big.expected_loyal_scored == pytest.approx(10) and big.followers_scored == 1000
    assert big.cost_per_expected_loyal == pytest.approx(1.0)
    assert small.expected_loyal == pytest.approx(100)
    assert small.cost_per_expected_loyal == pytest.approx(1.0)
    assert big.sample_fraction == pytest.approx(0.001) and not big.sample_fraction_declared
    assert big.expected_loyal_low < 10_000 < big.expected_loyal_high
    # sampling: 20 of 2,000 followers seen leave the count far less certain than 1,000 of 1M
    rng = np.random.default_rng(0)
    spread = scoring.audience_scores(
        _audiences({"big": rng.beta(1, 30, 1000), "small": rng.beta(1, 30, 20)}),
        INFLUENCERS,
        "b1",
        datetime(2025, 1, 1, tzinfo=UTC),
        ["big", "small"],
    ).set_index("influencer_id")
    rel = (spread.expected_loyal_high - spread.expected_loyal_low) / spread.expected_loyal
    assert rel["small"] > 2 * rel["big"]
    # no followers scored: no rate, count or cost, and no rank; still a row
    empty = aud.loc["empty"]
    assert empty.followers_scored == 0 and pd.isna(empty.loyal_rate)
    assert pd.isna(empty.expected_loyal) and pd.isna(empty.rank_cost) and pd.isna(empty.rank_rate)
    # the unpriced influencer has the best rate: first by rate, no rank by cost
    assert aud.loc["unpriced", "rank_rate"] == 1 and pd.isna(aud.loc["unpriced", "rank_cost"])


def test_declared_sample_fractions_are_reported_as_declared():
    inf = INFLUENCERS.assign(sample_fraction=[0.002, None, 0.5, None])
    aud = scoring.audience_scores(
        _audiences({"big": [0.01] * 1000, "small": [0.05] * 20}),
        inf,
        "b1",
        datetime(2025, 1, 1, tzinfo=UTC),
        ["big", "small"],
    ).set_index("influencer_id")
    assert aud.loc["big", "sample_fraction"] == 0.002 and aud.loc["big", "sample_fraction_declared"]
    assert aud.loc["small", "sample_fraction"] == 0.01
    assert not aud.loc["small", "sample_fraction_declared"]


def test_rank_by_cost_and_by_rate():
    df = pd.DataFrame(
        {
            "influencer_id": ["a", "b", "c", "d", "e"],
            "price_per_post": [100.0, 100.0, None, 100.0, 150.0],
            "cost_per_expected_loyal": [10.0, 5.0, None, None, 5.0],
            "loyal_rate": [0.01, 0.02, 0.05, None, 0.03],
        }
    )
    ranked = scoring.rank_audiences(df)
    # e and b cost the same: the higher rate first; c has no price, d no followers scored
    assert list(ranked.influencer_id) == ["e", "b", "a", "c", "d"]
    assert ranked.rank_cost.tolist() == [1, 2, 3, pd.NA, pd.NA]
    assert ranked.rank_rate.tolist() == [2, 3, 4, 1, pd.NA]


def _spec(**kw) -> FeatureSpec:
    base = FeatureSpec(
        version=FEATURE_VERSION,
        windows=(7, 30),
        prior_strength=10.0,
        horizon_days=90,
        min_purchases=2,
        require_attribution=False,
        names=("x",),
        categorical=(),
        categories={},
    )
    return replace(base, **kw)


class _Model:
    def __init__(self, spec):
        self.spec = spec


def test_spec_check_accepts_current_version():
    fcfg, lcfg = scoring.check_spec(_Model(_spec()))
    assert fcfg.windows == (7, 30) and lcfg.horizon_days == 90


def test_a_model_of_version_2_is_still_scored_and_needs_no_bg_nbd_fit():
    """Version 3 added features and changed none of version 2's: its models read what they
    were trained on. They read no BG/NBD feature, so none is fitted for them."""
    assert BUILDS_VERSIONS == ("2", FEATURE_VERSION) == ("2", "3")
    old = _Model(_spec(version="2", names=("fb_purchases_all",)))
    scoring.check_spec(old)
    fits = scoring.scoring_fits({}, [("b1", datetime(2025, 1, 1, tzinfo=UTC))], old)
    assert fits.fits == 0 and fits.params.empty


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "99"}, "feature spec version '99'"),
        ({"version": "1"}, "feature spec version '1'"),  # a model from before the rebuy rates
        ({"windows": ()}, "spec is not valid"),
        ({"windows": (7, 7)}, "spec is not valid"),
        ({"prior_strength": -1.0}, "spec is not valid"),
        ({"horizon_days": 0}, "spec is not valid"),
        ({"min_purchases": 0}, "spec is not valid"),
        ({"require_attribution": "sometimes"}, "spec is not valid"),
    ],
)
def test_spec_check_refuses_what_it_cannot_build(change, message):
    with pytest.raises(ModelError, match=message):
        scoring.check_spec(_Model(_spec(**change)))


def test_an_interval_does_not_depend_on_the_other_influencers_requested():
    rng = np.random.default_rng(3)
    acc = _audiences({"small": rng.beta(1, 30, 5), "big": rng.beta(1, 30, 1000)})
    when = datetime(2025, 1, 1, tzinfo=UTC)
    spread = {"nano": 0.0015, "mega": 0.0005}
    both = scoring.audience_scores(acc, INFLUENCERS, "b1", when, ["small", "big"], 0.1, spread)
    alone = scoring.audience_scores(acc, INFLUENCERS, "b1", when, ["small"], 0.1, spread)
    cols = ["expected_loyal_low", "expected_loyal_high"]
    pd.testing.assert_frame_equal(
        both.set_index("influencer_id").loc[["small"], cols],
        alone.set_index("influencer_id").loc[["small"], cols],
    )


def test_edge_cases_of_the_whole_audience():
    inf = pd.DataFrame(
        {
            "influencer_id": ["stale", "nobody", "unseen", "fine"],
            "follower_count": [3, 4_000, 4_000, 4_000],
            "category": ["food"] * 4,
            "price_per_post": [10.0, 20.0, 30.0, 40.0],
        }
    )
    acc = _audiences({"stale": [0.1] * 5, "nobody": [0.0] * 4, "fine": [0.02] * 40})
    aud = scoring.audience_scores(
        acc, inf, "b1", datetime(2025, 1, 1, tzinfo=UTC), list(inf.influencer_id), 0.0, {}
    ).set_index("influencer_id")
    # a follower count below the followers seen: the whole audience is at least them
    assert aud.loc["stale", "expected_loyal"] == pytest.approx(0.5)
    assert aud.loc["stale", "sample_fraction"] == 1.0
    # expected to bring no loyal customer: no cost, ranked last by cost
    assert pd.isna(aud.loc["nobody", "cost_per_expected_loyal"])
    assert aud.loc["nobody", "rank_cost"] == 3 and aud.loc["fine", "rank_cost"] == 1
    # nobody scored: no fraction to imply, no rank
    assert pd.isna(aud.loc["unseen", "sample_fraction"]) and pd.isna(aud.loc["unseen", "rank_cost"])
    summary = scoring.audience_summary(aud.reset_index())
    assert summary["follower_count_below_followers_scored"] == 1
    assert summary["without_followers_scored"] == 1 and summary["ranked_by_cost"] == 3


def test_accumulate_adds_each_run_of_keys_to_its_audience():
    inf = np.array(["a", "a", "b", "b", "b", "a"], dtype=object)
    brand = np.array(["x", "x", "x", "y", "y", "y"], dtype=object)
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    by_inf: dict = {}
    scoring.accumulate(by_inf, [inf[:5]], p[:5])
    assert {k: a.n for k, a in by_inf.items()} == {"a": 2, "b": 3}
    both: dict = {}
    scoring.accumulate(both, [brand, inf], p)
    assert {k: round(a.m1, 10) for k, a in both.items()} == {
        ("x", "a"): 0.3,
        ("x", "b"): 0.3,
        ("y", "b"): 0.9,
        ("y", "a"): 0.6,
    }
