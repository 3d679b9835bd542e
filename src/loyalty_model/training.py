"""Training: tables in, a fitted model and its evaluation out. No paths, no tracking."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from loyalty_model import cache, engines, features, io, scoring, spine
from loyalty_model.config import Config, FeatureConfig, LabelConfig, ModelConfig
from loyalty_model.contract import TABLES
from loyalty_model.drift import FeatureReference, watched
from loyalty_model.errors import ConfigError, DataError
from loyalty_model.evaluate import (
    Evaluation,
    audiences_against_truth,
    binary_metrics,
    evaluate_model,
    scenarios_of,
    tier_names,
    truth_sample,
)
from loyalty_model.features import FeatureSpec
from loyalty_model.gate import CHAMPION_PREFIX
from loyalty_model.model import (
    LoyaltyModel,
    audience_dispersion,
    audience_spread,
    cross_fit,
    feature_spec,
    fit,
    fit_calibrator,
    fit_trees,
    to_matrix,
)
from loyalty_model.timing import timed

log = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    model: LoyaltyModel
    metrics: dict[str, float]
    sizes: dict[str, float]
    frames: dict[str, pd.DataFrame]  # train / valid / test feature frames (with labels)
    timings: dict[str, float]
    evaluation: Evaluation
    window: dict[str, str]  # split boundaries and the data window, for the model card
    truth: TruthCheck | None = None  # audiences against the simulator's truth, where known
    read: io.Tables | None = None  # warnings about the data, rows dropped per reason
    quarantine: dict[str, pd.DataFrame] = field(default_factory=dict)  # the rows dropped
    feature_cache: cache.CacheUse | None = None  # hit, miss or off, and the key
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # io.table_digests


@dataclass
class TruthCheck:
    """Audience predictions against the simulator's counterfactual truth, per scenario."""

    scenarios: pd.DataFrame  # one row per scenario: Spearman, top-k overlaps
    tiers: pd.DataFrame  # per scenario and tier: predicted and true rate and cost
    audiences: list[pd.DataFrame]  # the predicted audience_scores, per scenario

    def metrics(self) -> dict[str, float]:
        """Means over scenarios, prefixed truth_ (for tracking)."""
        cols = [
            "spearman_cost",
            "spearman_rate",
            "top10_overlap_cost",
            "top20_overlap_cost",
            "top10_overlap_rate",
            "top20_overlap_rate",
            "spearman_cost_per_follower",
            "top20_overlap_cost_per_follower",
        ]
        means = self.scenarios[cols].mean()
        sums = self.scenarios.reindex(columns=["influencers_scored", "followers_scored"]).sum()
        return (
            {"truth_scenarios": float(len(self.scenarios))}
            | {f"truth_{k}": float(v) for k, v in means.items()}
            | {f"truth_{k}": float(v) for k, v in sums.items()}
        )


@dataclass(frozen=True)
class RunRecord:
    """What a training run logs: parameters, metrics, text artifacts (file name -> text),
    figures (file name -> matplotlib figure) and tags; the input tables (table -> path and
    sha256 of its bytes, as in the prediction manifest) and the registered version's
    description (data window, label, headline metrics)."""

    params: dict[str, object]
    metrics: dict[str, float]
    artifacts: dict[str, str]
    figures: dict[str, object]
    tags: dict[str, str]
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    description: str = ""


