"""Sampling the training spine: by follower (data.sample_fraction) and the cap on rows
(data.max_training_rows), both reproducible and the same on every engine (MD5 of the id)."""

from __future__ import annotations

import math

import duckdb
import ibis
import pandas as pd
import pytest

from loyalty_model import spine


@pytest.fixture
def rows():
    sizes = {"c1": 5_000, "c2": 800, "c3": 3}
    df = pd.DataFrame(
        [(c, f"f{i:05d}") for c, n in sizes.items() for i in range(n)],
        columns=["campaign_id", "follower_id"],
    )
    con = duckdb.connect()
    con.register("rows_df", df)
    con.execute("CREATE TABLE rows AS SELECT * FROM rows_df")
    yield ibis.duckdb.from_connection(con).table("rows"), sizes
    con.close()


def test_cap_keeps_every_campaign_in_proportion(rows):
    t, sizes = rows
    kept, before = spine.cap_rows(t, 1_000)
    assert before == sum(sizes.values())
    per = kept.to_pandas().campaign_id.value_counts().to_dict()
    share = 1_000 / before
    assert per == {c: math.ceil(n * share) for c, n in sizes.items()}  # c3 keeps 1 of 3


def test_cap_is_reproducible_and_a_no_op_below_it(rows):
    t, sizes = rows
    a = spine.cap_rows(t, 1_000)[0].to_pandas().sort_values(["campaign_id", "follower_id"])
    b = spine.cap_rows(t, 1_000)[0].to_pandas().sort_values(["campaign_id", "follower_id"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    same, n = spine.cap_rows(t, 10_000)
    assert n == sum(sizes.values()) and same.count().execute() == n
    # the count may come from a cheaper table with as many rows (the spine before its labels)
    counted = spine.cap_rows(t, 1_000, counted=t.select("follower_id"))[0].to_pandas()
    pd.testing.assert_frame_equal(
        counted.sort_values(["campaign_id", "follower_id"]).reset_index(drop=True),
        a.reset_index(drop=True),
    )


def test_follower_sample_keeps_whole_followers_at_about_the_share(rows):
    t, _ = rows
    kept = spine.sample_followers(t, 0.25).to_pandas()
    ids = set(kept.follower_id)
    everyone = t.to_pandas()
    # a follower kept in one campaign is kept in all of them
    assert len(everyone[everyone.follower_id.isin(ids)]) == len(kept)
    share = len(ids) / everyone.follower_id.nunique()
    assert 0.22 < share < 0.28
