"""Helpers of the model-behaviour tests: read a data directory into frames, write changed copies
of it (shuffled, renamed, with extra rows), score them through the public API, and rebuild the
scoring features the model saw (to check that a perturbation moved what it was meant to move)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

import loyalty_model as lm
from loyalty_model.model import LoyaltyModel

TABLES = ("events", "follows", "influencers", "brands", "campaigns")
ENGAGEMENT = ("view", "like", "comment", "share", "save", "click")
KEYS = ["follower_id", "influencer_id"]


@dataclass(frozen=True)
class Request:
    """What the model tests score: one brand, a few influencers, one as-of date."""

    brand: str
    as_of: str  # YYYY-MM-DD
    influencers: tuple[str, ...]

    @property
    def cutoff(self) -> pd.Timestamp:
        return pd.Timestamp(self.as_of, tz="UTC")


def read_tables(data_dir: Path) -> dict[str, pd.DataFrame]:
    """The five contract tables of a data directory as pandas frames (copies: change freely)."""
    return {name: pd.read_parquet(Path(data_dir) / f"{name}.parquet") for name in TABLES}


def write_tables(tables: dict[str, pd.DataFrame], root: Path) -> Path:
    """A data directory holding `tables` (no simulator truth: it would not fit a changed world)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        tables[name].to_parquet(root / f"{name}.parquet", index=False)
    problems = lm.validate(root)
    assert not problems, [str(p) for p in problems]
    return root


def predict(data_dir: Path, req: Request, out: Path, trained, config) -> lm.PredictionResult:
    """The request scored through the public API with the trained model (by its URI)."""
    return lm.predict(
        data_dir,
        req.brand,
        out,
        as_of=req.as_of,
        influencers=list(req.influencers),
        model=trained.model_uri,
        config=config,
    )


def p_loyal(result: lm.PredictionResult) -> pd.Series:
    """p_loyal of a prediction folder's follower_scores, by (follower_id, influencer_id)."""
    scores = pd.read_parquet(result.files["follower_scores"])
    assert not scores.duplicated(KEYS).any()
    return scores.set_index(KEYS)["p_loyal"].sort_index()


def feature_frame(
    data_dir: Path, req: Request, model: LoyaltyModel, influencers: Sequence[str] | None = None
) -> pd.DataFrame:
    """The scoring features of a request, as `lm.predict` builds them (same builder, same
    spine), keyed by (follower_id, influencer_id)."""
    from loyalty_model import engines, io, scoring

    con = engines.duckdb_connection()
    try:
        views = io.register_tables(con, Path(data_dir))
        tables = engines.ibis_tables(con, list(views))
        as_of = scoring.scoring_request(con, req.brand, date.fromisoformat(req.as_of), None).as_of
        ids = list(influencers or req.influencers)
        batches = scoring.feature_batches(con, tables, req.brand, as_of, ids, model, 1_000_000)
        frame = pd.concat(list(batches), ignore_index=True)
    finally:
        con.close()
    return frame.set_index(KEYS).sort_index()


def audience(tables: dict[str, pd.DataFrame], req: Request) -> pd.DataFrame:
    """(follower_id, influencer_id) following one of the request's influencers at its as-of."""
    f = tables["follows"]
    cut = req.cutoff
    on = (
        f["influencer_id"].isin(req.influencers)
        & (f["followed_at"] <= cut)
        & (f["unfollowed_at"].isna() | (f["unfollowed_at"] > cut))
    )
    return f.loc[on, KEYS].drop_duplicates().sort_values(KEYS).reset_index(drop=True)


# -- invariance -----------------------------------------------------------------------------


def shuffled(tables: dict[str, pd.DataFrame], seed: int) -> dict[str, pd.DataFrame]:
    """Every table with its rows in a random order."""
    rng = np.random.default_rng(seed)
    return {
        name: df.iloc[rng.permutation(len(df))].reset_index(drop=True)
        for name, df in tables.items()
    }


def _new_ids(values: pd.Series, prefix: str, rng: np.random.Generator) -> dict[str, str]:
    """old id -> prefix + a number drawn in a random order: consistent, one-to-one, and the
    sorted order of the new ids is not that of the old ones."""
    old = sorted(values.dropna().unique())
    numbers = rng.permutation(len(old))
    width = len(str(len(old)))
    return {o: f"{prefix}{n:0{width}d}" for o, n in zip(old, numbers, strict=True)}


