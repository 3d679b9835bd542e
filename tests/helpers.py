"""Builders for tiny data directories the tests write themselves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

EVENT_COLUMNS = [
    "event_ts",
    "follower_id",
    "influencer_id",
    "brand_id",
    "post_id",
    "event_type",
    "amount",
]


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def events_frame(rows: list[tuple]) -> pd.DataFrame:
    """rows of (event_ts, follower, influencer, brand, post, type, amount)."""
    df = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    df["event_ts"] = pd.to_datetime(df["event_ts"], utc=True)
    df["amount"] = df["amount"].astype("float64")
    for c in ("follower_id", "influencer_id", "brand_id", "post_id", "event_type"):
        df[c] = df[c].astype("object")
    return df


def write_dir(tables: dict[str, pd.DataFrame], root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_parquet(root / f"{name}.parquet", index=False)
    return root
