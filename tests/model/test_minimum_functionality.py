"""Minimum functionality: cases whose answer anyone can state. A follower the data know
nothing about scores near the base rate; a bot scores below a loyal repeat buyer."""

from __future__ import annotations

import pandas as pd

from . import _data

# A follower with no history gives the model no follower-level evidence: its score should
# fall back to what the influencer, the brand and the follow tenure say, i.e. near the
# training base rate. "Near" is within a factor of 3 either way: per-brand and per-split loyal
# rates of tiny already span about that much (about 0.02 to 0.08 for the brands with many
# rows), and history-less followers rightly sit below the average (the loyal customers of a
# brand are mostly people who bought before). Outside the band the model would be treating
# missing history as strong evidence, one way or the other.
NEAR = 3.0


def test_a_follower_without_history_scores_near_the_base_rate(
    tables, scenario, tiny_trained, score
):
    cut = scenario.cutoff
    changed = tables
    newcomers = {}
    for inf in scenario.influencers:
        newcomers[inf] = f"newcomer-of-{inf}"
        changed = _data.with_follows(changed, [newcomers[inf]], inf, cut - pd.Timedelta(days=10))

    result, features = score(changed)

    rows = pd.MultiIndex.from_tuples([(f, i) for i, f in newcomers.items()]).sort_values()
    f = features.loc[rows]
    assert (f["f_events_365d"] == 0).all() and (f["f_purchases_all"] == 0).all()
    assert (f["fi_view_365d"] == 0).all() and f["fb_days_since_purchase"].isna().all()
    assert (f["fi_follow_days"] == 10).all()
    p = _data.p_loyal(result).loc[rows]
    base = tiny_trained.metrics["train_base_rate"]
    print(f"newcomers: p_loyal {p.round(4).to_dict()}; train base rate {base:.4f}")
    assert ((p >= base / NEAR) & (p <= base * NEAR)).all(), (p.to_dict(), base)


def test_a_bot_scores_below_a_loyal_repeat_buyer(tables, scenario, tiny_trained, score):
    """On each scored influencer: a bot (views and likes in bursts, nothing else, never buys)
    and a loyal repeat buyer of the brand (5 purchases over the year, a keen human's
    engagement), both following for 400 days."""
    cut = scenario.cutoff
    price = float(tables["brands"].set_index("brand_id").at[scenario.brand, "avg_price"])
    changed, extra = tables, []
    for inf in scenario.influencers:
        bot, loyal = f"bot-of-{inf}", f"loyal-of-{inf}"
        changed = _data.with_follows(changed, [bot, loyal], inf, cut - pd.Timedelta(days=400))
        extra += _data.bot_history(tables, bot, inf, cut)
        extra += _data.loyal_history(tables, loyal, inf, scenario.brand, price, cut)

    result, features = score(_data.with_events(changed, extra))

    p = _data.p_loyal(result)
    base = tiny_trained.metrics["train_base_rate"]
    for inf in scenario.influencers:
        bot, loyal = (f"bot-of-{inf}", inf), (f"loyal-of-{inf}", inf)
        # the histories are what they claim to be, as the model sees them
        fb, fl = features.loc[bot], features.loc[loyal]
        assert fb["f_like_only"] == 1 and fb["f_purchases_all"] == 0, inf
        assert fb["f_like_per_view"] == 1 and fb["f_events_per_active_day"] >= 10, inf
        assert fl["fb_purchases_all"] == 5 and fl["fb_purchases_365d"] == 5, inf
        assert fl["f_rebuy_rate"] > 0 and fl["fi_comment_365d"] > 0, inf
        print(f"{inf}: bot {p.loc[bot]:.4f}, loyal repeat buyer {p.loc[loyal]:.4f}")
        assert p.loc[bot] < p.loc[loyal], inf
        # and on either side of the average follower
        assert p.loc[bot] < base < p.loc[loyal], (inf, base)