def run_record(cfg: Config, outcome: TrainingOutcome, champion_version: str | None) -> RunRecord:
    """The run record of a training outcome (`champion_version`: the champion it was compared
    with on the same test rows, None when there was none)."""
    import json
    import re

    import yaml

    from loyalty_model import plots
    from loyalty_model.card import model_card, table_md

    ev = outcome.evaluation
    params = {
        **cfg.flat(),
        **{f"size.{k}": v for k, v in outcome.sizes.items()},
        "calibration": outcome.model.calibrator.method,
    }
    artifacts = {
        "config.yaml": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        "feature_spec.json": json.dumps(outcome.model.spec.to_dict(), indent=2),
        "feature_importance.csv": outcome.model.importance().to_csv(index=False),
        "calibration.json": json.dumps(outcome.model.calibrator.to_dict(), indent=2),
        "baselines.csv": ev.baselines.to_csv(index=False),
        "baselines.md": table_md(ev.baselines) + "\n",
        "audiences_test.csv": ev.audiences.to_csv(index=False),
        "model_card.md": model_card(cfg, outcome),
    }
    if not ev.differences.empty:  # the model minus each baseline, paired-bootstrap intervals
        artifacts["baseline_differences.csv"] = ev.differences.to_csv(index=False)
    if outcome.read is not None and outcome.read.warnings:
        artifacts["data_warnings.txt"] = "\n".join(outcome.read.warnings) + "\n"
    if outcome.read is not None and outcome.read.dropped:
        artifacts["quarantine/summary.json"] = json.dumps(outcome.read.dropped, indent=2)
    for name, rows in outcome.quarantine.items():
        artifacts[f"quarantine/{name}.csv"] = rows.to_csv(index=False)
    if outcome.truth is not None:
        artifacts["audiences_vs_truth.csv"] = outcome.truth.scenarios.to_csv(index=False)
        artifacts["audience_tiers_vs_truth.csv"] = outcome.truth.tiers.to_csv(index=False)
    figures = plots.all_figures(outcome.model, outcome.frames["test"], ev.test_scores)
    # each baseline's test metrics (baselines.csv) as metrics of the run too, so that runs can
    # be compared with them without reading artifacts: baseline_<scorer>_test_<metric>
    baselines = {
        f"baseline_{re.sub(r'[^0-9a-z]+', '_', str(row['scorer']).lower()).strip('_')}"
        f"_test_{k}": float(v)
        for row in ev.baselines.to_dict("records")
        if not str(row["scorer"]).startswith(("model", "oracle"))
        for k, v in row.items()
        if k != "scorer" and isinstance(v, int | float) and v == v
    }
    # NaN marks a metric that could not be computed (too few campaigns of a tier, ...):
    # not logged, not returned
    metrics = {
        k: v
        for k, v in {**outcome.metrics, **baselines, **outcome.sizes, **outcome.timings}.items()
        if v == v
    }
    # lineage: the input tables with the sha256 the prediction manifest records (hashed once
    # per run, for the feature cache's key too)
    inputs = outcome.inputs or io.table_digests(cfg.data.dir)
    lab, w = cfg.label, outcome.window
    headline = [
        (label, metrics.get(f"test_{key}"), metrics.get(f"champion_test_{key}"))
        for label, key in (
            ("ROC-AUC", "roc_auc"),
            ("PR-AUC", "pr_auc"),
            ("ECE", "ece"),
            ("audience Spearman", "audience_spearman_rate"),
        )
    ]
    description = "\n".join(
        [
            f"Data: {cfg.data.dir}, events up to {w['data_end'][:10]}; campaigns split by "
            f"start: train from {w['train_from'][:10]}, valid from {w['valid_from'][:10]}, "
            f"test from {w['test_from'][:10]} to {w['test_to'][:10]} "
            f"({outcome.sizes['test_campaigns']:.0f} test campaigns, "
            f"{outcome.sizes['test_rows']:,.0f} rows).",
            f"Label: brand-loyal = at least {lab.min_purchases} purchases of the campaign's "
            f"brand within {lab.horizon_days} days of the campaign start"
            + (", the first attributed to the influencer" if lab.require_attribution else "")
            + ".",
            "Test: "
            + ", ".join(f"{name} {v:.4f}" for name, v, _ in headline if v is not None)
            + (
                f" (champion v{champion_version} on the same rows: "
                + ", ".join(f"{name} {c:.4f}" for name, _, c in headline if c is not None)
                + ")"
                if champion_version
                else ""
            )
            + ".",
        ]
    )
    return RunRecord(
        params=params,
        metrics=metrics,
        artifacts=artifacts,
        figures=figures,
        tags={
            "champion_compared": champion_version or "none",
            "engine": cfg.data.engine,
            **(outcome.feature_cache.tags() if outcome.feature_cache else {}),
        },
        inputs=inputs,
        description=description,
    )


