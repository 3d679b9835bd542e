"""Directional expectations: more evidence of loyalty must not lower the scores of the followers
it is added for, on average. Each test adds events for a random sample of the scored
followers, everything else held fixed, re-scores through `predict`, and first checks that the
events reached the features it meant to move (and no other follower's own features), so that
it cannot pass because the perturbation did nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import _data

SAMPLE = 60
# follower-level feature families: for followers outside the sample they must not move
OWN = ("fi_", "f_", "fb_")


def own_columns(features: pd.DataFrame) -> list[str]:
    """The follower's own features, but the fitted BG/NBD ones: those read the follower's
    history through parameters fitted on all the brand's buyers before the cutoff, so another
    buyer's purchases move them by design (features.bg_nbd_fits)."""
    population = {"fb_p_alive"} | {c for c in features.columns if c.startswith("fb_expected_")}
    return [c for c in features.columns if c.startswith(OWN) and c not in population]


def others_unchanged(before: pd.DataFrame, after: pd.DataFrame, followers) -> None:
    rest = ~before.index.get_level_values("follower_id").isin(list(followers))
    assert rest.sum() > 0
    cols = own_columns(before)
    moved = _data.differing_columns(before.loc[rest, cols], after.loc[before.index[rest], cols])
    assert not moved, f"features of followers outside the sample moved: {moved}"


def assert_not_lower_on_average(what: str, before: pd.Series, after: pd.Series, rows: pd.Index):
    """Mean p_loyal over `rows` does not go down; prints the shift (pytest -s shows it)."""
    b, a = before.loc[rows], after.loc[rows]
    before_mean, after_mean = float(b.mean()), float(a.mean())
    print(
        f"{what}: {len(rows)} rows, mean p_loyal {before_mean:.4f} -> {after_mean:.4f} "
        f"({float((a < b).mean()):.0%} of rows lower)"
    )
    assert after_mean >= before_mean, (before_mean, after_mean)


def test_more_purchases_of_the_brand_do_not_lower_scores(
    tables, scenario, baseline, baseline_features, score
):
    rng = np.random.default_rng(30)
    audience = _data.audience(tables, scenario)
    everyone = audience["follower_id"].unique()
    sample = sorted(rng.choice(everyone, size=min(SAMPLE, len(everyone)), replace=False))
    price = float(tables["brands"].set_index("brand_id").at[scenario.brand, "avg_price"])
    cut = scenario.cutoff
    when = [cut - pd.Timedelta(days=d, hours=12) for d in (300, 210, 120)]  # the past year
    extra = [row for f in sample for row in _data.purchases(f, scenario.brand, when, price)]

    result, features = score(_data.with_events(tables, extra))

    after = _data.p_loyal(result)
    assert after.index.equals(baseline.index)
    rows = baseline.index[baseline.index.get_level_values("follower_id").isin(sample)]
    f0, f1 = baseline_features.loc[rows], features.loc[rows]
    for col in ("fb_purchases_all", "fb_purchases_365d", "f_purchases_all", "f_purchases_365d"):
        assert (f1[col] - f0[col] == len(when)).all(), col  # every purchase is in the features
    assert (f1["f_amount_365d"] > f0["f_amount_365d"]).all()
    assert (
        f1["fb_days_since_purchase"].fillna(np.inf) <= f0["fb_days_since_purchase"].fillna(np.inf)
    ).all()
    others_unchanged(baseline_features, features, sample)

    assert_not_lower_on_average(f"purchases ({len(sample)} followers)", baseline, after, rows)


def _engagement_case(tables, scenario, baseline, score, make, seed):
    rng = np.random.default_rng(seed)
    pairs = _data.audience(tables, scenario)
    pairs = pairs.iloc[np.sort(rng.choice(len(pairs), size=min(SAMPLE, len(pairs)), replace=False))]
    extra = make(tables, pairs, scenario.cutoff)
    assert extra

    result, features = score(_data.with_events(tables, extra))

    after = _data.p_loyal(result)
    assert after.index.equals(baseline.index)
    rows = pd.MultiIndex.from_frame(pairs[_data.KEYS]).sort_values()
    return after, features, rows


def _interactions(features: pd.DataFrame, window: str = "365d") -> pd.Series:
    return sum(features[f"fi_{t}_{window}"] for t in ("like", "comment", "save", "click"))


def test_deeper_engagement_with_the_influencer_does_not_lower_scores(
    tables, scenario, baseline, baseline_features, score
):
    """The same posts seen, more done with them: likes, comments, saves, clicks."""
    after, features, rows = _engagement_case(
        tables, scenario, baseline, score, _data.deeper_engagement, 31
    )
    f0, f1 = baseline_features.loc[rows], features.loc[rows]
    viewed = f0["fi_view_365d"] > 0
    assert viewed.mean() > 0.8  # most of the sample has posts to react to
    assert (_interactions(f1)[viewed] > _interactions(f0)[viewed]).all()
    assert (f1["fi_view_365d"] == f0["fi_view_365d"]).all()  # no post seen anew
    assert (f1["fi_comment_365d"][viewed] > f0["fi_comment_365d"][viewed]).all()
    others_unchanged(baseline_features, features, rows.get_level_values("follower_id"))

    assert_not_lower_on_average("deeper engagement", baseline, after, rows)


def test_seeing_more_of_the_influencers_posts_does_not_lower_scores(
    tables, scenario, baseline, baseline_features, score
):
    """More of the influencer's posts seen over the year, reacted to as a keen human does."""
    after, features, rows = _engagement_case(
        tables, scenario, baseline, score, _data.more_posts_seen, 32
    )
    f0, f1 = baseline_features.loc[rows], features.loc[rows]
    assert (f1["fi_view_365d"] > f0["fi_view_365d"]).all()
    assert (f1["fi_posts_365d"] > f0["fi_posts_365d"]).all()
    assert (_interactions(f1) > _interactions(f0)).all()
    others_unchanged(baseline_features, features, rows.get_level_values("follower_id"))

    assert_not_lower_on_average("more posts seen", baseline, after, rows)