def renamed(
    tables: dict[str, pd.DataFrame], seed: int
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]]]:
    """Every id (follower, influencer, brand, campaign, post) renamed consistently across all
    tables; categories, times, amounts and counts untouched. Returns the tables and the maps."""
    rng = np.random.default_rng(seed)
    ev, fo = tables["events"], tables["follows"]
    maps = {
        "follower_id": _new_ids(pd.concat([ev["follower_id"], fo["follower_id"]]), "x", rng),
        "influencer_id": _new_ids(tables["influencers"]["influencer_id"], "creator-", rng),
        "brand_id": _new_ids(tables["brands"]["brand_id"], "brand-", rng),
        "campaign_id": _new_ids(tables["campaigns"]["campaign_id"], "camp-", rng),
        "post_id": _new_ids(ev["post_id"], "post-", rng),
    }
    out = {}
    for name, df in tables.items():
        df = df.copy()
        for col, m in maps.items():
            if col in df.columns:
                new = df[col].map(m)
                assert new.isna().equals(df[col].isna()), f"{name}.{col}: an id without a name"
                df[col] = new.astype(df[col].dtype)
        out[name] = df
    return out, maps


# -- perturbations --------------------------------------------------------------------------


def events_like(tables: dict[str, pd.DataFrame], rows: list[dict]) -> pd.DataFrame:
    """`rows` (dicts of event columns) as a frame with the dtypes of the events table."""
    ev = tables["events"]
    new = pd.DataFrame(rows, columns=ev.columns)
    for c in ev.columns:
        new[c] = new[c].astype(ev[c].dtype)
    return new


def with_events(tables: dict[str, pd.DataFrame], rows: list[dict]) -> dict[str, pd.DataFrame]:
    out = dict(tables)
    out["events"] = pd.concat([tables["events"], events_like(tables, rows)], ignore_index=True)
    return out


def with_follows(
    tables: dict[str, pd.DataFrame], followers: Sequence[str], influencer: str, since: pd.Timestamp
) -> dict[str, pd.DataFrame]:
    """`followers` start following `influencer` at `since` (and still do)."""
    fo = tables["follows"]
    n = len(followers)
    new = pd.DataFrame(
        {
            "follower_id": pd.Series(list(followers), dtype=fo["follower_id"].dtype),
            "influencer_id": pd.Series([influencer] * n, dtype=fo["influencer_id"].dtype),
            "followed_at": pd.Series([since] * n).astype(fo["followed_at"].dtype),
            "unfollowed_at": pd.Series([pd.NaT] * n, dtype=fo["unfollowed_at"].dtype),
        }
    )
    out = dict(tables)
    out["follows"] = pd.concat([fo, new], ignore_index=True)
    return out


def purchases(follower: str, brand: str, when: Sequence[pd.Timestamp], amount: float) -> list:
    """Unattributed purchases of `brand` (no influencer, no post), as the contract has them."""
    return [
        {
            "event_ts": ts,
            "follower_id": follower,
            "influencer_id": None,
            "brand_id": brand,
            "post_id": None,
            "event_type": "purchase",
            "amount": float(amount),
        }
        for ts in when
    ]


def engagement(
    follower: str, post: pd.Series, types: Sequence[str], when: pd.Timestamp
) -> list[dict]:
    """Engagement events of `follower` on one post (a row of `posts_of`), a minute apart."""
    return [
        {
            "event_ts": when + pd.Timedelta(minutes=k),
            "follower_id": follower,
            "influencer_id": post["influencer_id"],
            "brand_id": None,
            "post_id": post["post_id"],
            "event_type": t,
            "amount": None,
        }
        for k, t in enumerate(types)
    ]


def posts_of(tables: dict[str, pd.DataFrame], influencer: str, cut: pd.Timestamp) -> pd.DataFrame:
    """The influencer's non-sponsored posts first engaged with (so published by then) in the
    year before `cut` and at least two days before it, so that a reaction hours later still
    falls before the cutoff day; one row per post (post_id, influencer_id, event_ts of its
    first event), oldest first."""
    ev = tables["events"]
    mine = ev[(ev["influencer_id"] == influencer) & ev["post_id"].notna() & ev["brand_id"].isna()]
    first = mine.groupby("post_id", as_index=False)["event_ts"].min()
    first["influencer_id"] = influencer
    keep = (first["event_ts"] < cut - pd.Timedelta(days=2)) & (
        first["event_ts"] >= cut - pd.Timedelta(days=365)
    )
    return first[keep].sort_values(["event_ts", "post_id"]).reset_index(drop=True)