def audiences_against_scenarios(
    con: duckdb.DuckDBPyConnection,
    model: LoyaltyModel,
    truth: pd.DataFrame,
    max_followers: int | None = None,
) -> TruthCheck:
    """Score the audiences of each scoring scenario the simulator knows the truth of, and
    compare (evaluate.audiences_against_truth): every audience, or a reproducible sample of
    whole audiences when a scenario has more than `max_followers` followers in the data
    (evaluate.truth_sample), so that the check stays affordable on worlds like `large`."""
    tables = engines.ibis_tables(con, list(TABLES))
    scenarios = scenarios_of(truth)
    per = {sid: truth[truth["scenario_id"] == sid] for sid, _, _ in scenarios}
    chosen = {
        sid: None if max_followers is None else truth_sample(t, max_followers)
        for sid, t in per.items()
    }
    requests = [(brand, as_of.to_pydatetime(), chosen[sid]) for sid, brand, as_of in scenarios]
    predicted = scoring.audiences_for(con, tables, requests, model)
    rows, tiers = [], []
    for (sid, brand, as_of), aud in zip(scenarios, predicted, strict=True):
        t = (
            per[sid]
            if chosen[sid] is None
            else per[sid][per[sid]["influencer_id"].isin(chosen[sid])]
        )
        r = audiences_against_truth(aud, t)
        scored = {
            "influencers_scored": float(len(t)),
            "influencers_in_scenario": float(len(per[sid])),
            "followers_scored": float(t["followers_in_data"].sum()),
        }
        rows.append({"scenario_id": sid, "brand_id": brand, "as_of": as_of, **r.metrics, **scored})
        tiers.append(r.tiers.assign(scenario_id=sid))
    return TruthCheck(pd.DataFrame(rows), pd.concat(tiers, ignore_index=True), predicted)


def build_training_frame(
    con: duckdb.DuckDBPyConnection, cfg: Config, read: io.Tables | None = None
) -> tuple[pd.DataFrame, spine.TrainingSpine]:
    """Register and validate the tables (on DuckDB), build the labelled spine and its
    features on the config's engine. On Spark the frame is collected to this machine, where
    LightGBM trains (on a sample, data.sample_fraction, when it would not fit)."""
    read = read or io.prepare_tables(con, cfg.data.dir, cfg.data.on_bad_rows)
    data_end = con.execute("SELECT max(event_ts) FROM events").fetchall()[0][0]
    if cfg.data.engine == "spark":
        from loyalty_model import spark

        spark_reads_the_files(read)
        with engines.spark_session(cfg.spark) as session:
            tables = spark.spark_tables(session, cfg.data.dir)
            with engines.spark_job("building the training features"):
                return _training_frame(tables, cfg, data_end)
    return _training_frame(engines.ibis_tables(con, list(read.views)), cfg, data_end)


def spark_reads_the_files(read: io.Tables) -> None:
    """Spark reads the table files themselves, so rows dropped on DuckDB would be back: a
    one-line refusal, rather than features from rows the manifest says were set aside."""
    if read.dropped:
        raise ConfigError(
            f"data.on_bad_rows=drop set aside {read.dropped_rows():,} rows "
            f"({', '.join(sorted(read.dropped))}), but the spark engine reads the files as they "
            "are: write the data without them, or use --engine duckdb"
        )


