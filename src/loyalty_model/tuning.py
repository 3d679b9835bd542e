"""Hyperparameter search: Optuna's TPE sampler over the LightGBM settings that matter, each
trial scored by the out-of-fold log loss of the train and valid campaigns (never test).

Tables in, a study out; no paths, no tracking (api.tune writes the best config, tracking.py
logs the study). A trial is fitted as training fits (training.fit_and_calibrate): early
stopping on valid picks the number of trees, then the cross-fit folds by campaign wave over
train+valid give every row a prediction from a model that did not see its wave. Optuna is
imported inside the functions that use it: nothing heavy at import time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

from loyalty_model import model, training
from loyalty_model.config import Config, ModelConfig
from loyalty_model.errors import ConfigError, DataError
from loyalty_model.features import FeatureSpec

# what a trial's value is (minimised): the log loss of the out-of-fold predictions. Not their
# PR-AUC (the gate's metric, logged beside it): on `small`, LightGBM's seed alone moves PR-AUC
# by a third of its spread over the trials, and log loss by an eighth (docs/tuning.md)
METRIC = "oof_log_loss"
METRIC_WORDS = "out-of-fold log loss (train+valid campaigns, folds by campaign wave)"
STARTUP_TRIALS = 5  # complete trials before the pruner may stop one
WARMUP_FOLDS = 1  # folds scored before a trial may be pruned (a fold alone is noisy)
IMPORTANCE_MIN_TRIALS = 3  # complete trials below which parameter importances mean nothing


@dataclass(frozen=True)
class Dimension:
    """One setting of ModelConfig the search varies, and its range."""

    name: str
    kind: Literal["float", "int", "bool"]
    low: float = 0.0
    high: float = 1.0
    log: bool = False

    def suggest(self, trial) -> float | int | bool:
        """The value of this setting in an Optuna trial (sampled, or fixed when enqueued)."""
        if self.kind == "bool":
            return bool(trial.suggest_categorical(self.name, [False, True]))
        if self.kind == "int":
            return int(trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log))
        return float(trial.suggest_float(self.name, self.low, self.high, log=self.log))

    def words(self) -> str:
        if self.kind == "bool":
            return f"{self.name}: false or true"
        scale = ", log scale" if self.log else ""
        return f"{self.name}: {self.kind} {self.low:g} to {self.high:g}{scale}"


# LightGBM's linear_tree is not searched: it has no SHAP contributions for linear trees, and
# train's SHAP summary plot and predict's audience explanations need them (docs/tuning.md)
SEARCH_SPACE: tuple[Dimension, ...] = (
    Dimension("learning_rate", "float", 0.01, 0.3, log=True),
    Dimension("num_leaves", "int", 4, 63),
    Dimension("min_child_samples", "int", 20, 1000, log=True),
    Dimension("feature_fraction", "float", 0.3, 1.0),
    Dimension("bagging_fraction", "float", 0.5, 1.0),
    Dimension("reg_lambda", "float", 1e-3, 100.0, log=True),
    Dimension("extra_trees", "bool"),
)


@dataclass(frozen=True)
class TuningRows:
    """The rows a study scores its trials on: the train and valid campaigns, never test.
    Every row starts before `test_from`, the first test campaign's start."""

    train: pd.DataFrame
    valid: pd.DataFrame
    spec: FeatureSpec
    test_from: datetime


def tuning_rows(frame: pd.DataFrame, cfg: Config) -> TuningRows:
    """Train's split of the training frame (training.split) without its test part, and the
    feature spec train would use (training.spec_of)."""
    parts, (_, test_from) = training.split(frame, cfg)
    train, valid = parts["train"], parts["valid"]
    return TuningRows(train, valid, training.spec_of(train, cfg), test_from)


