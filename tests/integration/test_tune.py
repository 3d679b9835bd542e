"""`loyalty-model tune` end to end on the `tiny` world: the study's runs in MLflow, the best
config that train loads, the test campaigns never used, and bad input refused in one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from loyalty_model import engines, io, model, training, tuning
from loyalty_model.cli import app
from loyalty_model.config import load_config
from loyalty_model.errors import DataError

runner = CliRunner()

# a quick study: few trees, 2 folds, one LightGBM thread; what is tested is the study's
# plumbing, not the model
QUICK = (
    *("--set", "model.n_estimators=60", "--set", "model.calibration_folds=2"),
    *("--set", "model.threads=1", "--set", "evaluation.truth_max_followers=0"),
)


def _latest_cutoffs(mp: pytest.MonkeyPatch) -> list[pd.Timestamp]:
    """The latest cutoff_ts of every frame a trial fits on or scores, as the study runs."""
    seen: list[pd.Timestamp] = []
    fit, fit_trees, predict_raw = model.fit, model.fit_trees, model.LoyaltyModel.predict_raw

    def fitting(train, valid, spec, cfg):
        seen.extend([train["cutoff_ts"].max(), valid["cutoff_ts"].max()])
        return fit(train, valid, spec, cfg)

    def fitting_trees(frame, spec, cfg, trees):
        seen.append(frame["cutoff_ts"].max())
        return fit_trees(frame, spec, cfg, trees)

    def scoring(self, frame):
        seen.append(frame["cutoff_ts"].max())
        return predict_raw(self, frame)

    mp.setattr(model, "fit", fitting)
    mp.setattr(model, "fit_trees", fitting_trees)
    mp.setattr(model.LoyaltyModel, "predict_raw", scoring)
    return seen


def test_tune_logs_a_study_and_writes_a_config_train_loads(
    tiny_world, store, tmp_path, monkeypatch
):
    out = tmp_path / "tuned.yaml"
    args = ["tune", "--data", str(tiny_world), "--trials", "3", "--seed", "5", "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        seen = _latest_cutoffs(mp)
        result = runner.invoke(app, [*args, *QUICK])
    assert result.exit_code == 0, result.output

    # one progress line per trial (stderr: not a terminal here)
    trials = [line.split("] ", 1)[1] for line in result.output.splitlines() if "] trial " in line]
    assert len(trials) == 3, result.output
    assert trials[0].startswith("trial 0 (1 of 3; the config's settings): oof_log_loss 0.")
    assert trials[2].startswith("trial 2 (3 of 3): oof_log_loss 0.") and "; best 0." in trials[2]

    # the test campaigns: no trial fitted on or scored a row of them
    cfg = load_config(out)
    with engines.duckdb_session(cfg.duckdb) as con:  # the feature cache: the study's frame
        frame, _, _ = training.training_features(con, cfg, io.prepare_tables(con, tiny_world))
    parts, (valid_from, test_from) = training.split(frame, cfg)
    assert len(parts["test"]) > 0 and len(seen) >= 3 * 4  # an early stopping fit, 2 folds
    assert valid_from <= max(seen) < test_from  # valid rows are used, test rows never

    # MLflow: a parent run of kind tune, and a nested run per trial
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("loyalty-model").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("run_kind") == "tune"]
    assert parent.info.status == "FINISHED" and parent.info.run_id in result.output
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and len(runs) == 4
    by_number = {int(r.data.tags["trial_number"]): r for r in children}
    assert sorted(by_number) == [0, 1, 2]
    names = {d.name for d in tuning.SEARCH_SPACE}
    for r in children:
        assert r.data.tags["run_kind"] == "tune_trial" and r.data.tags["trial_state"] == "complete"
        assert set(r.data.params) == names
        assert r.data.metrics["seconds"] > 0 and 0 < r.data.metrics["oof_log_loss"] < 1
        assert 0 < r.data.metrics["oof_pr_auc"] < 1
    defaults = tuning.settings_of(load_config(None).model)
    assert by_number[0].data.params == {k: str(v) for k, v in defaults.items()}
    values = {n: r.data.metrics["oof_log_loss"] for n, r in by_number.items()}
    best = min(values, key=lambda n: (values[n], n))
    m = parent.data.metrics
    assert (m["trials_complete"], m["trials_pruned"]) == (3, 0)
    assert m["best_oof_log_loss"] == pytest.approx(values[best])
    assert m["config_oof_log_loss"] == pytest.approx(values[0])
    assert parent.data.tags["best_trial"] == str(best)
    assert parent.data.params["tune.seed"] == "5"

    # the best config: the input config with the best trial's settings, logged and written
    settings = {k: str(v) for k, v in tuning.settings_of(cfg.model).items()}
    assert settings == by_number[best].data.params
    assert {f"best.{k}": v for k, v in settings.items()}.items() <= parent.data.params.items()
    assert (cfg.data.dir, cfg.model.n_estimators, cfg.model.threads) == (tiny_world, 60, 1)
    logged = Path(client.download_artifacts(parent.info.run_id, "tuned_config.yaml"))
    assert logged.read_text() == out.read_text()
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "trials.csv"))
    assert list(table["number"]) == [0, 1, 2] and set(table["state"]) == {"complete"}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/optimization_history.png", "plots/param_importances.png"}

    # the leaderboard lists training runs only: neither the study nor its trials
    listed = runner.invoke(app, ["runs"])
    assert listed.exit_code == 0, listed.output
    assert "no training runs in experiment loyalty-model" in listed.output

    # train --config reads the best config (training itself is stubbed: not tested here)
    loaded = []

    def stop(cfg, champion=None, stage=None):
        loaded.append(cfg)
        raise DataError("stopped by the test after the config was loaded")

    monkeypatch.setattr(training, "fit_and_evaluate", stop)
    trained = runner.invoke(app, ["train", "--config", str(out)])
    assert trained.exit_code == 2 and "stopped by the test" in trained.output, trained.output
    assert loaded == [cfg]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "trials must be a whole number of at least 1, got 0"),
        (["--timeout", "0"], "timeout must be a positive number of seconds, got 0.0"),
        (["--set", "model.num_leaf=8"], "model.num_leaf: unknown key (did you mean 'num_leaves'?)"),
        (["--set", "model.learning_rate=-1"], "model.learning_rate: Input should be greater"),
        (["--out", "no/such/folder/tuned.yaml"], "cannot write no/such/folder/tuned.yaml"),
        (["--data", "missing"], "data directory not found: missing"),
        (["--set", "model.reg_lambda=0"], "model.reg_lambda=0.0 (tune searches float 0.001 to"),
    ],
)
def test_tune_refuses_bad_input_in_one_line(tiny_world, store, tmp_path, args, message):
    data = [] if "--data" in args else ["--data", str(tiny_world)]
    result = runner.invoke(app, ["tune", *data, *args])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was opened
    assert not (tmp_path / "tuned.yaml").exists()