def _spread(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """`n` rows of `frame` evenly spread over it (all of them when it has fewer)."""
    if len(frame) <= n:
        return frame
    return frame.iloc[np.linspace(0, len(frame) - 1, n).round().astype(int)]


def _every(k: int, plan: Sequence[tuple[str, int]]) -> list[str]:
    """The types of `plan` ((type, every n-th)) due on the k-th item."""
    return [t for t, every in plan if k % every == 0]


# a keen human's reactions per post seen, in the proportions the simulator gives a follower
# of high affinity (likes on about half the views, comments, saves and clicks on fewer)
KEEN = (("like", 2), ("comment", 4), ("save", 6), ("click", 6))


def deeper_engagement(
    tables: dict[str, pd.DataFrame], pairs: pd.DataFrame, cut: pd.Timestamp
) -> list[dict]:
    """Extra likes, comments, saves and clicks of each (follower, influencer) of `pairs` on the
    influencer's posts they viewed in the year before `cut`, minutes after their view: the
    same posts seen, more done with them. A reaction they already made is not repeated."""
    ev = tables["events"]
    ev = ev[
        (ev["event_ts"] < cut - pd.Timedelta(days=1))
        & (ev["event_ts"] >= cut - pd.Timedelta(days=365))
    ]
    done = set(ev[["follower_id", "post_id", "event_type"]].dropna().itertuples(index=False))
    views = (
        ev[ev["event_type"] == "view"].merge(pairs, on=KEYS).sort_values(["event_ts", "post_id"])
    )
    rows = []
    for (follower, _), seen in views.groupby(KEYS, sort=True):
        for k, v in enumerate(seen.itertuples(index=False)):
            todo = [
                t
                for t in _every(k, (("like", 1), *KEEN[1:]))
                if (follower, v.post_id, t) not in done
            ]
            for j, t in enumerate(todo):
                rows.append(
                    {
                        "event_ts": v.event_ts + pd.Timedelta(minutes=2 + j),
                        "follower_id": follower,
                        "influencer_id": v.influencer_id,
                        "brand_id": v.brand_id,
                        "post_id": v.post_id,
                        "event_type": t,
                        "amount": None,
                    }
                )
    return rows


def more_posts_seen(
    tables: dict[str, pd.DataFrame], pairs: pd.DataFrame, cut: pd.Timestamp, n: int = 12
) -> list[dict]:
    """Each (follower, influencer) of `pairs` sees `n` more of the influencer's posts of the
    past year (ones they had not viewed, spread over the year), hours after each was posted,
    and reacts to some of them as a keen human does (`KEEN`)."""
    ev = tables["events"]
    viewed = set(
        ev.loc[ev["event_type"] == "view", ["follower_id", "post_id"]].itertuples(index=False)
    )
    rows = []
    by_influencer = {i: posts_of(tables, i, cut) for i in pairs["influencer_id"].unique()}
    for follower, influencer in pairs[KEYS].itertuples(index=False):
        posts = by_influencer[influencer]
        unseen = posts[[(follower, p) not in viewed for p in posts["post_id"]]]
        for k, (_, post) in enumerate(_spread(unseen, n).iterrows()):
            types = ["view", *_every(k, KEEN)]
            rows += engagement(follower, post, types, post["event_ts"] + pd.Timedelta(hours=6))
    return rows


def bot_history(
    tables: dict[str, pd.DataFrame], follower: str, influencer: str, cut: pd.Timestamp
) -> list[dict]:
    """A bot: on 10 days spread over the past year it views and likes the influencer's 6
    latest posts within minutes, one after the other; it never comments, saves, clicks or
    buys."""
    posts = posts_of(tables, influencer, cut)
    rows = []
    for day in range(10):
        when = cut - pd.Timedelta(days=340 - 35 * day, hours=9)
        latest = posts[posts["event_ts"] < when].tail(6)
        for k, (_, post) in enumerate(latest.iterrows()):
            rows += engagement(follower, post, ["view", "like"], when + pd.Timedelta(minutes=2 * k))
    return rows


def loyal_history(
    tables: dict[str, pd.DataFrame],
    follower: str,
    influencer: str,
    brand: str,
    amount: float,
    cut: pd.Timestamp,
) -> list[dict]:
    """A loyal repeat buyer: 5 purchases of `brand` spread over the past year (about every 70
    days, the last 2 months ago) and a keen human's engagement with 12 of the influencer's
    posts of the year."""
    when = [cut - pd.Timedelta(days=d, hours=12) for d in (340, 270, 200, 130, 60)]
    rows = purchases(follower, brand, when, amount)
    pair = pd.DataFrame({"follower_id": [follower], "influencer_id": [influencer]})
    return rows + more_posts_seen(tables, pair, cut, n=12)


def differing_columns(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 0.0) -> list[str]:
    """Columns of two frames on the same index whose values differ (null = null; numbers
    beyond `rtol` relative), for failure messages that say which feature moved."""
    assert a.index.equals(b.index), "frames on different rows"
    out = []
    for c in a.columns:
        x, y = a[c], b[c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xa, ya = x.to_numpy("float64", na_value=np.nan), y.to_numpy("float64", na_value=np.nan)
            same = np.isclose(xa, ya, rtol=rtol, atol=0.0, equal_nan=True)
        else:
            same = (x.astype("object") == y.astype("object")) | (x.isna() & y.isna())
        if not bool(np.all(same)):
            out.append(c)
    return out
