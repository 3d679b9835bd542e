"""The library's entry points: what the CLI, a notebook and a batch job call.

Each function takes values (paths only where files are read or written), returns a small
frozen dataclass and raises a `LoyaltyModelError` subclass (`errors.py`) whose message is one
line. Nothing here prints: the CLI does (`cli.py`). docs/api.md shows them in use.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from loyalty_model.config import Config, load_config
from loyalty_model.errors import (
    ConfigError,
    DataError,
    OutputError,
    PromotionError,
    RequestError,
)
from loyalty_model.timing import timed, timed_iter

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from loyalty_model.contract import Problem
    from loyalty_model.io import Tables
    from loyalty_model.model import LoyaltyModel
    from loyalty_model.scoring import ScoringRequest
    from loyalty_model.simulation import SimulationSummary
    from loyalty_model.tracking import ModelRef
    from loyalty_model.training import TrainingOutcome

ConfigLike = Config | str | Path | None
Engine = Literal["duckdb", "spark"]
Progress = Callable[[int, int], None]  # (followers scored so far, followers to score)


def _data_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")
    return path


def _engine_override(engine: str | None) -> list[str]:
    """`engine` as a data.engine override, so the config validates it (a ConfigError of one
    line) and the run records it with the rest of the config."""
    return [] if engine is None else [f"data.engine={engine}"]


def _engine_ready(cfg: Config) -> None:
    """The spark engine's cheap checks (pyspark, Java, the master answers) before anything
    else is read or started: a one-line ConfigError in a second, not after minutes."""
    if cfg.data.engine == "spark":
        from loyalty_model import engines

        engines.spark_preflight(cfg.spark)


# -- simulate, validate ---------------------------------------------------------------------


def simulate(preset: str = "small", seed: int = 7, out: str | Path = "data") -> SimulationSummary:
    """Simulate an influencer world into `out` (replaced atomically): the five contract tables,
    the simulator's ground truth and simulation.json. Same preset and seed, same bytes."""
    from loyalty_model.simulation import PRESETS
    from loyalty_model.simulation.files import write_world

    if preset not in PRESETS:
        raise RequestError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    with _writing(Path(out)):
        return write_world(preset, seed, Path(out))


def validate(
    data_dir: str | Path,
    config: ConfigLike = None,
    on_bad_rows: Literal["fail", "drop"] | None = None,
) -> list[Problem]:
    """Every way the data directory breaks the data contract (docs/data_contract.md); an empty
    list means it is clean. `config`: whose duckdb section applies (memory, threads).

    `on_bad_rows="drop"` answers what train and predict would do with it: the problems of
    whole tables that would still stop them, or else the rows they would drop, per reason
    (`droppable` problems; every row of a cascade counted, as the quarantine would hold)."""
    from loyalty_model import engines, io
    from loyalty_model.contract import Problem
    from loyalty_model.errors import ContractError

    data_dir = _data_dir(data_dir)
    cfg = load_config(config, _bad_rows_override(on_bad_rows))
    with engines.duckdb_session(cfg.duckdb) as con:
        if cfg.data.on_bad_rows == "fail":
            return io.validate_dir(con, data_dir)
        try:
            read = io.prepare_tables(con, data_dir, "drop")
        except ContractError as exc:
            return list(exc.problems)
    out = []
    for table, reasons in read.dropped.items():
        for reason, n in reasons.items():
            where, check = reason.split(": ", 1)
            out.append(Problem(table, where.partition(".")[2] or None, check, n))
    return out


# -- train, promote -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """A tracked, registered training run."""

    run_id: str
    model_name: str
    model_version: str
    model_uri: str  # models:/NAME/VERSION
    aliases: tuple[str, ...]  # given at registration: challenger, and champion if there was none
    metrics: Mapping[str, float]  # everything logged on the run (valid_*, test_*, truth_*, ...)
    artifact_uri: str  # the run's artifact root
    artifacts: tuple[str, ...]  # files logged under it (model card, baselines, plots, ...)
    champion_compared: str | None  # the champion version compared on the same test rows
    outcome: TrainingOutcome = field(repr=False, compare=False)  # the model, frames, evaluation