@dataclass(frozen=True)
class OofScore:
    """A setting's scores on the out-of-fold predictions of train+valid (raw, before
    calibration; PR-AUC and ROC-AUC depend on the order alone)."""

    pr_auc: float
    roc_auc: float
    log_loss: float
    trees: int  # chosen by early stopping on valid


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Log loss as evaluate.binary_metrics computes it (probabilities clipped to 1e-7)."""
    from sklearn.metrics import log_loss

    return float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))


def oof_score(
    rows: TuningRows,
    settings: ModelConfig,
    report: Callable[[int, float], None] = lambda fold, value: None,
) -> OofScore:
    """Fit as training does and score the out-of-fold predictions: early stopping on valid
    picks the trees (model.fit), then each fold of train+valid by campaign wave
    (training.waves, settings.calibration_folds: the folds model.cross_fit uses) is scored by
    a model fitted without it (model.fit_trees). After each fold, `report` is told the fold's
    index and the log loss of the rows scored so far (for a pruner; it may raise to stop)."""
    from sklearn.model_selection import GroupKFold

    first = model.fit(rows.train, rows.valid, rows.spec, settings)
    trees = int(first.booster.best_iteration or first.booster.num_trees())
    both = pd.concat([rows.train, rows.valid], ignore_index=True)
    y = both["label"].to_numpy()
    groups = training.waves(both)
    folds = min(settings.calibration_folds, len(np.unique(groups)))
    if folds < 2:
        raise DataError("tuning needs at least 2 campaign waves in train and valid")
    oof = np.full(len(both), np.nan)
    splits = GroupKFold(n_splits=folds).split(both, groups=groups)  # as model.cross_fit
    for i, (fit_idx, score_idx) in enumerate(splits):
        m = model.fit_trees(both.iloc[fit_idx], rows.spec, settings, trees)
        oof[score_idx] = m.predict_raw(both.iloc[score_idx])
        seen = ~np.isnan(oof)
        report(i, _log_loss(y[seen], oof[seen]))
    from loyalty_model.evaluate import binary_metrics

    scores = binary_metrics(y, oof)
    return OofScore(scores["pr_auc"], scores["roc_auc"], _log_loss(y, oof), trees)


@dataclass(frozen=True)
class TrialResult:
    """One trial of a study, as it ended."""

    number: int  # 0 is the config's own settings
    state: Literal["complete", "pruned", "failed"]
    value: float | None  # the OOF log loss of a complete trial
    params: Mapping[str, object]  # the searched settings it tried
    seconds: float
    started: datetime
    ended: datetime
    folds: Mapping[int, float] = field(default_factory=dict)  # fold -> log loss so far
    trees: int | None = None  # chosen by early stopping
    pr_auc: float | None = None  # out of fold, as the value
    roc_auc: float | None = None
    best_number: int | None = None  # the best complete trial so far (this one included)
    best_value: float | None = None


@dataclass(frozen=True)
class StudyResult:
    """A finished study: every trial, the best, and what mattered."""

    trials: tuple[TrialResult, ...]
    best: TrialResult
    seed: int
    folds: int  # cross-fit folds per trial
    seconds: float
    importances: Mapping[str, float] | None  # fANOVA share per setting; None: too few trials

    @property
    def first(self) -> TrialResult:
        """Trial 0: the config's own settings."""
        return self.trials[0]

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    def table(self) -> pd.DataFrame:
        """One row per trial: number, state, value (log loss), PR-AUC, ROC-AUC, seconds,
        trees, the folds scored (all of them unless pruned), then the settings tried."""
        rows = [
            {
                "number": t.number,
                "state": t.state,
                METRIC: t.value,
                "oof_pr_auc": t.pr_auc,
                "oof_roc_auc": t.roc_auc,
                "seconds": round(t.seconds, 3),
                "trees": t.trees,
                "folds_scored": len(t.folds),
                **{d.name: t.params.get(d.name) for d in SEARCH_SPACE},
            }
            for t in self.trials
        ]
        return pd.DataFrame(rows)


def fold_count(rows: TuningRows, calibration_folds: int) -> int:
    """The cross-fit folds of a trial: calibration_folds, or fewer when train and valid hold
    fewer campaign waves."""
    waves = np.concatenate([training.waves(rows.train), training.waves(rows.valid)])
    return min(calibration_folds, len(np.unique(waves)))


