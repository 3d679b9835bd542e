"""Contract validation on tiny frames the tests build: a clean directory passes, and every
kind of violation is reported with table, column, count and examples."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loyalty_model.engines import duckdb_connection
from loyalty_model.errors import ContractError
from loyalty_model.io import register_tables, validate_dir


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def good_tables() -> dict[str, pd.DataFrame]:
    return {
        "events": pd.DataFrame(
            {
                "event_ts": [ts("2024-01-02"), ts("2024-01-03"), ts("2024-01-04")],
                "follower_id": ["f1", "f1", "f2"],
                "influencer_id": ["i1", "i1", None],
                "brand_id": [None, "b1", "b1"],
                "post_id": ["p1", "p2", None],
                "event_type": ["view", "like", "purchase"],
                "amount": [None, None, 19.5],
            }
        ),
        "follows": pd.DataFrame(
            {
                "follower_id": ["f1", "f2"],
                "influencer_id": ["i1", "i1"],
                "followed_at": [ts("2023-06-01"), ts("2023-07-01")],
                "unfollowed_at": [pd.NaT, ts("2024-02-01")],
            }
        ),
        "influencers": pd.DataFrame(
            {
                "influencer_id": ["i1"],
                "follower_count": [5000],
                "category": ["beauty"],
                "price_per_post": [None],
            }
        ),
        "brands": pd.DataFrame({"brand_id": ["b1"], "category": ["beauty"], "avg_price": [20.0]}),
        "campaigns": pd.DataFrame(
            {
                "campaign_id": ["c1"],
                "brand_id": ["b1"],
                "influencer_id": ["i1"],
                "start_ts": [ts("2024-01-03")],
                "cost": [None],
            }
        ),
    }


def write(tables: dict[str, pd.DataFrame], root: Path, fmt: str = "parquet") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        if fmt == "csv":
            df.to_csv(root / f"{name}.csv", index=False)
        else:
            df.to_parquet(root / f"{name}.parquet", index=False)
    return root


def problems(root: Path) -> list[str]:
    return [str(p) for p in validate_dir(duckdb_connection(), root)]


def with_change(tmp_path: Path, table: str, change) -> list[str]:
    tables = good_tables()
    tables[table] = change(tables[table].copy())
    return problems(write(tables, tmp_path))


def test_clean_directory_has_no_problems(tmp_path):
    assert problems(write(good_tables(), tmp_path)) == []


def test_csv_directory_is_read_too(tmp_path):
    assert problems(write(good_tables(), tmp_path, fmt="csv")) == []


def test_parquet_dataset_folder_is_read(tmp_path):
    root = write(good_tables(), tmp_path)
    events = pd.read_parquet(root / "events.parquet")
    (root / "events.parquet").unlink()
    (root / "events").mkdir()
    events.iloc[:2].to_parquet(root / "events" / "part-0.parquet", index=False)
    events.iloc[2:].to_parquet(root / "events" / "part-1.parquet", index=False)
    assert problems(root) == []
    con = duckdb_connection()
    register_tables(con, root)
    assert con.execute("SELECT count(*) FROM events").fetchall()[0][0] == 3


def test_extra_columns_are_allowed(tmp_path):
    assert with_change(tmp_path, "brands", lambda d: d.assign(extra=1)) == []


def test_missing_table(tmp_path):
    root = write(good_tables(), tmp_path)
    (root / "brands.parquet").unlink()
    found = problems(root)
    assert any(p.startswith("brands: table not found") for p in found), found


def test_table_present_twice(tmp_path):
    root = write(good_tables(), tmp_path)
    good_tables()["brands"].to_csv(root / "brands.csv", index=False)
    assert any("brands: table found more than once" in p for p in problems(root))


def test_missing_column(tmp_path):
    found = with_change(tmp_path, "follows", lambda d: d.drop(columns="followed_at"))
    assert any(p.startswith("follows.followed_at: missing column") for p in found), found


@pytest.mark.parametrize(
    ("table", "change", "expected"),
    [
        (
            "events",
            lambda d: d.assign(event_type=["view", "poke", "purchase"]),
            "events.event_type: not one of view, like, comment, share, save, click, purchase"
            " in 1 row, e.g. 'poke'",
        ),
        (
            "events",
            lambda d: d.assign(amount=[None, None, -3.0]),
            "events.amount: value below 0.0 in 1 row, e.g. '-3.0'",
        ),
        (
            "events",
            lambda d: d.assign(amount=[None, None, None]),
            "events.amount: purchase without an amount in 1 row, e.g. 'f2'",
        ),
        (
            "events",
            lambda d: d.assign(amount=[1.0, None, 19.5]),
            "events.amount: amount set on a non-purchase event in 1 row, e.g. 'view'",
        ),
        (
            "events",
            lambda d: d.assign(follower_id=["f1", None, "f2"]),
            "events.follower_id: null in a required column in 1 row",
        ),
        (
            "events",
            lambda d: d.assign(follower_id=["f1", " ", "f2"]),
            "events.follower_id: empty string id in 1 row, e.g. ' '",
        ),
        (
            "events",
            lambda d: d.assign(event_ts=["2024-01-02", "yesterday", "2024-01-04"]),
            "events.event_ts: not a valid timestamp in 1 row, e.g. 'yesterday'",
        ),
        (
            "events",
            lambda d: d.assign(influencer_id=["i1", "i9", None]),
            "events.influencer_id: unknown influencers.influencer_id in 1 row, e.g. 'i9'",
        ),
        (
            "influencers",
            lambda d: d.assign(follower_count=[-5]),
            "influencers.follower_count: value below 0 in 1 row, e.g. '-5'",
        ),
        (
            "brands",
            lambda d: pd.concat([d, d]),
            "brands.brand_id: duplicate key in 1 row, e.g. 'b1'",
        ),
        (
            "follows",
            lambda d: d.assign(unfollowed_at=[pd.NaT, ts("2023-01-01")]),
            "follows.unfollowed_at: before followed_at in 1 row, e.g. 'f2|i1'",
        ),
        (
            "campaigns",
            lambda d: d.assign(brand_id=["nope"]),
            "campaigns.brand_id: unknown brands.brand_id in 1 row, e.g. 'nope'",
        ),
        (
            "campaigns",
            lambda d: d.assign(cost=[float("inf")]),
            "campaigns.cost: not a finite number in 1 row, e.g. 'inf'",
        ),
    ],
)
def test_each_violation_is_reported(tmp_path, table, change, expected):
    assert expected in with_change(tmp_path, table, change)


def test_wrong_column_type(tmp_path):
    found = with_change(tmp_path, "influencers", lambda d: d.assign(follower_count=[True]))
    assert any(p.startswith("influencers.follower_count: type BOOLEAN") for p in found), found


def test_unreadable_file_is_reported_not_raised(tmp_path):
    root = write(good_tables(), tmp_path)
    (root / "brands.parquet").write_bytes(b"not parquet")
    found = problems(root)
    assert any(p.startswith("brands: cannot be read") for p in found), found


def test_many_offenders_show_count_and_five_examples(tmp_path):
    n = 12
    tables = good_tables()
    tables["events"] = pd.DataFrame(
        {
            "event_ts": [ts("2024-01-02")] * n,
            "follower_id": [f"f{i}" for i in range(n)],
            "influencer_id": ["i1"] * n,
            "brand_id": [None] * n,
            "post_id": [None] * n,
            "event_type": [f"bad{i:02d}" for i in range(n)],
            "amount": [None] * n,
        }
    )
    (msg,) = [p for p in problems(write(tables, tmp_path)) if "event_type" in p]
    assert f"in {n} rows" in msg
    assert msg.count("'bad") == 5


def test_register_tables_raises_one_line_error(tmp_path):
    tables = good_tables()
    tables["events"] = tables["events"].assign(event_type=["view", "poke", "purchase"])
    root = write(tables, tmp_path)
    with pytest.raises(ContractError) as info:
        register_tables(duckdb_connection(), root)
    assert "\n" not in str(info.value)
    assert "events.event_type" in str(info.value) and "'poke'" in str(info.value)


def test_register_tables_types_columns(tmp_path):
    root = write(good_tables(), tmp_path, fmt="csv")
    con = duckdb_connection()
    register_tables(con, root)
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE events)").fetchall())
    assert types["event_ts"] == "TIMESTAMP WITH TIME ZONE"
    assert types["amount"] == "DOUBLE"


def test_sample_fraction_is_optional_and_read_as_null_when_absent(tmp_path):
    root = write(good_tables(), tmp_path)
    assert problems(root) == []
    con = duckdb_connection()
    register_tables(con, root)
    assert con.execute("SELECT sample_fraction FROM influencers").fetchall() == [(None,)]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0], "influencers.sample_fraction: value not above 0.0 in 1 row, e.g. '0.0'"),
        ([1.5], "influencers.sample_fraction: value above 1.0 in 1 row, e.g. '1.5'"),
        (["half"], "influencers.sample_fraction: not a valid float in 1 row, e.g. 'half'"),
    ],
)
def test_sample_fraction_must_be_a_share(tmp_path, values, expected):
    found = with_change(tmp_path, "influencers", lambda d: d.assign(sample_fraction=values))
    assert expected in found, found


def test_a_declared_sample_fraction_is_read(tmp_path):
    tables = good_tables()
    tables["influencers"] = tables["influencers"].assign(sample_fraction=[0.25])
    con = duckdb_connection()
    register_tables(con, write(tables, tmp_path))
    assert con.execute("SELECT sample_fraction FROM influencers").fetchall() == [(0.25,)]