def train(
    config: ConfigLike = None,
    data_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    stage: Callable[[str], None] | None = None,
    engine: Engine | None = None,
    on_bad_rows: Literal["fail", "drop"] | None = None,
) -> TrainResult:
    """Build point-in-time features, fit and calibrate LightGBM, evaluate it (against the
    baselines, the current champion on the same test rows and, on simulated data, the ground
    truth), log the run and register the model with alias `challenger` (and `champion` when
    there is none yet).

    `config`: a Config, a YAML path or None (the defaults); `data_dir` overrides data.dir;
    `overrides`: `section.key=value` strings, as `--set` on the command line; `stage` is told
    each stage (in words) as it starts; `engine` builds the features: duckdb or spark
    (default: the config's data.engine; recorded on the run); `on_bad_rows`: fail on rows
    that break the data contract, or drop them, logged with the run under quarantine/
    (default: the config's data.on_bad_rows)."""
    from loyalty_model import tracking, training

    stage = stage or (lambda _: None)
    cfg = load_config(
        config, [*overrides, *_engine_override(engine), *_bad_rows_override(on_bad_rows)]
    )
    if data_dir is not None:  # a path, not YAML: '#', ':' or 'yes' in it stay as they are
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dir": Path(data_dir)})})
    _data_dir(cfg.data.dir)
    _engine_ready(cfg)
    stage("opening the tracking store, loading the champion")
    champion = tracking.load_champion(cfg.tracking)
    outcome = training.fit_and_evaluate(cfg, champion.model if champion else None, stage)
    champion_version = champion.version if champion else None
    stage("logging the run and registering the model")
    record = training.run_record(cfg, outcome, champion_version)
    reg = tracking.log_training_run(cfg, outcome.model, record, outcome.frames["train"])
    return TrainResult(
        run_id=reg.run_id,
        model_name=reg.name,
        model_version=reg.version,
        model_uri=reg.uri,
        aliases=reg.aliases,
        metrics=MappingProxyType(record.metrics),
        artifact_uri=reg.artifact_uri,
        artifacts=(*record.artifacts, *record.figures, "model"),
        champion_compared=champion_version,
        outcome=outcome,
    )


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on a registered version, as recorded on its run."""

    model_name: str
    version: str
    promoted: bool  # `champion` now points at this version
    forced: bool  # promoted although the gate said no
    champion_before: str | None  # None: there was no champion
    reasons: tuple[str, ...]  # each check of the gate, in words
    summary: str  # verdict and reasons on one line
    already_champion: bool = False  # nothing to decide

    @property
    def champion_after(self) -> str | None:
        return self.version if self.promoted else self.champion_before


def promote(
    config: ConfigLike = None,
    version: str | None = None,
    force: bool = False,
    overrides: Sequence[str] = (),
) -> GateDecision:
    """Decide whether `version` (default: the challenger) replaces `champion`, by the config's
    gate: absolute floors, and better than the champion on the gate metric measured on the
    same test rows at training time. The decision is logged on the version's run; `force`
    promotes whatever the gate says (recorded as forced). Raises PromotionError when the
    version was compared with a champion that has since been replaced (retrain it)."""
    from loyalty_model import gate, tracking

    cfg = load_config(config, overrides)
    cand = tracking.candidate(cfg.tracking, version)
    name = cfg.tracking.model_name
    if cand.champion_version == cand.version:
        return GateDecision(
            name, cand.version, True, False, cand.version, (), "already the champion", True
        )
    champion_metrics = None
    if cand.champion_version is not None:
        compared = cand.tags.get("champion_compared")
        if compared != cand.champion_version and not force:
            when = "no champion" if compared in (None, "none") else f"champion v{compared}"
            raise PromotionError(
                f"version {cand.version} was compared with {when} at training time, but the "
                f"champion is now v{cand.champion_version}: retrain it, or promote with force "
                "(--force)"
            )
        champion_metrics = gate.champion_metrics(cand.metrics)
    decision = gate.decide(cand.metrics, champion_metrics, cfg.gate)
    promoted = decision.promote or force
    forced = force and not decision.promote
    summary = decision.summary() + ("; FORCED" if forced else "")
    tracking.record_promotion(cfg.tracking, cand, promoted, summary, force)
    return GateDecision(
        name, cand.version, promoted, forced, cand.champion_version, decision.reasons, summary
    )


# -- predict --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionResult:
    """A prediction folder, written atomically (docs/output_contract.md)."""

    out: Path
    files: Mapping[str, Path]  # follower_scores, audience_scores, manifest
    rows: Mapping[str, int]  # rows written per file
    manifest: Mapping[str, object]  # what manifest.json holds
    audiences: pd.DataFrame = field(repr=False, compare=False)  # audience_scores, ranked
    seconds: float = 0.0  # the whole call
    model_seconds: float = 0.0  # of which the model's predict_proba
    # where the time went, stage by stage, in the order they ran (docs/api.md)
    stage_seconds: Mapping[str, float] = field(default_factory=dict, compare=False)
    truth: Mapping[str, float] | None = None  # against the simulator's truth, where it has it


def predict(
    data_dir: str | Path,
    brand: str,
    out: str | Path,
    as_of: str | date | None = None,
    influencers: Sequence[str] | None = None,
    model: str | None = None,
    fmt: Literal["parquet", "csv"] = "parquet",
    config: ConfigLike = None,
    overrides: Sequence[str] = (),
    batch_rows: int = 200_000,
    memory_limit: str | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
    on_bad_rows: Literal["fail", "drop"] | None = None,
    allow_stale: bool = False,
    pseudonymize_followers: str | None = None,
) -> PredictionResult:
    """Score every follower of each influencer (default: all) for `brand` as of `as_of`
    (default: the day after the last event) and write follower_scores, audience_scores and
    manifest.json to `out`, replaced atomically.

    `model`: an MLflow model URI (default: models:/MODEL_NAME@champion, MODEL_NAME from the
    config's tracking section, which also says where the registry is); `batch_rows` bounds
    Python memory; `memory_limit` (default: the config's duckdb.memory_limit) caps DuckDB,
    which spills to disk beyond it; `progress` is called after each batch with (followers
    scored, followers to score); `engine` builds the features and scores the followers:
    duckdb, or spark, whose executors score and write follower_scores as a folder of part
    files (default: the config's data.engine; recorded in the manifest); `on_bad_rows`:
    fail on rows that break the data contract, or drop them to OUT/quarantine/TABLE.parquet
    (default: the config's data.on_bad_rows); `allow_stale`: score an as-of more than
    data.max_staleness_days (default one label horizon) after the data's last event;
    `pseudonymize_followers`: the name of an environment variable holding a secret key:
    follower ids are written as their HMAC-SHA256 under it (the key itself is never written,
    logged or tracked)."""
    from loyalty_model import engines, io, scoring, tracking
    from loyalty_model.evaluate import audiences_against_truth, truth_of_request

    if fmt not in ("parquet", "csv"):
        raise RequestError(f"format must be parquet or csv, got {fmt!r}")
    if isinstance(influencers, str):
        raise RequestError(f"influencers must be a list of ids, not the string {influencers!r}")
    if batch_rows < 1:
        raise RequestError(f"batch_rows must be at least 1, got {batch_rows}")
    data_dir, out = _data_dir(data_dir), Path(out)
    if _overlaps(out, data_dir):
        raise RequestError(f"the output folder {out} would replace the data it reads ({data_dir})")
    extra = [] if memory_limit is None else [f"duckdb.memory_limit={memory_limit}"]
    extra += _bad_rows_override(on_bad_rows)
    cfg = load_config(config, [*overrides, *extra, *_engine_override(engine)])
    pseudonymize = _pseudonymizer(pseudonymize_followers, cfg)
    _engine_ready(cfg)
    model = model or f"models:/{cfg.tracking.model_name}@champion"
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    with engines.duckdb_session(cfg.duckdb) as con:
        with timed(seconds, "read and validate"):
            # the contract is checked on DuckDB, whatever the engine
            read = io.prepare_tables(con, data_dir, cfg.data.on_bad_rows)
            staleness = cfg.data.max_staleness_days
            staleness = cfg.label.horizon_days if staleness is None else staleness
            request = scoring.scoring_request(
                con, brand, as_of, influencers, None if allow_stale else staleness
            )
        with timed(seconds, "load model"):
            loaded, model_ref = tracking.load_for_scoring(model, cfg.tracking)
            scoring.check_spec(loaded)
        tables = engines.ibis_tables(con, list(read.views))
        with _writing(out):
            written = _write_predictions(
                con,
                tables,
                read,
                request,
                loaded,
                model_ref,
                data_dir,
                out,
                fmt,
                cfg,
                batch_rows,
                progress,
                seconds,
                (pseudonymize_followers, pseudonymize) if pseudonymize else None,
            )
    with timed(seconds, "truth check"):
        truth = truth_of_request(io.read_truth_audiences(data_dir), brand, request.as_of)
        check = None if truth is None else audiences_against_truth(written.audiences, truth)
    return replace(
        written,
        seconds=time.perf_counter() - t0,
        truth=None if check is None else check.metrics,
        stage_seconds=MappingProxyType(seconds),
    )


def _pseudonymizer(variable: str | None, cfg: Config):
    """The keyed hash of follower ids, its key read from environment variable `variable`."""
    import os

    from loyalty_model import scoring

    if variable is None:
        return None
    key = os.environ.get(variable, "")
    if not key:  # the message names the variable, never a value
        raise RequestError(
            f"pseudonymize followers: environment variable {variable!r} is not set or empty"
        )
    if cfg.data.engine == "spark":
        raise ConfigError("pseudonymized follower ids are written by the duckdb engine only")
    return scoring.pseudonymizer(key.encode())


def _bad_rows_override(on_bad_rows: str | None) -> list[str]:
    if on_bad_rows is None:
        return []
    if on_bad_rows not in ("fail", "drop"):
        raise RequestError(f"on_bad_rows must be fail or drop, got {on_bad_rows!r}")
    return [f"data.on_bad_rows={on_bad_rows}"]


def _overlaps(out: Path, data_dir: Path) -> bool:
    """Replacing `out` would delete or change `data_dir` (the same folder, or one holding it)."""
    out, data_dir = out.resolve(), data_dir.resolve()
    return out == data_dir or out in data_dir.parents


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """An output that cannot be written (no such parent, no permission, disk full) as one
    line; nothing is left behind (io.atomic_dir)."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from exc


def _write_predictions(
    con: duckdb.DuckDBPyConnection,
    tables: dict,
    read: Tables,
    request: ScoringRequest,
    model: LoyaltyModel,
    model_ref: ModelRef,
    data_dir: Path,
    out: Path,
    fmt: str,
    cfg: Config,
    batch_rows: int,
    progress: Progress | None,
    seconds: dict[str, float],
    pseudonyms: tuple[str, Callable] | None = None,
) -> PredictionResult:
    """Score the request and write the three files into `out`, atomically: follower scores
    on the config's engine, then the audiences and the manifest (the same code for both).
    The time of each stage is added to `seconds`."""
    from loyalty_model import io, scoring
    from loyalty_model.drift import DriftCounter
    from loyalty_model.spine import scoring_spine

    brand, as_of = request.brand_id, request.as_of
    named = None if request.all_influencers else list(request.influencer_ids)
    engine = cfg.data.engine
    total = None  # followers to score, for progress: Spark reports once, at the end
    if engine == "duckdb" and progress is not None:
        with timed(seconds, "count followers"):
            total = int(scoring_spine(tables, brand, as_of, named).count().execute())
    influencer_rows = con.execute("SELECT * FROM influencers").df()
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, done if total is None else total)

    cal = model.calibrator
    files = {
        "follower_scores": out / f"follower_scores.{fmt}",
        "audience_scores": out / f"audience_scores.{fmt}",
        "manifest": out / "manifest.json",
    }
    with io.atomic_dir(out) as tmp:
        # drift is counted where the rows are scored in this process (not on Spark's executors)
        drift = None
        if engine == "duckdb" and model.reference is not None:
            drift = DriftCounter(model.reference)
        if engine == "spark":
            from loyalty_model.spark import FOLLOWER_FOLDER
            from loyalty_model.training import spark_reads_the_files

            spark_reads_the_files(read)
            files["follower_scores"] = out / FOLLOWER_FOLDER
            folder = tmp / FOLLOWER_FOLDER
            n_followers, accumulated, t_model = _score_on_spark(
                cfg, data_dir, request, model, model_ref, folder, fmt, batch_rows, seconds
            )
            on_batch(n_followers)
        else:
            path = tmp / files["follower_scores"].name
            writer = io.TableWriter(path, scoring.FOLLOWER_SCHEMA, fmt)
            batches = scoring.feature_batches(con, tables, brand, as_of, named, model, batch_rows)
            # every stage present, in order, even when there is no batch at all
            seconds.update(features=0.0, model=0.0, **{"audience sums": 0.0, "write": 0.0})
            n_followers, accumulated = scoring.score(
                timed_iter(batches, seconds, "features"),
                model,
                model_ref,
                brand,
                as_of,
                writer.write,
                on_batch,
                seconds,
                pseudonyms[1] if pseudonyms else None,
                drift,
            )
            with timed(seconds, "write"):
                writer.close()
            t_model = seconds["model"]
        with timed(seconds, "audience intervals"):
            aud = scoring.audience_scores(
                accumulated,
                influencer_rows,
                brand,
                as_of,
                list(request.influencer_ids),
                cal.audience_dispersion,
                cal.audience_spread,
            )
        with timed(seconds, "write"):
            io.write_frame(aud, tmp / files["audience_scores"].name, fmt)
        rows = {"follower_scores": n_followers, "audience_scores": len(aud)}
        with timed(seconds, "fingerprint inputs"):
            inputs = io.input_fingerprints(con, data_dir)
        with timed(seconds, "write"):
            quarantined = io.write_quarantine(con, read, tmp, pseudonyms[1] if pseudonyms else None)
        manifest = scoring.manifest(
            request,
            model_ref,
            inputs,
            rows,
            fmt,
            cfg.data.currency,
            cal.audience_dispersion,
            aud,
            engine,
            {
                "warnings": read.warnings,
                "on_bad_rows": cfg.data.on_bad_rows,
                "quarantined": quarantined,
                "pseudonymized_with": pseudonyms[0] if pseudonyms else None,
                "drift": (
                    None if drift is None else drift.summary(cfg.evaluation.drift_psi_threshold)
                ),
            },
        )
        io.write_json(manifest, tmp / files["manifest"].name)
    return PredictionResult(
        out=out,
        files=MappingProxyType(files),
        rows=MappingProxyType(rows),
        manifest=MappingProxyType(manifest),
        audiences=aud,
        model_seconds=t_model,
    )


def _score_on_spark(
    cfg: Config,
    data_dir: Path,
    request: ScoringRequest,
    model: LoyaltyModel,
    model_ref: ModelRef,
    folder: Path,
    fmt: str,
    batch_rows: int,
    seconds: dict[str, float],
) -> tuple[int, dict, float]:
    """The follower scores written by Spark's executors into `folder`; the audiences' sums;
    the executors' seconds in the model, summed over tasks. Starting Spark and reading the
    tables is a stage of its own; features, model, follower file and audience sums are one,
    since they run in the same Spark jobs."""
    from loyalty_model import engines, spark

    with contextlib.ExitStack() as stack:
        with timed(seconds, "spark start"):
            session = stack.enter_context(engines.spark_session(cfg.spark))
            tables = spark.spark_tables(session, data_dir)
        work = "spark: features, model, write, audience sums"  # the same Spark jobs
        with timed(seconds, work), engines.spark_job("scoring the followers"):
            scores = spark.score_on_spark(
                session, tables, request, model, model_ref, folder, fmt, batch_rows
            )
    return scores.rows, scores.audiences, scores.model_seconds