def check_base(cfg: ModelConfig) -> None:
    """A ConfigError naming every searched setting of `cfg` outside SEARCH_SPACE: trial 0
    tries the config's own settings, and Optuna cannot place a value outside a dimension's
    range (a log-scale one refuses 0 outright)."""
    values = settings_of(cfg)
    outside = [
        f"model.{d.name}={values[d.name]!r} (tune searches {d.words().split(': ', 1)[1]})"
        for d in SEARCH_SPACE
        if d.kind != "bool" and not d.low <= float(values[d.name]) <= d.high
    ]
    if outside:
        raise ConfigError(
            "tune starts from the config's own settings (trial 0), and these are outside its "
            f"search space: {'; '.join(outside)}; set them within it"
        )


def settings_of(cfg: ModelConfig) -> dict[str, object]:
    """The searched settings of a model config."""
    values = cfg.model_dump()
    return {d.name: values[d.name] for d in SEARCH_SPACE}


def _trial_result(frozen, best) -> TrialResult:
    import optuna

    state = {
        optuna.trial.TrialState.COMPLETE: "complete",
        optuna.trial.TrialState.PRUNED: "pruned",
    }.get(frozen.state, "failed")
    attrs = frozen.user_attrs
    ended = frozen.datetime_complete or datetime.now()
    return TrialResult(
        number=frozen.number,
        state=state,
        value=float(frozen.value) if state == "complete" else None,
        params=dict(frozen.params),
        seconds=float(attrs.get("seconds", (ended - frozen.datetime_start).total_seconds())),
        started=frozen.datetime_start,
        ended=ended,
        folds={int(k): float(v) for k, v in frozen.intermediate_values.items()},
        trees=attrs.get("trees"),
        pr_auc=attrs.get("pr_auc"),
        roc_auc=attrs.get("roc_auc"),
        best_number=None if best is None else best.number,
        best_value=None if best is None else float(best.value),
    )


def run_study(
    rows: TuningRows,
    base: ModelConfig,
    trials: int,
    seed: int,
    timeout: float | None = None,
    startup_trials: int = STARTUP_TRIALS,
    on_trial: Callable[[TrialResult], None] = lambda t: None,
    enqueue: Sequence[Mapping[str, object]] = (),
) -> StudyResult:
    """Search SEARCH_SPACE for the settings of the lowest out-of-fold log loss on `rows`.

    Trial 0 is `base`'s own settings (enqueued), so the study says what the search gained
    over them; then `enqueue`d settings, then TPE (seeded by `seed`). The other settings of
    `base` (trees cap, early stopping, folds, seed, threads) are those of every trial. After
    `startup_trials` complete trials, a trial whose log loss after a fold is above the median
    of the earlier trials' at the same fold is pruned (after the second fold at the earliest,
    before the last: a trial that has scored every fold is complete).
    One trial at a time (LightGBM's thread settings are process-wide); no new trial starts
    after `timeout` seconds. `on_trial` is told each trial as it ends. Same rows, seed and
    trials: the same trials, settings and values."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials, n_warmup_steps=WARMUP_FOLDS
        ),
    )
    study.enqueue_trial(settings_of(base))
    for settings in enqueue:
        study.enqueue_trial(dict(settings))

    def objective(trial) -> float:
        t0 = time.perf_counter()
        settings = ModelConfig.model_validate(
            {**base.model_dump(), **{d.name: d.suggest(trial) for d in SEARCH_SPACE}}
        )

        def report(fold: int, value: float) -> None:
            trial.report(value, fold)
            # after the last fold the trial is done: its value is kept, never pruned
            if fold < folds - 1 and trial.should_prune():
                trial.set_user_attr("seconds", time.perf_counter() - t0)
                raise optuna.TrialPruned()

        score = oof_score(rows, settings, report)
        trial.set_user_attr("trees", score.trees)
        trial.set_user_attr("pr_auc", score.pr_auc)
        trial.set_user_attr("roc_auc", score.roc_auc)
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        return score.log_loss

    done: list[TrialResult] = []

    def ended(study, frozen) -> None:
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        best = min(complete, key=lambda t: (t.value, t.number)) if complete else None
        result = _trial_result(frozen, best)
        done.append(result)
        on_trial(result)

    folds = fold_count(rows, base.calibration_folds)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials, timeout=timeout, n_jobs=1, callbacks=[ended])
    seconds = time.perf_counter() - t0
    complete = [t for t in done if t.state == "complete"]
    if not complete:
        raise DataError(f"no trial of {len(done)} completed: every one was pruned or failed")
    best = min(complete, key=lambda t: (t.value, t.number))
    return StudyResult(tuple(done), best, seed, folds, seconds, param_importances(study, seed))


def param_importances(study, seed: int) -> dict[str, float] | None:
    """fANOVA importance of each searched setting over the complete trials (shares that sum
    to 1), or None with fewer than IMPORTANCE_MIN_TRIALS of them."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < IMPORTANCE_MIN_TRIALS:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError):  # e.g. every complete trial has the same value
        return None
    return {k: float(v) for k, v in found.items()}


