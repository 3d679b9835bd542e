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


def simulate(
    preset: str = "small", seed: int = 7, out: str | Path = "data", purchase_only: bool = False
) -> SimulationSummary:
    """Simulate an influencer world into `out` (replaced atomically): the five contract tables,
    the simulator's ground truth and simulation.json. Same preset and seed, same bytes.
    `purchase_only`: the same world written as a retailer's transaction log (purchases only,
    one channel, one campaign per wave; docs/simulator.md)."""
    from loyalty_model.simulation import PRESETS
    from loyalty_model.simulation.files import write_world

    if preset not in PRESETS:
        raise RequestError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    with _writing(Path(out)):
        return write_world(preset, seed, Path(out), purchase_only=purchase_only)


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
    cache: bool | None = None,
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
    (default: the config's data.on_bad_rows); `cache`: False neither reads nor writes the
    feature cache, True uses it (default: the config's cache.enabled; the run's tags
    feature_cache=hit|miss|off and feature_cache_key say what happened)."""
    from loyalty_model import tracking, training

    stage = stage or (lambda _: None)
    use_cache = [] if cache is None else [f"cache.enabled={'true' if cache else 'false'}"]
    cfg = load_config(
        config,
        [*overrides, *_engine_override(engine), *_bad_rows_override(on_bad_rows), *use_cache],
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


# -- tune -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuneResult:
    """A finished hyperparameter search: its tracked parent run and the best config, written."""

    run_id: str  # the study's parent run (run_kind=tune); each trial is a run nested under it
    out: Path  # the best config: the input config with the best model settings
    metric: str  # what a trial's value is: oof_log_loss (lower is better)
    best_trial: int  # its number; 0 is the input config's own settings
    best_value: float
    config_value: float | None  # trial 0's value: the input config's own settings
    best_params: Mapping[str, object]  # the searched settings of the best trial
    config_params: Mapping[str, object]  # the same settings of the input config (trial 0)
    trials_complete: int
    trials_pruned: int
    trials_failed: int
    seconds: float  # the whole call
    trial_runs: Mapping[int, str] = field(default_factory=dict)  # trial number -> run id
    config: Config | None = field(default=None, repr=False, compare=False)  # the best config
    trials: pd.DataFrame | None = field(default=None, repr=False, compare=False)  # trials.csv


def tune(
    config: ConfigLike = None,
    data_dir: str | Path | None = None,
    trials: int = 30,
    timeout: float | None = None,
    seed: int | None = None,
    out: str | Path = "tuned.yaml",
    overrides: Sequence[str] = (),
    stage: Callable[[str], None] | None = None,
    startup_trials: int = 5,
) -> TuneResult:
    """Search the LightGBM settings (tuning.SEARCH_SPACE) for the lowest out-of-fold log loss
    of the train and valid campaigns (the test campaigns are never used), with Optuna's TPE
    sampler seeded by `seed` (default: the config's model.seed). Trial 0 is the config's own
    settings. Features come through train's feature cache, built once for every trial.

    Logs a parent run (tag run_kind=tune) in the config's experiment, with a nested run per
    trial, and writes `out` (atomically): the config with its model section's searched
    settings replaced by the best trial's, for `train --config`. `trials`: at most this many;
    `timeout`: no new trial starts after this many seconds of searching; `startup_trials`:
    complete trials before a trial may be pruned (stopped after a fold whose log loss so far
    is above the median of the earlier trials' at that fold); `stage` is told each stage and
    each trial's result, in words. Same data, config, seed and trials: the same trials and
    values."""
    import math

    from loyalty_model import engines, io, tracking, training, tuning

    stage = stage or (lambda _: None)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise RequestError(f"trials must be a whole number of at least 1, got {trials!r}")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise RequestError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(startup_trials, bool) or not isinstance(startup_trials, int):
        raise RequestError(f"startup_trials must be a whole number >= 0, got {startup_trials!r}")
    if startup_trials < 0:
        raise RequestError(f"startup_trials must be a whole number >= 0, got {startup_trials!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(f"seed must be a whole number, got {seed!r}")
    t0 = time.perf_counter()
    cfg = load_config(config, overrides)
    if data_dir is not None:  # a path, not YAML (as train)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dir": Path(data_dir)})})
    _data_dir(cfg.data.dir)
    tuning.check_base(cfg.model)
    out = Path(out)
    if out.is_dir() or not out.parent.is_dir():
        why = "it is a folder" if out.is_dir() else f"no folder {out.parent}"
        raise OutputError(f"cannot write {out}: {why}")
    _engine_ready(cfg)
    seed = cfg.model.seed if seed is None else seed
    request = {"trials": trials, "timeout": timeout, "seed": seed, "startup_trials": startup_trials}
    digests = io.table_digests(cfg.data.dir)
    runs: dict[int, str] = {}
    stage("opening the tracking store")
    with tracking.tuning_run(
        cfg, {**cfg.flat(), **{f"tune.{k}": v for k, v in request.items()}}, digests
    ) as log:
        stage(f"building point-in-time features on {cfg.data.engine}")
        with engines.duckdb_session(cfg.duckdb) as con:
            read = io.prepare_tables(con, cfg.data.dir, cfg.data.on_bad_rows)
            frame, sp, _ = training.training_features(con, cfg, read, stage, digests)
        if frame.empty:
            raise DataError(
                f"no training rows: {sp.campaigns_used} campaigns have a closed label window "
                f"({sp.campaigns_excluded} excluded as not yet observed)"
            )
        rows = tuning.tuning_rows(frame, cfg)
        del frame  # the test campaigns go no further
        folds = tuning.fold_count(rows, cfg.model.calibration_folds)
        stage(
            f"tuning on {len(rows.train):,} train and {len(rows.valid):,} valid rows "
            f"({folds} folds by campaign wave), up to {trials} trial(s)"
        )

        def ended(t: tuning.TrialResult) -> None:
            runs[t.number] = log.trial(t)
            stage(tuning.trial_line(t, trials, folds))

        study = tuning.run_study(
            rows, cfg.model, trials, seed, timeout, startup_trials, on_trial=ended
        )
        tuned = tuning.tuned_config(cfg, study.best.params)
        record = tuning.study_record(cfg, study, tuned, request)
        stage(f"writing the best config to {out} and logging the study")
        io.write_text_atomic(out, record.artifacts["tuned_config.yaml"], f"cannot write {out}")
        log.finish(record)
    return TuneResult(
        run_id=log.run_id,
        out=out,
        metric=tuning.METRIC,
        best_trial=study.best.number,
        best_value=float(study.best.value),
        config_value=study.first.value,
        best_params=MappingProxyType(dict(study.best.params)),
        config_params=MappingProxyType(dict(study.first.params)),
        trials_complete=study.count("complete"),
        trials_pruned=study.count("pruned"),
        trials_failed=study.count("failed"),
        seconds=time.perf_counter() - t0,
        trial_runs=MappingProxyType(runs),
        config=tuned,
        trials=study.table(),
    )


# -- predict --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionResult:
    """A prediction folder, written atomically (docs/output_contract.md)."""

    out: Path
    files: Mapping[str, Path]  # follower_scores, audience_scores, manifest, audience_explanations
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


# -- plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanResult:
    """A plan folder (docs/output_contract.md#plans): plan, plan_summary.json and the
    prediction folder it was planned from, written atomically."""

    out: Path
    files: Mapping[str, Path]  # plan, summary, predictions (a prediction folder)
    plan: pd.DataFrame = field(repr=False, compare=False)  # the chosen influencers, in order
    summary: Mapping[str, object] = field(default_factory=dict)  # what plan_summary.json holds
    seconds: float = 0.0  # the whole call
    planning_seconds: float = 0.0  # of which choosing the plans (not scoring)
    # the simulator's counterfactual truth of each plan where it has it: plan -> true unique
    # loyal customers on the planner's scale (never written to the files)
    truth: Mapping[str, float] | None = None


def plan(
    data_dir: str | Path,
    brand: str,
    budget: float,
    out: str | Path,
    as_of: str | date | None = None,
    candidates: Sequence[str] | pd.DataFrame | None = None,
    model: str | None = None,
    max_influencers: int | None = None,
    fmt: Literal["parquet", "csv"] = "parquet",
    config: ConfigLike = None,
    overrides: Sequence[str] = (),
    engine: Engine | None = None,
    predictions: str | Path | None = None,
) -> PlanResult:
    """Choose the influencers to book for `brand` within `budget` so that the expected number
    of unique loyal customers is largest (followers of several count once), and compare the
    plan with the best single influencer, the reach buyer's plan (largest audiences first)
    and the best plan of macro and mega influencers only, all at the same budget.

    Scores the candidates' followers as `predict` does (same `as_of`, `model`, `config`,
    `engine`) into OUT/predictions, then writes OUT/plan.{parquet,csv} and
    OUT/plan_summary.json; OUT is replaced atomically. `candidates`: influencer ids, or a
    frame with influencer_id and optionally cost (which wins over price_per_post); default
    every influencer with a price. Counts and costs are on the full-audience scale.
    `predictions`: plan from this prediction folder of `brand` instead of scoring (another
    budget on the same scores); then `as_of`, `model` and `engine` must not be given."""
    import math

    import pandas as pd

    from loyalty_model import io, planner

    try:
        budget = float(budget)
    except (TypeError, ValueError):
        raise RequestError(f"budget must be an amount, got {budget!r}") from None
    if not math.isfinite(budget) or budget <= 0:
        raise RequestError(f"budget must be a positive amount, got {budget!r}")
    if max_influencers is not None and max_influencers < 1:
        raise RequestError(f"max_influencers must be at least 1, got {max_influencers}")
    if fmt not in ("parquet", "csv"):
        raise RequestError(f"format must be parquet or csv, got {fmt!r}")
    if candidates is None or isinstance(candidates, pd.DataFrame):
        named = candidates
    elif isinstance(candidates, str):
        raise RequestError(f"candidates must be a list of ids, not the string {candidates!r}")
    else:
        named = pd.DataFrame({"influencer_id": [str(c) for c in candidates]})
    if named is not None and "influencer_id" not in named:
        raise RequestError("candidates: a frame needs an influencer_id column")
    data_dir, out = _data_dir(data_dir), Path(out)
    if _overlaps(out, data_dir):
        raise RequestError(f"the output folder {out} would replace the data it reads ({data_dir})")
    t0 = time.perf_counter()
    if predictions is not None and (as_of or model or engine):
        raise RequestError("plan from a prediction folder takes its as-of, model and engine")
    if predictions is not None and _overlaps(out, Path(predictions)):
        raise RequestError(
            f"the output folder {out} would replace the predictions it plans from "
            f"({predictions}): write the plan to another folder"
        )
    # prices are known before scoring: a budget that buys nobody is refused at once
    prices = _prices(data_dir)
    if prices is not None:
        _affordable(planner.candidate_costs(prices, named)[0], budget)
    with _writing(out), io.atomic_dir(out) as tmp:
        if predictions is None:
            pred = predict(
                data_dir,
                brand,
                tmp / "predictions",
                as_of=as_of,
                influencers=None if named is None else list(named["influencer_id"].astype(str)),
                model=model,
                fmt=fmt,
                config=config,
                overrides=overrides,
                engine=engine,
            )
            manifest, aud = pred.manifest, pred.audiences
            follower_file, where = pred.files["follower_scores"], "predictions"
        else:
            manifest, aud, follower_file = _prediction_folder(
                Path(predictions), brand, named, data_dir
            )
            where = str(Path(predictions).absolute())
        t1 = time.perf_counter()
        cost, counts = planner.candidate_costs(aud, named)
        _affordable(cost, budget)
        followers = io.read_frame(follower_file, manifest["format"])
        summary, table, inst, choices = _plans(
            planner, followers, aud, cost, budget, max_influencers, manifest
        )
        summary = {
            "brand_id": brand,
            "as_of": manifest["as_of"],
            "budget": budget,
            "currency": manifest["currency"],
            "scale": "full_audience",
            "max_influencers": max_influencers,
            "model": manifest["model"],
            "candidates": {
                **counts,
                "without_followers_scored": int(sum(inst.scored(j) == 0 for j in range(inst.n))),
                "over_budget": int((inst.cost > budget).sum()),
            },
            **summary,
            "predictions": where,
            "planning_seconds": time.perf_counter() - t1,
        }
        files = {
            "plan": out / f"plan.{fmt}",
            "summary": out / "plan_summary.json",
            "predictions": out / "predictions" if predictions is None else Path(where),
        }
        io.write_frame(table, tmp / files["plan"].name, fmt)
        io.write_json(summary, tmp / files["summary"].name)
    truth = None
    if not manifest.get("follower_ids", {}).get("pseudonymized"):
        truth = _plan_truth(planner, data_dir, brand, manifest["as_of"], inst, choices)
    return PlanResult(
        out=out,
        files=MappingProxyType(files),
        plan=table,
        summary=MappingProxyType(summary),
        seconds=time.perf_counter() - t0,
        planning_seconds=float(summary["planning_seconds"]),
        truth=truth,
    )


def _prices(data_dir: Path) -> pd.DataFrame | None:
    """influencer_id and price_per_post of the data, read before anything is scored; None
    when the table cannot be read as it is (scoring then reports what is wrong with it)."""
    import duckdb

    from loyalty_model import io
    from loyalty_model.errors import ContractError

    try:
        with duckdb.connect() as con:
            view = io.register_raw(con, data_dir, "influencers")
            # one row per id: rows the contract refuses (repeated or missing ids) are its
            # business once scoring reads the data, not this early look's
            return con.execute(
                f"SELECT CAST(influencer_id AS VARCHAR) AS influencer_id, "
                f"min(TRY_CAST(price_per_post AS DOUBLE)) AS price_per_post FROM {view} "
                "WHERE influencer_id IS NOT NULL GROUP BY ALL"
            ).df()
    except (duckdb.Error, ContractError):
        return None


def _affordable(cost: pd.Series, budget: float) -> None:
    """Refuse a plan no candidate can be part of: none with a cost, or none within budget."""
    if cost.empty:
        raise RequestError(
            "no candidate has a cost: none has a price_per_post (give costs in a candidates file)"
        )
    if budget < cost.min():
        raise RequestError(
            f"budget {budget:,.2f} is below the cheapest candidate's cost "
            f"{cost.min():,.2f} ({cost.idxmin()})"
        )


def _prediction_folder(
    folder: Path, brand: str, named, data_dir: Path
) -> tuple[dict, pd.DataFrame, Path]:
    """(manifest, audience_scores, follower_scores path) of a prediction folder of `brand`,
    made from the tables of `data_dir`, that scored every candidate."""
    import json

    from loyalty_model import io

    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        fmt = manifest["format"]
        aud = io.read_frame(folder / f"audience_scores.{fmt}", fmt)
    except (OSError, ValueError, KeyError) as exc:
        raise RequestError(f"{folder} is not a readable prediction folder ({exc})") from exc
    if manifest.get("brand_id") != brand:
        raise RequestError(f"the predictions in {folder} are for brand {manifest.get('brand_id')}")
    # the same data: the small tables' digests (events, the big one, is not hashed again)
    inputs = manifest.get("inputs", {})
    for table in ("influencers", "brands", "follows"):
        recorded = (inputs.get(table) or {}).get("sha256")
        if recorded and recorded != io.fingerprint(io.table_source(data_dir, table)):
            raise RequestError(
                f"the predictions in {folder} were made from other data than {data_dir} "
                f"(table {table} differs)"
            )
    if named is not None:
        missing = set(named["influencer_id"].astype(str)) - set(aud["influencer_id"])
        if missing:
            raise RequestError(
                f"the predictions in {folder} did not score {len(missing)} candidate(s), e.g. "
                f"{', '.join(sorted(missing)[:5])}"
            )
    followers = folder / "follower_scores"
    return manifest, aud, followers if followers.is_dir() else folder / f"follower_scores.{fmt}"


PLAN_LABELS = {
    "planner": "Planner: most unique loyal customers within the budget",
    "best_single": "Best single influencer",
    "reach_buyer": "Reach buyer: largest audiences first",
    "macro_only": "Best plan of macro and mega influencers only",
}


def _plans(planner, followers, aud, cost, budget, max_influencers, manifest) -> tuple:
    """(summary keys, plan table, the instance, each plan's choice) of the four plans."""
    import numpy as np

    fraction, source = planner.sample_fraction(aud[aud["influencer_id"].isin(cost.index)])
    inst = planner.instance(followers, aud, cost, fraction)
    info = aud.set_index("influencer_id").reindex(inst.ids)
    tiers = info["tier"].to_numpy(dtype=object)
    counts = info["follower_count"].to_numpy(dtype=float)
    big = np.isin(tiers, planner.BIG_TIERS)
    best = planner.optimise(inst, budget, None, max_influencers)
    if best is None:
        raise RequestError(
            "no candidate within the budget is expected to bring a loyal customer "
            "(no followers scored, or every probability 0)"
        )
    choices = {
        "planner": best,
        "best_single": planner.best_single(inst, budget),
        "reach_buyer": planner.reach_buyer(inst, budget, counts, max_influencers),
        "macro_only": planner.optimise(inst, budget, big, max_influencers),
    }
    dispersion = float(manifest.get("audience_dispersion") or 0.0)
    spread = dict(manifest.get("audience_spread") or {})
    plans = {
        name: None
        if c is None
        else planner.assess(inst, c, PLAN_LABELS[name], tiers, dispersion, spread).to_dict()
        for name, c in choices.items()
    }
    method = {
        "objective": "expected unique loyal customers: the chosen audiences' expected_loyal, "
        "less the loyal customers they share, counted once: 1 - prod (1 - p_loyal) per "
        "follower, each sampled follower standing for 1 / sample_fraction people",
        "algorithm": "greedy by marginal gain per cost and greedy by marginal gain, both "
        "with lazy evaluation (CELF), and the best single influencer within the budget; "
        "the best of the three",
        "guarantee": "within (1 - 1/e) / 2 of the best plan under the budget"
        + ("" if max_influencers is None else " (without max_influencers; with it, a heuristic)"),
        "chosen_by": best.by,
        "gain_evaluations": best.evaluations,
    }
    sample = {"fraction": fraction, "source": source}
    table = planner.plan_table(inst, best, aud)
    return {"plans": plans, "method": method, "sample": sample}, table, inst, choices


def _plan_truth(planner, data_dir: Path, brand: str, as_of: str, inst, choices) -> dict | None:
    """Each plan's true unique loyal customers, where the data are a simulated world with a
    scoring scenario for this (brand, as-of)."""
    import pandas as pd

    path = data_dir / "ground_truth_scoring.parquet"
    if not path.is_file():
        return None
    truth = pd.read_parquet(path, filters=[("brand_id", "==", brand)])
    truth = truth[truth["as_of"] == pd.Timestamp(as_of)]
    if truth.empty or "p_convert" not in truth:
        return None
    return {
        name: planner.true_value(inst, c.chosen, truth)
        for name, c in choices.items()
        if c is not None
    }


# -- report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportResult:
    out: Path  # the HTML file
    warnings: tuple[str, ...] = ()  # what the report had to leave out, and why


def write_report(
    predictions: str | Path,
    out: str | Path,
    plan: str | Path | None = None,
    config: ConfigLike = None,
    overrides: Sequence[str] = (),
) -> ReportResult:
    """Write one self-contained HTML file for product teams from a prediction folder (and a
    plan folder): leaderboard, tiers, plan comparison, why the top audiences score high, the
    model card and what the numbers mean (docs/report.md). The model card is read from the
    tracking store of `config`; when it does not answer, the report says so and a warning is
    returned."""
    import json

    from loyalty_model import report as rep
    from loyalty_model import tracking
    from loyalty_model.errors import ModelError

    predictions, out = Path(predictions), Path(out)
    cfg = load_config(config, overrides)
    try:
        manifest = json.loads((predictions / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise RequestError(
            f"{predictions} is not a prediction folder: no readable manifest.json"
        ) from exc
    if plan is not None:
        _same_request(Path(plan), manifest)
    model = manifest.get("model") or {}
    card, warnings = None, []
    if model.get("run_id"):
        try:
            text, metrics = tracking.read_model_card(model["run_id"], cfg.tracking)
            card = rep.ModelCard(
                name=model.get("name") or "", version=model.get("version"),
                run_id=model["run_id"], markdown=text, metrics=metrics,
            )  # fmt: skip
        except ModelError as exc:
            warnings.append(f"model card left out: {exc}")
    with _writing(out):
        rep.write_html(predictions, out, plan=None if plan is None else Path(plan), card=card)
    return ReportResult(out, tuple(warnings))


def _same_request(plan: Path, manifest: Mapping) -> None:
    """A plan reported beside predictions of another brand or date would mislead: refuse."""
    import json

    try:
        summary = json.loads((plan / "plan_summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise RequestError(f"{plan} is not a plan folder: no readable plan_summary.json") from exc
    mine = (summary.get("brand_id"), str(summary.get("as_of")))
    theirs = (manifest.get("brand_id"), str(manifest.get("as_of")))
    if mine != theirs:
        raise RequestError(
            f"the plan is for brand {mine[0]} as of {mine[1]}, the predictions for brand "
            f"{theirs[0]} as of {theirs[1]}"
        )
    run, other = (
        (summary.get("model") or {}).get("run_id"),
        (manifest.get("model") or {}).get("run_id"),
    )
    if run != other:
        raise RequestError(
            f"the plan was made with the model of run {run}, the predictions with run {other}"
        )


# -- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunsResult:
    """The training runs of an experiment, as a leaderboard."""

    experiment: str
    sort: str | None  # the metric the runs are ranked by; None: the most recent first
    ascending: bool  # lowest first (a loss-like metric: log loss, ECE, Brier, MAE, seconds)
    runs: pd.DataFrame = field(repr=False, compare=False)  # one row per run (docs/api.md)


def runs(
    config: ConfigLike = None,
    experiment: str | None = None,
    top: int = 10,
    sort: str | None = None,
    overrides: Sequence[str] = (),
) -> RunsResult:
    """The training runs of `experiment` (default: the config's tracking.experiment) in the
    config's tracking store, with their headline test metrics, the best baseline's value on
    each, the registered version and its current aliases, and the source commit: the `top`
    most recent, or with `sort` the `top` best by that logged metric (highest first; lowest
    first for loss-like metrics: log loss, ECE, Brier, MAE, seconds). An unknown experiment
    or a metric no training run logged: RequestError; a store that does not answer:
    ModelError."""
    from loyalty_model import tracking

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise RequestError(f"top must be a whole number of at least 1, got {top!r}")
    if sort is not None and not sort.strip():
        raise RequestError("sort must name a metric, e.g. test_pr_auc")
    cfg = load_config(config, overrides)
    name = experiment or cfg.tracking.experiment
    sort = sort.strip() if sort is not None else None
    frame = tracking.training_runs(cfg.tracking, name, top, sort)
    ascending = sort is not None and tracking.lower_is_better(sort)
    return RunsResult(name, sort, ascending, frame)


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
        drift = explain = None
        if engine == "duckdb" and model.reference is not None:
            drift = DriftCounter(model.reference)
        if engine == "duckdb":
            explain = scoring.ContributionCounter(model)
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
                explain,
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
        if explain is not None:  # computed where the rows are scored: not on Spark's executors
            files["audience_explanations"] = out / f"audience_explanations.{fmt}"
            explanations = explain.table()
            with timed(seconds, "write"):
                io.write_frame(explanations, tmp / files["audience_explanations"].name, fmt)
            rows["audience_explanations"] = len(explanations)
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
            cal.audience_spread,
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
