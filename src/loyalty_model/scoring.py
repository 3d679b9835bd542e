"""Batch scoring and audience aggregation.

Rows stream out of the engine in batches ordered by (influencer, follower); each batch is
scored and appended to the follower file, and per-influencer accumulators build the audience
rows. Python memory is bounded by the batch size (and the largest audience kept for an exact
interval, at most EXACT_MAX followers); the engine spills to disk beyond its memory limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loyalty_model.compat import duckdb_batches
from loyalty_model.config import FeatureConfig, LabelConfig
from loyalty_model.contract import tier_of
from loyalty_model.drift import DriftCounter
from loyalty_model.errors import ModelError, RequestError
from loyalty_model.features import (
    BUILDS_VERSIONS,
    FEATURE_VERSION,
    BGNBDFits,
    bg_nbd_columns,
    bg_nbd_fits,
    build_features,
)
from loyalty_model.intervals import AudienceAccumulator, pooled_variance
from loyalty_model.model import LoyaltyModel, to_matrix
from loyalty_model.spine import scoring_spine
from loyalty_model.timing import timed

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from loyalty_model.tracking import ModelRef

# 2.0: counts, costs and ranks on the full-audience scale; rank_cost and rank_rate replace
# rank and rank_basis; sample fraction columns; currency in the manifest (CHANGELOG.md)
# 2.1: the engine in the manifest; with the spark engine, follower_scores is a folder
# 2.2: data_last_event, as_of_days_after_last_event, data_warnings, on_bad_rows, quarantined
# 2.3: audience_explanations (duckdb engine); audience_spread in the manifest
OUTPUT_SCHEMA_VERSION = "2.3"
# below this many followers scored an audience's rate rests on a handful of people: the printed
# ranking marks it (the interval says how much)
THIN_SAMPLE = 30

# feature families by name prefix (longest first), in the words the report uses
FAMILIES = (
    ("fi_", "follower x influencer"),
    ("fb_", "follower x brand"),
    ("f_", "follower"),
    ("inf_", "influencer"),
    ("br_", "brand"),
)
BASE = "base"  # the model's average log-odds, the contributions' starting point
EXPLAIN_FOLLOWERS = 50  # followers of each audience whose contributions explain its score

FOLLOWER_SCHEMA = pa.schema(
    [
        ("follower_id", pa.string()),
        ("influencer_id", pa.string()),
        ("brand_id", pa.string()),
        ("as_of", pa.timestamp("us", tz="UTC")),
        ("p_loyal", pa.float64()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
    ]
)


@dataclass(frozen=True)
class ScoringRequest:
    """A request checked against the data: which influencers, scored as of when."""

    brand_id: str
    influencer_ids: tuple[str, ...]  # sorted; every influencer when none were named
    as_of: datetime  # midnight UTC: features use the days before it
    all_influencers: bool  # none were named
    first_event: datetime
    last_event: datetime


def scoring_request(
    con: duckdb.DuckDBPyConnection,
    brand_id: str,
    as_of: str | date | None,
    influencers: Sequence[str] | None,
    max_staleness_days: int | None = None,
) -> ScoringRequest:
    """Check a request against the registered tables; RequestError (one line) when the data
    cannot answer it. `as_of` (a date or YYYY-MM-DD) defaults to the day after the last
    event; `influencers` to all of them. An as-of more than `max_staleness_days` after the
    last event is refused (None: any): features would count the silent days as inactivity."""
    known = {r[0] for r in con.execute("SELECT brand_id FROM brands").fetchall()}
    if brand_id not in known:
        ex = ", ".join(repr(b) for b in sorted(known)[:5])
        raise RequestError(f"brands.brand_id: unknown brand {brand_id!r} (known e.g. {ex})")
    all_ids = [
        r[0] for r in con.execute("SELECT influencer_id FROM influencers ORDER BY 1").fetchall()
    ]
    if influencers is None:
        ids = all_ids
    else:
        ids = sorted({str(i).strip() for i in influencers if str(i).strip()})
        if not ids:
            raise RequestError("the influencer list names no influencer")
        unknown = sorted(set(ids) - set(all_ids))
        if unknown:
            raise RequestError(
                f"influencers.influencer_id: {len(unknown)} unknown influencer(s), e.g. "
                + ", ".join(repr(u) for u in unknown[:5])
            )
    first, last = con.execute("SELECT min(event_ts), max(event_ts) FROM events").fetchall()[0]
    if last is None:
        raise RequestError("events: the table is empty; nothing to score from")
    if as_of is None:
        day = last.date() + timedelta(days=1)
    elif isinstance(as_of, date):
        day = as_of.date() if isinstance(as_of, datetime) else as_of
    else:
        try:
            day = date.fromisoformat(as_of)
        except ValueError:
            raise RequestError(f"as-of must be a date YYYY-MM-DD, got {as_of!r}") from None
    if day <= first.date():
        raise RequestError(
            f"as-of {day} is not after the first event ({first.date()}): no history to score from"
        )
    silent = (day - last.date()).days - 1  # whole days without an event before the as-of
    if max_staleness_days is not None and silent > max_staleness_days:
        raise RequestError(
            f"as-of {day} follows {silent:,} days without any event (the data's last event is "
            f"on {last.date()}), more than the {max_staleness_days} allowed "
            "(data.max_staleness_days; default one label horizon): scores would fall as if "
            "every follower had gone quiet. Pass --allow-stale to score anyway"
        )
    return ScoringRequest(
        brand_id,
        tuple(ids),
        datetime(day.year, day.month, day.day, tzinfo=UTC),
        influencers is None,
        first,
        last,
    )


def check_spec(model: LoyaltyModel) -> tuple[FeatureConfig, LabelConfig]:
    """The feature and label config a model was trained with, or a clear refusal."""
    spec = model.spec
    if spec.version not in BUILDS_VERSIONS:
        raise ModelError(
            f"model feature spec version {spec.version!r} cannot be built by this package "
            f"(it builds versions {', '.join(map(repr, BUILDS_VERSIONS))}); retrain or install "
            "a matching version"
        )
    try:
        fcfg = FeatureConfig(windows=spec.windows, prior_strength=spec.prior_strength)
        lcfg = LabelConfig(
            horizon_days=spec.horizon_days,
            min_purchases=spec.min_purchases,
            require_attribution=spec.require_attribution,
        )
    except ValueError as exc:
        raise ModelError(f"model feature spec is not valid: {exc}".splitlines()[0]) from exc
    return fcfg, lcfg


def scoring_features(spine: ir.Table, tables: dict, model: LoyaltyModel) -> ir.Table:
    """The features of a scoring spine, as the model was trained on them (its spec's windows,
    prior and label definition), or a one-line ModelError when this package cannot build
    every feature the model reads (a model from another version of the code)."""
    fcfg, lcfg = check_spec(model)
    expr = build_features(spine, tables, fcfg, lcfg)
    later = bg_nbd_columns(lcfg.horizon_days)  # added to each collected frame (scoring_fits)
    missing = [n for n in model.spec.names if n not in expr.columns and n not in later]
    if missing:
        raise ModelError(
            f"the model reads {len(missing)} feature(s) this package does not build, e.g. "
            f"{', '.join(missing[:5])} (both say feature spec version {FEATURE_VERSION!r}): "
            "retrain, or install the version that trained it"
        )
    return expr


def scoring_fits(
    tables: dict, requests: Sequence[tuple[str, datetime]], model: LoyaltyModel
) -> BGNBDFits:
    """The BG/NBD fits that complete the features of the (brand, as-of) `requests`
    (features.bg_nbd_fits, on the engine of the tables): one per brand and as-of day, each on
    the brand's buyers before that day. None are fitted for a model that reads no BG/NBD
    feature (a model of feature spec version 2)."""
    _, lcfg = check_spec(model)
    if not set(bg_nbd_columns(lcfg.horizon_days)) & set(model.spec.names):
        return BGNBDFits.empty(lcfg.horizon_days)
    pairs = pd.DataFrame(
        {
            "brand_id": [b for b, _ in requests],
            "cutoff_ts": pd.to_datetime([t for _, t in requests], utc=True),
        }
    )
    return bg_nbd_fits(pairs, tables["events"], lcfg.horizon_days)


def feature_batches(
    con: duckdb.DuckDBPyConnection,
    tables: dict,
    brand_id: str,
    as_of: datetime,
    influencer_ids: list[str] | None,
    model: LoyaltyModel,
    batch_rows: int,
) -> Iterator[pd.DataFrame]:
    """Feature frames of the scoring spine, ordered by influencer then follower."""
    spine = scoring_spine(tables, brand_id, as_of, influencer_ids)
    expr = scoring_features(spine, tables, model).order_by(["influencer_id", "follower_id"])
    fits = scoring_fits(tables, [(brand_id, as_of)], model)
    for rb in duckdb_batches(con, expr, batch_rows):
        if rb.num_rows:
            yield fits.apply(rb.to_pandas())


def feature_family(name: str) -> str:
    """The family of a feature, by its name's prefix (features.py's docstring lists them)."""
    return next((family for prefix, family in FAMILIES if name.startswith(prefix)), "other")


class ContributionCounter:
    """Why an audience scores as it does: the mean LightGBM contribution (`pred_contrib`, in
    log-odds before calibration) of each feature family over up to `per_audience` followers
    of each audience, the first ones in the order they are scored (by follower id).

    Contributions cost far more than predictions, so they are computed for a bounded
    number of rows per audience; rows arrive ordered by influencer."""

    def __init__(self, model: LoyaltyModel, per_audience: int = EXPLAIN_FOLLOWERS) -> None:
        self.booster = model.booster
        self.families = [feature_family(n) for n in model.spec.names]
        self.per_audience = per_audience
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def add(self, matrix: pd.DataFrame, inf: np.ndarray) -> None:
        take = np.zeros(len(inf), bool)
        for lo, hi, key in _runs(inf):
            room = self.per_audience - self.counts.get(key, 0)
            take[lo : lo + max(0, min(room, hi - lo))] = True
        if not take.any():
            return
        contrib = self.booster.predict(matrix.to_numpy()[take], pred_contrib=True)
        for lo, hi, key in _runs(inf[take]):
            self.sums[key] = self.sums.get(key, 0) + contrib[lo:hi].sum(axis=0)
            self.counts[key] = self.counts.get(key, 0) + hi - lo

    def table(self) -> pd.DataFrame:
        """One row per (influencer, family), influencers in id order, families in FAMILIES
        order then `base`: influencer_id, family, mean_contribution, followers_explained."""
        order = [*(f for _, f in FAMILIES), BASE]
        columns = [*self.families, BASE]
        rows = []
        for key in sorted(self.sums):
            mean = pd.Series(self.sums[key] / self.counts[key]).groupby(columns).sum()
            rows += [
                (key, family, float(mean[family]), self.counts[key])
                for family in order
                if family in mean.index
            ]
        return pd.DataFrame(
            rows,
            columns=["influencer_id", "family", "mean_contribution", "followers_explained"],
        ).astype({"mean_contribution": "float64", "followers_explained": "int64"})


def _runs(*keys: np.ndarray) -> Iterator[tuple[int, int, object]]:
    """(start, end, key) of each run of rows equal in every key array (rows arrive ordered
    by them): the key itself for one key array, a tuple for several."""
    change = np.zeros(max(len(keys[0]) - 1, 0), bool)
    for k in keys:
        change |= k[1:] != k[:-1]
    bounds = np.flatnonzero(change) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(keys[0])], strict=True):
        yield int(lo), int(hi), keys[0][lo] if len(keys) == 1 else tuple(k[lo] for k in keys)


# -- the run --------------------------------------------------------------------------------


def pseudonymizer(key: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """follower ids -> their keyed hash: the hex HMAC-SHA256 of the id under `key`. The same
    id and key give the same pseudonym in every run; without the key it cannot be reversed or
    recomputed from a list of known ids."""
    import hmac

    def apply(ids: np.ndarray) -> np.ndarray:
        return np.array(
            [hmac.digest(key, str(i).encode(), "sha256").hex() for i in ids], dtype=object
        )

    return apply


def score(
    batches: Iterator[pd.DataFrame],
    model: LoyaltyModel,
    ref: ModelRef,
    brand_id: str,
    as_of: datetime,
    write: Callable[[pa.Table], None],
    on_batch: Callable[[int], None] = lambda n: None,
    seconds: dict[str, float] | None = None,
    pseudonymize: Callable[[np.ndarray], np.ndarray] | None = None,
    drift: DriftCounter | None = None,
    explain: ContributionCounter | None = None,
) -> tuple[int, dict[str, AudienceAccumulator]]:
    """Score every batch, hand follower rows to `write`, accumulate audiences; the time of
    each part (model, audience sums, write) is added to `seconds`.

    `pseudonymize`: follower ids are written as its pseudonyms, and each influencer's rows
    ordered by pseudonym (ordered by the real id, rows could be matched to a known list of
    followers by rank). An influencer's rows are held until all of them have been scored.
    `drift` counts the rows scored in the bins of the model's training reference; `explain`
    adds the contributions of the first followers of each audience."""
    seconds = {} if seconds is None else seconds
    audiences: dict[str, AudienceAccumulator] = {}
    written = 0
    as_of_ts = pd.Timestamp(as_of)
    held: pa.Table | None = None  # pseudonymized rows of an influencer not yet complete

    def rows(followers: np.ndarray, inf: np.ndarray, p: np.ndarray) -> pa.Table:
        n = len(p)
        return pa.table(
            {
                "follower_id": pa.array(followers.astype(str), pa.string()),
                "influencer_id": pa.array(inf.astype(str), pa.string()),
                "brand_id": pa.array([brand_id] * n, pa.string()),
                "as_of": pa.array([as_of_ts] * n, pa.timestamp("us", tz="UTC")),
                "p_loyal": pa.array(p, pa.float64()),
                "model_name": pa.array([ref.name] * n, pa.string()),
                "model_version": pa.array([ref.version] * n, pa.string()),
            },
            schema=FOLLOWER_SCHEMA,
        )

    for frame in batches:
        with timed(seconds, "model"):
            matrix = to_matrix(frame, model.spec)
            p = model.predict_matrix(matrix)
        if drift is not None:
            with timed(seconds, "drift"):
                drift.add(matrix)
        inf = frame["influencer_id"].to_numpy(dtype=object)
        if explain is not None:
            with timed(seconds, "explanations"):
                explain.add(matrix, inf)
        with timed(seconds, "audience sums"):
            accumulate(audiences, [inf], p)
        with timed(seconds, "write"):
            followers = frame["follower_id"].to_numpy(dtype=object)
            if pseudonymize is None:
                write(rows(followers, inf, p))
            else:
                batch = rows(pseudonymize(followers), inf, p)
                held = batch if held is None else pa.concat_tables([held, batch])
                last = held["influencer_id"][-1].as_py()
                done = pc.not_equal(held["influencer_id"], last)
                write(_by_pseudonym(held.filter(done)))
                held = held.filter(pc.invert(done))
        written += len(frame)
        on_batch(len(frame))
    if held is not None:
        with timed(seconds, "write"):
            write(_by_pseudonym(held))
    return written, audiences


def _by_pseudonym(t: pa.Table) -> pa.Table:
    return t.sort_by([("influencer_id", "ascending"), ("follower_id", "ascending")])


def accumulate(audiences: dict, keys: list[np.ndarray], p: np.ndarray) -> None:
    """Add each run of rows that share `keys` (rows arrive ordered by them) to the audience
    of that key: the key itself for one key array, a tuple for several."""
    for lo, hi, key in _runs(*keys):
        audiences.setdefault(key, AudienceAccumulator()).add(p[lo:hi])


def audiences_for(
    con: duckdb.DuckDBPyConnection,
    tables: dict,
    requests: list[tuple[str, datetime, list[str] | None]],
    model: LoyaltyModel,
    batch_rows: int = 200_000,
) -> list[pd.DataFrame]:
    """audience_scores for each (brand, as-of, influencers) request (None: every influencer),
    without follower files: what an evaluation of the model's audiences needs. The requests
    share one pass of the feature engine (a third of the time of one pass each for three
    requests on `small`)."""
    spine = None
    for brand_id, as_of, influencer_ids in requests:
        part = scoring_spine(tables, brand_id, as_of, influencer_ids)
        spine = part if spine is None else spine.union(part)
    keys = ["brand_id", "cutoff_ts", "influencer_id", "follower_id"]
    expr = scoring_features(spine, tables, model).order_by(keys)
    fits = scoring_fits(tables, [(b, t) for b, t, _ in requests], model)
    acc: dict[tuple, AudienceAccumulator] = {}
    for rb in duckdb_batches(con, expr, batch_rows):
        frame = fits.apply(rb.to_pandas())
        by = [frame[k].to_numpy(dtype=object) for k in ("brand_id", "cutoff_ts", "influencer_id")]
        accumulate(acc, by, model.predict_proba(frame))
    inf = con.execute("SELECT * FROM influencers ORDER BY influencer_id").df()
    every = list(inf["influencer_id"])
    cal = model.calibrator
    out = []
    for brand_id, as_of, influencer_ids in requests:
        ts = pd.Timestamp(as_of)
        mine = {i: a for (b, t, i), a in acc.items() if b == brand_id and t == ts}
        ids = every if influencer_ids is None else sorted(influencer_ids)
        out.append(
            audience_scores(
                mine, inf, brand_id, as_of, ids, cal.audience_dispersion, cal.audience_spread
            )
        )
    return out


AUDIENCE_COLUMNS = (
    "influencer_id",
    "brand_id",
    "as_of",
    "tier",
    "category",
    "follower_count",
    "price_per_post",
    "expected_loyal",
    "expected_loyal_low",
    "expected_loyal_high",
    "cost_per_expected_loyal",
    "loyal_rate",
    "loyal_per_1k_followers",
    "rank_cost",
    "rank_rate",
    "followers_scored",
    "sample_fraction",
    "sample_fraction_declared",
    "expected_loyal_scored",
    "expected_loyal_scored_low",
    "expected_loyal_scored_high",
)


def audience_scores(
    audiences: dict[str, AudienceAccumulator],
    influencers: pd.DataFrame,
    brand_id: str,
    as_of: datetime,
    requested: list[str],
    dispersion: float = 0.0,
    spread: dict[str, float] | None = None,
) -> pd.DataFrame:
    """One row per requested influencer, on the full-audience scale, ranked.

    The loyal rate of the followers scored carries over to the whole audience the price buys
    (`follower_count`, or the followers scored where the count says fewer); counts and costs
    are that rate times the whole audience. Intervals carry the model's audience `dispersion`
    and, where `follows` holds only part of the audience, the sampling, with the spread of
    probabilities shrunk toward the model's `spread` for the influencer's tier (for models
    without one, toward the spread pooled over this request). An influencer with no followers
    scored has no rate, count or cost."""
    info = influencers.set_index("influencer_id")
    declared_col = info.get("sample_fraction")
    empty = AudienceAccumulator()
    pooled = (
        None if spread else pooled_variance([audiences[i] for i in requested if i in audiences])
    )
    rows = []
    for inf_id in requested:
        a = audiences.get(inf_id, empty)
        count = int(info.at[inf_id, "follower_count"])
        whole = max(count, a.n)  # a stale follower_count below the followers seen: at least them
        price = info.at[inf_id, "price_per_post"]
        price = None if pd.isna(price) else float(price)
        declared = None if declared_col is None else declared_col.at[inf_id]
        declared = None if pd.isna(declared) else float(declared)
        tier = tier_of(count)
        row = {
            "influencer_id": inf_id,
            "brand_id": brand_id,
            "as_of": pd.Timestamp(as_of),
            "tier": tier,
            "category": info.at[inf_id, "category"],
            "follower_count": count,
            "price_per_post": price,
            "followers_scored": a.n,
            "sample_fraction": declared if declared is not None else (a.n / whole if a.n else None),
            "sample_fraction_declared": declared is not None,
            "expected_loyal_scored": a.m1,
        }
        lo_s, hi_s = a.interval(dispersion)
        row["expected_loyal_scored_low"], row["expected_loyal_scored_high"] = lo_s, hi_s
        if a.n:
            prior = spread.get(tier, pooled) if spread else pooled
            expected = a.rate * whole
            lo, hi = a.full_interval(whole, dispersion, prior)
            row.update(
                expected_loyal=expected,
                expected_loyal_low=float(lo),
                expected_loyal_high=float(hi),
                loyal_rate=a.rate,
                loyal_per_1k_followers=1000 * a.rate,
                cost_per_expected_loyal=(
                    price / expected if price is not None and expected > 0 else None
                ),
            )
        rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=[c for c in AUDIENCE_COLUMNS if "rank" not in c])
    float_cols = [c for c in df.columns if c.startswith(("expected_", "cost_", "loyal_"))]
    float_cols += ["price_per_post", "sample_fraction"]
    df[float_cols] = df[float_cols].astype("float64")
    return rank_audiences(df)[list(AUDIENCE_COLUMNS)]


def manifest(
    request: ScoringRequest,
    model: ModelRef,
    inputs: dict[str, dict],
    rows: dict[str, int],
    fmt: str,
    currency: str,
    dispersion: float,
    audiences: pd.DataFrame,
    engine: str = "duckdb",
    data: Mapping[str, object] | None = None,
    spread: Mapping[str, float] | None = None,
) -> dict:
    """manifest.json of a prediction folder (docs/output_contract.md); `engine`: the one that
    built the features and scored the followers; `data`: what reading the tables found
    (warnings, rows quarantined per table and reason); `spread`: the model's spread of
    probabilities within audiences, per tier (the intervals' prior)."""
    from dataclasses import asdict

    from loyalty_model import __version__
    from loyalty_model.intervals import INTERVAL

    return {
        "output_schema_version": OUTPUT_SCHEMA_VERSION,
        "package_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": asdict(model),
        "brand_id": request.brand_id,
        "as_of": request.as_of.isoformat(),
        "influencers_requested": (
            "all" if request.all_influencers else len(request.influencer_ids)
        ),
        "inputs": inputs,
        "data_last_event": request.last_event.isoformat(),
        "as_of_days_after_last_event": (request.as_of.date() - request.last_event.date()).days,
        "data_warnings": list((data or {}).get("warnings", ())),
        "on_bad_rows": (data or {}).get("on_bad_rows", "fail"),
        "quarantined": dict((data or {}).get("quarantined", {})),
        "follower_ids": _follower_ids((data or {}).get("pseudonymized_with")),
        "drift": (data or {}).get("drift"),
        "rows_written": rows,
        "format": fmt,
        "engine": engine,
        "currency": currency,
        "scale": "full_audience",
        "interval": INTERVAL,
        "audience_dispersion": dispersion,
        "audience_spread": dict(spread or {}),
        "audiences": audience_summary(audiences),
    }


def _follower_ids(variable: str | None) -> dict:
    """How follower_scores.follower_id relates to the data's ids (the key is never here)."""
    if variable is None:
        return {"pseudonymized": False}
    return {"pseudonymized": True, "method": "HMAC-SHA256, hex", "key_from_environment": variable}


def audience_summary(aud: pd.DataFrame) -> dict:
    """What a consumer of audience_scores should know before comparing rows (manifest)."""
    declared = aud["sample_fraction_declared"]
    return {
        "influencers": len(aud),
        "follower_count_below_followers_scored": int(
            (aud["follower_count"] < aud["followers_scored"]).sum()
        ),
        "ranked_by_cost": int(aud["rank_cost"].notna().sum()),
        "ranked_by_rate": int(aud["rank_rate"].notna().sum()),
        "without_price": int(aud["price_per_post"].isna().sum()),
        "without_followers_scored": int((aud["followers_scored"] == 0).sum()),
        "sample_fraction_declared": int(declared.sum()),
        "sample_fraction_implied": int((~declared & aud["sample_fraction"].notna()).sum()),
        "median_sample_fraction": (
            float(aud["sample_fraction"].median()) if aud["sample_fraction"].notna().any() else None
        ),
    }


def rank_audiences(df: pd.DataFrame) -> pd.DataFrame:
    """Two ranks, 1 = best, on the full-audience scale:

    - `rank_cost`: influencers with a price and followers scored, by cost per expected loyal
      customer (lowest first; ties by loyal rate, then id); those expected to bring no loyal
      customer at all come last; null without a price or followers scored;
    - `rank_rate`: every influencer with followers scored, by loyal rate (highest first;
      ties by id); null for those without followers scored.

    Every influencer the data say something about has a rank by rate, so none is lost for
    lack of a price. Rows are ordered by rank_cost, then rank_rate, then id: priced
    influencers first, then the unpriced ones by rate."""
    df = df.copy()
    ids = df["influencer_id"].to_numpy()
    rate = df["loyal_rate"].astype("float64")
    priced = df["price_per_post"].notna() & rate.notna()
    cost = df["cost_per_expected_loyal"].astype("float64").where(~priced | rate.gt(0), np.inf)

    def ranks(valid: pd.Series, *keys) -> pd.array:
        order = np.lexsort((ids, *keys))
        order = order[valid.to_numpy()[order]]
        out = np.full(len(df), -1)
        out[order] = np.arange(1, len(order) + 1)
        return pd.array(np.where(out > 0, out, None), dtype="Int64")

    df["rank_cost"] = ranks(priced, -rate.fillna(0), cost.fillna(np.inf))
    df["rank_rate"] = ranks(rate.notna(), -rate.fillna(0))
    big = len(df) + 1
    order = np.lexsort(
        (ids, df["rank_rate"].fillna(big).to_numpy(), df["rank_cost"].fillna(big).to_numpy())
    )
    return df.iloc[order].reset_index(drop=True)