def tuned_config(cfg: Config, params: Mapping[str, object]) -> Config:
    """`cfg` with the model section's searched settings replaced by `params`."""
    tree = cfg.model_dump(mode="json")
    tree["model"] = {**tree["model"], **dict(params)}
    return Config.model_validate(tree)


def config_yaml(cfg: Config, header: Sequence[str] = ()) -> str:
    """A full config as YAML that load_config reads back to `cfg` (comment lines first)."""
    import yaml

    comments = "".join(f"# {line}\n" for line in header)
    return comments + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def trial_line(t: TrialResult, trials: int, folds: int) -> str:
    """One line per trial for the progress log."""
    head = f"trial {t.number} ({t.number + 1} of {trials}"
    head += "; the config's settings)" if t.number == 0 else ")"
    if t.state == "complete":
        what = f"{METRIC} {t.value:.5f} (PR-AUC {t.pr_auc:.4f}, {t.seconds:.1f} s, {t.trees} trees)"
    elif t.state == "pruned":
        last = t.folds[max(t.folds)] if t.folds else float("nan")
        what = (
            f"pruned after fold {len(t.folds)} of {folds} (log loss so far {last:.5f}, "
            f"{t.seconds:.1f} s)"
        )
    else:
        what = f"failed ({t.seconds:.1f} s)"
    best = "" if t.best_number is None else f"; best {t.best_value:.5f} (trial {t.best_number})"
    return f"{head}: {what}{best}"


# -- figures (matplotlib, no pyplot: no global state, no display) -----------------------------