def _training_frame(
    tables: dict, cfg: Config, data_end: datetime | None
) -> tuple[pd.DataFrame, spine.TrainingSpine]:
    sp = spine.training_spine(tables, cfg.label, data_end)
    rows = sp.rows
    unlabelled = sp.unlabelled
    if cfg.data.sample_fraction < 1:
        rows = spine.sample_followers(rows, cfg.data.sample_fraction)
        unlabelled = spine.sample_followers(unlabelled, cfg.data.sample_fraction)
    if cfg.data.max_training_rows is not None:
        rows, before = spine.cap_rows(rows, cfg.data.max_training_rows, counted=unlabelled)
        if before > cfg.data.max_training_rows:
            log.info("training rows capped: about %d of %d", cfg.data.max_training_rows, before)
            sp = replace(sp, rows_before_cap=before)
    frame = features.collect_features(rows, tables, cfg.features, cfg.label)
    frame = frame.sort_values(["cutoff_ts", "campaign_id", "follower_id"]).reset_index(drop=True)
    return frame, sp


Stage = Callable[[str], None]  # told what training is doing now, in words


@dataclass(frozen=True)
class SpineFacts:
    """What training uses of the spine besides the frame (cached beside it)."""

    campaigns_used: int
    campaigns_excluded: int  # label window not fully observed in the data
    data_end: datetime | None  # last event_ts in the data
    rows_before_cap: int | None = None  # spine rows before data.max_training_rows sampled

    @classmethod
    def of(cls, sp: spine.TrainingSpine) -> SpineFacts:
        return cls(sp.campaigns_used, sp.campaigns_excluded, sp.data_end, sp.rows_before_cap)

    def to_dict(self) -> dict:
        end = None if self.data_end is None else self.data_end.isoformat()
        return {
            "campaigns_used": self.campaigns_used,
            "campaigns_excluded": self.campaigns_excluded,
            "data_end": end,
            "rows_before_cap": self.rows_before_cap,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SpineFacts:
        end = None if d["data_end"] is None else datetime.fromisoformat(d["data_end"])
        cap = d["rows_before_cap"]
        return cls(
            int(d["campaigns_used"]),
            int(d["campaigns_excluded"]),
            end,
            None if cap is None else int(cap),
        )


def training_features(
    con: duckdb.DuckDBPyConnection,
    cfg: Config,
    read: io.Tables,
    stage: Stage = lambda _: None,
    digests: dict[str, dict[str, str]] | None = None,
) -> tuple[pd.DataFrame, SpineFacts, cache.CacheUse]:
    """build_training_frame through train's feature cache (cache.py): the frame of an entry
    with the same key when there is one, else built and stored; built and neither read nor
    stored with cache.enabled false. `read`: the tables io.prepare_tables registered on
    `con`; `digests`: io.table_digests of the data, computed when not given."""
    if not cfg.cache.enabled:
        t0 = time.perf_counter()
        frame, sp = build_training_frame(con, cfg, read)
        built = time.perf_counter() - t0
        return (
            frame,
            SpineFacts.of(sp),
            cache.CacheUse("off", None, None, 0.0, cfg.data.engine, built),
        )
    if cfg.data.engine == "spark":
        spark_reads_the_files(read)  # refused on a hit as on a build
    t0 = time.perf_counter()
    material = cache.key_material(cfg, read.dropped, cache.input_digests(cfg.data.dir, digests))
    key = cache.key_of(material)
    store = cache.FeatureCache.of(cfg.cache)
    found = store.get(key)
    if found is not None:
        try:
            facts = SpineFacts.from_dict(found.meta["spine"])
            built = found.meta["built"]
            engine, built_seconds = str(built["engine"]), float(built["seconds"])
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("feature cache: entry %s lacks %s; rebuilding it", found.folder, exc)
            store.discard(key)
        else:
            use = cache.CacheUse(
                "hit", key, found.folder, time.perf_counter() - t0, engine, built_seconds
            )
            stage(use.summary())
            return found.frame, facts, use
    seconds = time.perf_counter() - t0
    stage(f"feature cache miss (key {key}): building the features on {cfg.data.engine}")
    t1 = time.perf_counter()
    frame, sp = build_training_frame(con, cfg, read)
    built_seconds = time.perf_counter() - t1
    facts = SpineFacts.of(sp)
    entry = None
    if not frame.empty:  # nothing to train on: an error follows, nothing worth keeping
        stage(f"storing the features in the feature cache ({store.folder})")
        t2 = time.perf_counter()
        meta = {
            "material": material,
            "spine": facts.to_dict(),
            "built": {"engine": cfg.data.engine, "seconds": built_seconds},
            "data_dir": str(cfg.data.dir),  # where the tables were; not part of the key
        }
        entry = store.put(key, frame, meta)
        seconds += time.perf_counter() - t2
    return frame, facts, cache.CacheUse("miss", key, entry, seconds, cfg.data.engine, built_seconds)


def fit_and_evaluate(
    cfg: Config, champion: LoyaltyModel | None = None, stage: Stage | None = None
) -> TrainingOutcome:
    """Features, split, fit, calibrate, evaluate (with baselines; against `champion` on the
    same test rows when one is given), on a DuckDB session of the config's settings.
    `stage` is told each stage as it starts (and each cross-fit fold as it ends)."""
    with engines.duckdb_session(cfg.duckdb) as con:
        return _fit_and_evaluate(con, cfg, champion, stage or (lambda _: None))


def _fit_and_evaluate(
    con: duckdb.DuckDBPyConnection, cfg: Config, champion: LoyaltyModel | None, stage: Stage
) -> TrainingOutcome:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    stage(f"building point-in-time features on {cfg.data.engine}")
    with timed(timings, "validation_seconds"):  # the data contract; registers the tables
        read = io.prepare_tables(con, cfg.data.dir, cfg.data.on_bad_rows)
    # hashed once: the feature cache's key and the run's lineage (run_record) both need them
    digests = io.table_digests(cfg.data.dir)
    with timed(timings, "feature_seconds"):  # built, or read from the feature cache
        frame, sp, cached = training_features(con, cfg, read, stage, digests)
    timings["feature_cache_seconds"] = cached.seconds
    n_events = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    if frame.empty:
        raise DataError(
            f"no training rows: {sp.campaigns_used} campaigns have a closed label window "
            f"({sp.campaigns_excluded} excluded as not yet observed)"
        )
    parts, (v_from, t_from) = split(frame, cfg)
    spec = spec_of(parts["train"], cfg)
    with timed(timings, "fit_seconds"):
        model, valid_p, fit_info = fit_and_calibrate(
            parts["train"], parts["valid"], spec, cfg.model, stage
        )
    # the reference drift is measured against at scoring (drift.py): the latest campaigns'
    # rows (test), the population nearest in time to a scoring date, so that features that
    # grow with the length of history (all-time counts, follow tenure) do not look shifted
    # merely because a scoring date comes after every campaign
    matrix = to_matrix(parts["test"], spec)[watched(spec.names)]
    model = replace(model, reference=FeatureReference.of(matrix, spec.categorical))
    stage("evaluating on the test campaigns, with the baselines")
    with timed(timings, "evaluation_seconds"):
        truth = io.read_ground_truth(cfg.data.dir)
        evaluation = evaluate_model(
            model,
            parts,
            truth,
            seed=cfg.model.seed,
            valid_p=valid_p,
            draws=cfg.evaluation.bootstrap_draws,
        )
    metrics = dict(evaluation.metrics)
    truth_audiences = io.read_truth_audiences(cfg.data.dir)
    check = None
    with timed(timings, "truth_check_seconds"):
        if truth_audiences is not None and cfg.evaluation.truth_max_followers > 0:
            stage("scoring the simulator's scenarios against their ground truth")
            check = audiences_against_scenarios(
                con, model, truth_audiences, cfg.evaluation.truth_max_followers
            )
            metrics.update(check.metrics())
    with timed(timings, "champion_seconds"):
        if champion is not None:
            stage("scoring the champion on the same test rows")
            test = _rows_for(champion, parts["test"], con, cfg)
            champ = binary_metrics(test["label"].to_numpy(), champion.predict_proba(test))
            metrics.update({f"{CHAMPION_PREFIX}{k}": v for k, v in champ.items()})
    metrics.update(fit_info)
    after_features = (
        time.perf_counter() - t0 - timings["feature_seconds"] - timings["validation_seconds"]
    )
    lightgbm = sum(fit_info[f"{k}_seconds"] for k in ("early_stopping_fit", "cross_fit", "refit"))
    sizes = {}
    for name, part in parts.items():
        sizes[f"{name}_rows"] = float(len(part))
        sizes[f"{name}_campaigns"] = float(part["campaign_id"].nunique())
        sizes[f"{name}_base_rate"] = float(part["label"].mean())
    sizes["campaigns_excluded_open_window"] = float(sp.campaigns_excluded)
    if sp.rows_before_cap is not None:  # data.max_training_rows sampled the spine
        sizes["spine_rows_before_cap"] = float(sp.rows_before_cap)
    sizes["events"] = float(n_events)
    t_build = cached.built_seconds or timings["feature_seconds"]  # on a hit: the build's
    timings |= {
        # where the time after the feature build goes: LightGBM's share of it
        "lightgbm_share_after_features": lightgbm / after_features if after_features else 0.0,
        "events_per_second_features": n_events / t_build if t_build else float("nan"),
    }
    window = {
        "train_from": str(parts["train"]["cutoff_ts"].min()),
        "valid_from": str(v_from),
        "test_from": str(t_from),
        "test_to": str(parts["test"]["cutoff_ts"].max()),
        "data_end": str(sp.data_end),
    }
    quarantine = {
        name: con.execute(sql).df() for name, sql in read.quarantine.items()
    }  # the rows dropped (data.on_bad_rows=drop), logged with the run
    sizes["rows_quarantined"] = float(read.dropped_rows())
    return TrainingOutcome(
        model,
        metrics,
        sizes,
        parts,
        timings,
        evaluation,
        window,
        check,
        read,
        quarantine,
        cached,
        digests,
    )


def split(
    frame: pd.DataFrame, cfg: Config
) -> tuple[dict[str, pd.DataFrame], tuple[datetime, datetime]]:
    """The frame split by campaign start into train < valid < test, and the two bounds."""
    starts = [ts.to_pydatetime() for ts in frame["cutoff_ts"]]
    v_from, t_from = spine.split_bounds(starts, cfg.split)  # raises when a part is empty
    cut = frame["cutoff_ts"]
    parts = {
        "train": frame[cut < v_from],
        "valid": frame[(cut >= v_from) & (cut < t_from)],
        "test": frame[cut >= t_from],
    }
    return parts, (v_from, t_from)


def spec_of(train: pd.DataFrame, cfg: Config) -> FeatureSpec:
    """The feature spec of a model trained on these rows with this config."""
    names = features.feature_names(
        list(train.columns), ["campaign_id", *features.SPINE_KEYS, "label"]
    )
    return feature_spec(
        train,
        names,
        tuple(c for c in features.CATEGORICAL if c in names),
        version=features.FEATURE_VERSION,
        windows=cfg.features.windows,
        prior_strength=cfg.features.prior_strength,
        horizon_days=cfg.label.horizon_days,
        min_purchases=cfg.label.min_purchases,
        require_attribution=cfg.label.require_attribution,
    )


def waves(frame: pd.DataFrame) -> np.ndarray:
    """A campaign wave per row: a brand and a start time (followers of several of a wave's
    influencers share one outcome, so a wave is never split across folds)."""
    return (frame["brand_id"].astype(str) + "|" + frame["cutoff_ts"].astype(str)).to_numpy()


def fit_and_calibrate(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    spec: FeatureSpec,
    cfg: ModelConfig,
    stage: Stage = lambda _: None,
) -> tuple[LoyaltyModel, np.ndarray, dict[str, float]]:
    """The model to evaluate on test and to serve, its out-of-fold validation predictions,
    and what was chosen.

    1. Early stopping on valid picks the number of trees (fitted on train).
    2. Out-of-fold predictions on train+valid (folds by campaign wave, that many trees) fit
       the calibrator and the audience dispersion: a level learnt from many campaigns over
       the whole history, not from the few campaigns of the validation period.
    3. The served model is refitted on train+valid (trees scaled to the rows), so it has
       seen the most recent campaigns, and carries that calibrator.
    """
    seconds: dict[str, float] = {}  # LightGBM's own work: the three fits (and fold predictions)
    stage(f"fitting LightGBM on {len(train):,} rows, early stopping on {len(valid):,}")
    with timed(seconds, "early_stopping_fit_seconds"):
        first = fit(train, valid, spec, cfg)
    trees = int(first.booster.best_iteration or first.booster.num_trees())
    both = pd.concat([train, valid], ignore_index=True)
    y = both["label"].to_numpy()
    stage(f"cross-fitting {cfg.calibration_folds} folds of {trees} trees for the calibration")
    folds_done = 0

    def fold_done() -> None:
        nonlocal folds_done
        folds_done += 1
        stage(f"cross-fitting: {folds_done} of {cfg.calibration_folds} folds done")

    with timed(seconds, "cross_fit_seconds"):
        oof = cross_fit(both, spec, cfg, trees, waves(both), cfg.calibration_folds, fold_done)
    stage("calibrating")
    calibrator, scores = fit_calibrator(y, oof, seed=cfg.seed)
    p_oof = calibrator.apply(oof)
    disp = audience_dispersion(y, p_oof, both["campaign_id"].to_numpy())
    spread = audience_spread(p_oof, both["campaign_id"].to_numpy(), tier_names(both).to_numpy())
    calibrator = replace(calibrator, audience_dispersion=disp, audience_spread=spread)
    final_trees = max(1, round(trees * len(both) / max(len(train), 1)))
    stage(f"refitting on train and valid ({len(both):,} rows, {final_trees} trees)")
    with timed(seconds, "refit_seconds"):
        model = replace(fit_trees(both, spec, cfg, final_trees), calibrator=calibrator)
    info = {
        **seconds,
        "best_iteration": float(trees),
        "final_trees": float(final_trees),
        "audience_dispersion": disp,
        **{f"calibration_oof_log_loss_{m}": v for m, v in scores.items()},
    }
    return model, p_oof[len(train) :], info


def _rows_for(
    model: LoyaltyModel, rows: pd.DataFrame, con: duckdb.DuckDBPyConnection, cfg: Config
) -> pd.DataFrame:
    """`rows` (labelled spine rows with our features) with the features `model` expects:
    reused when its spec matches ours, rebuilt with its own feature config otherwise."""
    spec = model.spec
    same = (
        set(spec.names) <= set(rows.columns)
        and tuple(spec.windows) == tuple(cfg.features.windows)
        and spec.prior_strength == cfg.features.prior_strength
        and (spec.horizon_days, spec.min_purchases, spec.require_attribution)
        == (cfg.label.horizon_days, cfg.label.min_purchases, cfg.label.require_attribution)
    )
    if same:
        return rows
    import ibis

    tables = engines.ibis_tables(con, ["events", "follows", "influencers", "brands", "campaigns"])
    keys = ["campaign_id", *features.SPINE_KEYS, "label"]
    spine_rows = ibis.memtable(rows[keys])
    fcfg = FeatureConfig(windows=spec.windows, prior_strength=spec.prior_strength)
    lcfg = LabelConfig(
        horizon_days=spec.horizon_days,
        min_purchases=spec.min_purchases,
        require_attribution=spec.require_attribution,
    )
    out = features.collect_features(spine_rows, tables, fcfg, lcfg)
    return out.sort_values(["cutoff_ts", "campaign_id", "follower_id"]).reset_index(drop=True)
