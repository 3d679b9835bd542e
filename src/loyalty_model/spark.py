"""The Spark engine: the contract tables as Ibis tables on Spark, and batch scoring inside the
executors.

Validation stays with DuckDB (`io.register_tables`): the contract's checks run there, over the
same files, before Spark reads anything. Spark then reads those files itself and casts them to
the contract's types, so that the feature definitions (`features.build_features`, Ibis) run
unchanged on either engine.

Scoring runs where the features are: `mapInPandas` hands the executors Arrow batches of
feature rows, and each executor completes them with the BG/NBD features (the parameters are
fitted on the driver, from populations Spark builds, and broadcast with the model: a row per
brand and as-of day) and scores them with the model (booster and calibrator, pickled once
and broadcast). The executors write the follower scores as a folder of part files, and an
audience is what Spark's partial aggregation sums per partition (n and the three moments of
`intervals.AudienceAccumulator`); only the probabilities of audiences small enough for the
exact interval (`intervals.EXACT_MAX`) come to the driver, as the DuckDB engine keeps them.

pyspark is imported inside functions: this module is imported only when the spark engine is
chosen, and the package imports without pyspark installed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from loyalty_model import compat, io
from loyalty_model.contract import SCHEMAS, TABLES
from loyalty_model.features import BG_NBD_INPUTS
from loyalty_model.intervals import EXACT_MAX, AudienceAccumulator
from loyalty_model.model import LoyaltyModel
from loyalty_model.scoring import scoring_features, scoring_fits
from loyalty_model.spine import scoring_spine

if TYPE_CHECKING:
    import ibis.expr.types as ir
    from pyspark.sql import DataFrame, SparkSession

    from loyalty_model.scoring import ScoringRequest
    from loyalty_model.tracking import ModelRef

SPARK_TYPES = {"string": "string", "timestamp": "timestamp", "float": "double", "int": "bigint"}
# what the executors return for each feature row
SCORED_SCHEMA = "follower_id string, influencer_id string, p_loyal double"
# pyarrow's csv writer's timestamps (the DuckDB engine's files): 2025-10-01 00:00:00.000000Z
CSV_TIMESTAMP = "yyyy-MM-dd HH:mm:ss.SSSSSSX"
FOLLOWER_FOLDER = "follower_scores"  # a folder of part files, written by the executors


def spark_tables(session: SparkSession, data_dir: Path) -> dict[str, ir.Table]:
    """The five contract tables of a data directory (validated already), read by Spark, cast
    to the contract's types and exposed as Ibis tables of the session.

    Each table is NAME.parquet, a NAME/ folder of parquet files (read recursively, columns
    merged by name, as DuckDB does) or NAME.csv (read as text, then cast). Timestamps are UTC
    instants: a naive timestamp in a file is read as UTC (the session's time zone), and the
    Ibis columns are typed timestamp('UTC', 6) as on DuckDB, so both engines' tables have the
    same Ibis schema and give frames of the same types. A column the contract marks optional
    and the file lacks is all null."""
    import ibis
    from pyspark.sql import functions as F

    backend = ibis.pyspark.connect(session)
    out = {}
    for name in TABLES:
        raw = _read(session, io.table_source(data_dir, name))
        cols = [
            (F.col(f"`{c.name}`") if c.name in raw.columns else F.lit(None))
            .cast(SPARK_TYPES[c.kind])
            .alias(c.name)
            for c in SCHEMAS[name].columns
        ]
        raw.select(*cols).createOrReplaceTempView(name)
        utc = "timestamp('UTC', 6)"  # microseconds, as Spark keeps them and DuckDB types them
        stamps = {c.name: utc for c in SCHEMAS[name].columns if c.kind == "timestamp"}
        table = backend.table(name)
        out[name] = table.cast(stamps) if stamps else table
    return out


def _read(session: SparkSession, source: Path) -> DataFrame:
    path = str(Path(source).resolve())
    if source.is_dir():
        return (
            session.read.option("recursiveFileLookup", "true")
            .option("pathGlobFilter", "*.parquet")
            .option("mergeSchema", "true")
            .parquet(path)
        )
    if source.suffix == ".csv":
        return session.read.option("header", "true").csv(path)
    return session.read.parquet(path)


@dataclass(frozen=True)
class SparkScores:
    """What scoring on Spark leaves for the driver: rows written, the audiences, and the
    seconds the executors spent in the model (summed over tasks, not wall time)."""

    rows: int
    audiences: dict[str, AudienceAccumulator]
    model_seconds: float


def score_on_spark(
    session: SparkSession,
    tables: dict[str, ir.Table],
    request: ScoringRequest,
    model: LoyaltyModel,
    ref: ModelRef,
    folder: Path,
    fmt: str,
    batch_rows: int,
) -> SparkScores:
    """Score every follower of the request on the executors; write the follower scores into
    `folder` (part files in `fmt`, rows ordered by influencer then follower across the files
    in name order) and return the audiences' sums.

    The scored rows are persisted (memory, then disk) for the two passes over them, the write
    and the audience sums, so that the features are built once. `batch_rows` is the Arrow
    batch each executor's Python worker scores at a time."""
    from pyspark import StorageLevel

    named = None if request.all_influencers else list(request.influencer_ids)
    spine = scoring_spine(tables, request.brand_id, request.as_of, named)
    expr = scoring_features(spine, tables, model)
    fits = scoring_fits(tables, [(request.brand_id, request.as_of)], model)
    # the model's features that the engine builds, and what the BG/NBD ones are computed from
    columns = dict.fromkeys(["follower_id", "influencer_id", *BG_NBD_INPUTS, *model.spec.names])
    features = compat.spark_dataframe(
        session, expr.select(*[c for c in columns if c in expr.columns])
    )
    session.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
    sc = session.sparkContext
    broadcast = sc.broadcast((model, fits))
    seconds = sc.accumulator(0.0)
    scored = features.mapInPandas(_scorer(broadcast, seconds), SCORED_SCHEMA)
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        _write_followers(scored, request, ref, folder, fmt)
        audiences = _audiences(session, scored)
    finally:
        scored.unpersist()
        broadcast.destroy()
    rows = sum(a.n for a in audiences.values())
    return SparkScores(rows, audiences, float(seconds.value))


def _scorer(broadcast, seconds) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The function each executor's Python worker runs over its Arrow batches of feature
    rows. It takes the model and the BG/NBD fits from the broadcast (unpickled once per
    worker), completes each batch with the BG/NBD features (the step the DuckDB engine takes
    per batch, features.BGNBDFits.apply) and adds its time in the model to the `seconds`
    accumulator."""

    def score_batches(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model, fits = broadcast.value
        for frame in frames:
            if frame.empty:
                continue
            frame = fits.apply(frame)
            t0 = time.perf_counter()
            p = model.predict_proba(frame)
            seconds.add(time.perf_counter() - t0)
            yield pd.DataFrame(
                {
                    "follower_id": frame["follower_id"],
                    "influencer_id": frame["influencer_id"],
                    "p_loyal": np.asarray(p, dtype="float64"),
                }
            )

    return score_batches


def _write_followers(
    scored: DataFrame, request: ScoringRequest, ref: ModelRef, folder: Path, fmt: str
) -> None:
    """follower_scores as the executors write it: the columns and types of
    scoring.FOLLOWER_SCHEMA, sorted globally (a range shuffle of three columns) so that the
    part files read in name order give the DuckDB engine's row order."""
    from pyspark.sql import functions as F

    out = scored.select(
        "follower_id",
        "influencer_id",
        F.lit(request.brand_id).cast("string").alias("brand_id"),
        F.lit(request.as_of).cast("timestamp").alias("as_of"),
        "p_loyal",
        F.lit(ref.name).cast("string").alias("model_name"),
        F.lit(ref.version).cast("string").alias("model_version"),
    ).orderBy("influencer_id", "follower_id")
    writer = out.write.mode("errorifexists")
    if fmt == "parquet":
        writer.option("compression", "zstd").parquet(str(folder))
    else:
        writer.option("header", "true").option("timestampFormat", CSV_TIMESTAMP).csv(str(folder))
    _tidy(folder)


def _tidy(folder: Path) -> None:
    """Leave only the part files: Hadoop's local file system adds a .crc checksum beside each
    file and a _SUCCESS marker, which the output's readers have no use for."""
    for extra in [*Path(folder).glob(".*.crc"), Path(folder) / "_SUCCESS"]:
        extra.unlink(missing_ok=True)


def _audiences(session: SparkSession, scored: DataFrame) -> dict[str, AudienceAccumulator]:
    """Each influencer's audience from Spark's per-partition sums (merged by its partial
    aggregation); the probabilities themselves only for audiences of at most EXACT_MAX
    followers, ordered by follower as the DuckDB engine adds them, for the exact interval."""
    from pyspark.sql import functions as F

    p = F.col("p_loyal")
    q = p * (1 - p)
    sums = (
        scored.groupBy("influencer_id")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(p).alias("m1"),
            F.sum(q).alias("m2"),
            F.sum(q * (1 - 2 * p)).alias("m3"),
        )
        .toPandas()
    )
    small = sums.loc[sums["n"] <= EXACT_MAX, ["influencer_id"]]
    kept: dict[str, np.ndarray] = {}
    if len(small):
        ids = session.createDataFrame(small, "influencer_id string")
        rows = (
            scored.join(F.broadcast(ids), "influencer_id")
            .select("influencer_id", "follower_id", "p_loyal")
            .toPandas()
            .sort_values(["influencer_id", "follower_id"])
        )
        kept = {k: g["p_loyal"].to_numpy() for k, g in rows.groupby("influencer_id", sort=False)}
    audiences = {}
    for r in sums.itertuples(index=False):
        if r.influencer_id in kept:  # as the DuckDB engine builds it: from the probabilities
            a = AudienceAccumulator()
            a.add(kept[r.influencer_id])
        else:  # too large for the exact interval: the sums are all it needs
            a = AudienceAccumulator.from_sums(r.n, r.m1, r.m2, r.m3)
        audiences[r.influencer_id] = a
    return audiences