def history_figure(study: StudyResult):
    """Each complete trial's value by trial, the best so far, the config's own settings
    (trial 0) as a reference line, and the pruned trials as marks on the axis."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.2, 5.2), dpi=120, layout="constrained")
    ax = fig.subplots()
    complete = [t for t in study.trials if t.state == "complete"]
    pruned = [t for t in study.trials if t.state == "pruned"]
    x = np.array([t.number for t in complete])
    v = np.array([t.value for t in complete])
    ax.scatter(x, v, s=22, color="tab:blue", zorder=3, label=f"complete trial ({len(complete)})")
    order = np.argsort(x)
    best = np.minimum.accumulate(v[order])
    ax.step(x[order], best, where="post", color="tab:red", lw=1.6, label="best so far")
    first = study.first
    if first.state == "complete":
        ax.axhline(
            first.value,
            color="0.35",
            ls="--",
            lw=1.0,
            label=f"the config's settings (trial 0): {first.value:.5f}",
        )
    ax.scatter(
        [study.best.number],
        [study.best.value],
        s=90,
        facecolors="none",
        edgecolors="tab:red",
        lw=1.5,
        zorder=4,
        label=f"best: trial {study.best.number}, {study.best.value:.5f}",
    )
    if pruned:  # no value to plot: a mark in a band below the values, at the trial's number
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo - 0.12 * (hi - lo), hi)
        ax.plot(
            [t.number for t in pruned],
            [0.035] * len(pruned),
            ls="",
            marker="x",
            ms=6,
            color="tab:orange",
            transform=ax.get_xaxis_transform(),
            label=f"pruned trial ({len(pruned)}): stopped after a fold, no value",
        )
    ax.set_xlabel("trial (0: the config's own settings)")
    ax.set_ylabel("out-of-fold log loss (train+valid), lower is better")
    ax.set_xlim(-0.5, len(study.trials) - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(
        f"Optimisation history: {len(study.trials)} trials, TPE seed {study.seed}\n"
        f"{METRIC_WORDS}, {study.folds} folds",
        fontsize=10,
    )
    return fig


def importance_figure(importances: Mapping[str, float], trials: int):
    """The fANOVA importance of each searched setting, largest on top."""
    from matplotlib.figure import Figure

    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(6.8, 0.42 * len(items) + 1.8), dpi=120, layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(items))
    shares = [100 * v for _, v in items]
    ax.barh(y, shares, color="tab:blue")
    ax.set_yticks(y, [k for k, _ in items], fontsize=9)
    for yi, s in zip(y, shares, strict=True):
        ax.text(s + 0.5, yi, f"{s:.1f} %", va="center", fontsize=8)
    ax.set_xlim(0, max([*shares, 1.0]) * 1.18)
    ax.set_xlabel("share of the variance of the out-of-fold log loss explained (fANOVA, %)")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Setting importance over {trials} complete trials", fontsize=10)
    return fig


def study_figures(study: StudyResult) -> dict:
    """File name -> figure, for logging with the study."""
    figures = {"plots/optimization_history.png": history_figure(study)}
    if study.importances:
        figures["plots/param_importances.png"] = importance_figure(
            study.importances, study.count("complete")
        )
    return figures


def study_record(cfg: Config, study: StudyResult, tuned: Config, request: Mapping[str, object]):
    """What the study's parent run logs (a training.RunRecord): the config tuned and the
    request (`request`: trials asked, timeout, seed, ...) as parameters, the best settings
    (best.*), the best and the config's own value, trials per state, the trials table, the
    best config, the search space and the figures."""
    import json

    first, best = study.first, study.best
    params: dict[str, object] = {
        **cfg.flat(),
        **{f"tune.{k}": v for k, v in request.items()},
        "tune.metric": METRIC,
        "tune.folds": study.folds,
        **{f"best.{k}": v for k, v in best.params.items()},
    }
    complete = [t for t in study.trials if t.state == "complete"]
    metrics = {
        f"best_{METRIC}": best.value,
        "best_oof_pr_auc": best.pr_auc,
        "trials_complete": float(len(complete)),
        "trials_pruned": float(study.count("pruned")),
        "trials_failed": float(study.count("failed")),
        "tune_seconds": study.seconds,
        "seconds_per_trial": study.seconds / len(study.trials),
        "seconds_per_complete_trial": float(np.mean([t.seconds for t in complete])),
    }
    if first.state == "complete":
        metrics[f"config_{METRIC}"] = first.value
        metrics["config_oof_pr_auc"] = first.pr_auc
        metrics[f"{METRIC}_gain"] = first.value - best.value  # >= 0: lower is better
    if best.trees is not None:
        metrics["best_trees"] = float(best.trees)
    metrics |= {f"importance_{k}": v for k, v in (study.importances or {}).items()}
    space = {d.name: d.words() for d in SEARCH_SPACE}
    artifacts = {
        "trials.csv": study.table().to_csv(index=False),
        "tuned_config.yaml": config_yaml(tuned, best_header(study)),
        "search_space.json": json.dumps(space, indent=2) + "\n",
    }
    tags = {"best_trial": str(best.number), "tune.metric": METRIC}
    return training.RunRecord(
        params=params,
        metrics={k: float(v) for k, v in metrics.items() if v is not None and v == v},
        artifacts=artifacts,
        figures=study_figures(study),
        tags=tags,
    )


def best_header(study: StudyResult) -> list[str]:
    """The comment lines on top of a tuned config: where its model settings come from."""
    first, best = study.first, study.best
    lines = [
        f"Tuned by `loyalty-model tune`: the model settings of trial {best.number} of "
        f"{len(study.trials)} (0-{len(study.trials) - 1}, TPE seed {study.seed}),",
        f"{METRIC} {best.value:.5f}"
        + (
            f" against {first.value:.5f} for the input config's own settings (trial 0)."
            if first.state == "complete"
            else "."
        ),
        "Everything else is the input config. Train with: loyalty-model train --config FILE",
    ]
    return lines
