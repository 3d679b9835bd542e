"""Invariance: what must not change a score. The row order of the input tables and the names
of ids carry no information, so shuffling every table or renaming every id consistently must
leave every follower's p_loyal as it was (exactly: features are integer sums and ratios of
them, and the booster sees no id)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import _data

TOL = 1e-12


def assert_same_scores(before: pd.Series, after: pd.Series, f_before, f_after) -> float:
    assert after.index.equals(before.index), "a different set of (follower, influencer) scored"
    diff = float(np.max(np.abs(after.to_numpy() - before.to_numpy())))
    moved = _data.differing_columns(f_before, f_after.loc[f_before.index])
    assert diff <= TOL, f"p_loyal moved by up to {diff:.3g}; features that differ: {moved}"
    assert not moved, f"scores equal but features differ: {moved}"
    return diff


def test_shuffling_the_rows_of_every_table_changes_no_score(
    tables, baseline, baseline_features, baseline_result, score
):
    shuffled = _data.shuffled(tables, seed=20)
    for name, df in tables.items():  # the same rows, in another order
        assert not shuffled[name].equals(df), name
        key = list(df.columns)
        pd.testing.assert_frame_equal(
            shuffled[name].sort_values(key).reset_index(drop=True),
            df.sort_values(key).reset_index(drop=True),
        )

    result, features = score(shuffled)

    assert_same_scores(baseline, _data.p_loyal(result), baseline_features, features)
    pd.testing.assert_frame_equal(
        result.audiences.set_index("influencer_id").sort_index(),
        baseline_result.audiences.set_index("influencer_id").sort_index(),
        check_exact=False,
        rtol=TOL,
    )


def test_renaming_every_id_consistently_changes_no_score(
    tables, scenario, baseline, baseline_features, baseline_result, score
):
    renamed, maps = _data.renamed(tables, seed=21)
    req = _data.Request(
        maps["brand_id"][scenario.brand],
        scenario.as_of,
        tuple(maps["influencer_id"][i] for i in scenario.influencers),
    )
    # the new names sort differently: scoring meets the rows in another order
    scored = baseline.index.to_frame(index=False)
    new_order = scored.assign(
        follower_id=scored["follower_id"].map(maps["follower_id"]),
        influencer_id=scored["influencer_id"].map(maps["influencer_id"]),
    ).sort_values(_data.KEYS)
    assert not np.array_equal(new_order.index.to_numpy(), np.arange(len(scored)))
    assert sorted(req.influencers) != [maps["influencer_id"][i] for i in scenario.influencers]

    result, features = score(renamed, req)

    back = {col: {new: old for old, new in m.items()} for col, m in maps.items()}
    p = _data.p_loyal(result).reset_index()
    p[_data.KEYS] = p[_data.KEYS].apply(lambda c: c.map(back[c.name]))
    f = features.reset_index()
    f[_data.KEYS] = f[_data.KEYS].apply(lambda c: c.map(back[c.name]))
    f["brand_id"] = f["brand_id"].map(back["brand_id"])
    assert_same_scores(
        baseline,
        p.set_index(_data.KEYS)["p_loyal"].sort_index(),
        baseline_features,
        f.set_index(_data.KEYS).sort_index(),
    )
    aud = result.audiences.assign(
        influencer_id=result.audiences["influencer_id"].map(back["influencer_id"]),
        brand_id=result.audiences["brand_id"].map(back["brand_id"]),
    )
    cols = ["expected_loyal", "expected_loyal_low", "expected_loyal_high", "loyal_rate"]
    pd.testing.assert_frame_equal(
        aud.set_index("influencer_id").sort_index()[cols],
        baseline_result.audiences.set_index("influencer_id").sort_index()[cols],
        check_exact=False,
        rtol=TOL,
    )
