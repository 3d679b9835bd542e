"""The hyperparameter search (tuning.py) on the `tiny` world's features: what a trial fits
and scores, reproducibility, pruning, the timeout, and the config it writes."""

from __future__ import annotations

import pandas as pd
import pytest

from loyalty_model import engines, io, model, training, tuning
from loyalty_model.config import Config, ModelConfig, load_config
from loyalty_model.evaluate import binary_metrics

# quick settings: few trees, 2 folds, one LightGBM thread (the fits are tiny; a second thread
# only waits for the first on a busy machine)
QUICK = ["model.n_estimators=60", "model.calibration_folds=2", "model.threads=1"]

# settings no model does well with: a handful of heavily regularised near-stumps
HOPELESS = {
    "learning_rate": 0.01,
    "num_leaves": 4,
    "min_child_samples": 1000,
    "feature_fraction": 0.3,
    "bagging_fraction": 0.5,
    "reg_lambda": 100.0,
    "extra_trees": True,
}


@pytest.fixture(scope="module")
def cfg(tiny_world) -> Config:
    return load_config(None, [f"data.dir={tiny_world}", *QUICK])


@pytest.fixture(scope="module")
def frame(cfg) -> pd.DataFrame:
    """tiny's training frame, through train's feature cache (shared by the test session)."""
    with engines.duckdb_session(cfg.duckdb) as con:
        read = io.prepare_tables(con, cfg.data.dir, cfg.data.on_bad_rows)
        found, _, _ = training.training_features(con, cfg, read)
    return found


@pytest.fixture(scope="module")
def rows(frame, cfg) -> tuning.TuningRows:
    return tuning.tuning_rows(frame, cfg)


def test_the_search_space_is_of_model_settings_and_holds_the_defaults():
    fields = ModelConfig.model_fields
    defaults = ModelConfig()
    for d in tuning.SEARCH_SPACE:
        assert d.name in fields, d.name
        value = getattr(defaults, d.name)
        if d.kind == "bool":
            assert fields[d.name].annotation is bool
        else:
            assert d.low < d.high
            assert d.low <= value <= d.high, f"{d.name}={value} outside the space"
            # every value of the range is a valid setting
            ModelConfig(**{d.name: d.low}), ModelConfig(**{d.name: d.high})
    assert "linear_tree" not in {d.name for d in tuning.SEARCH_SPACE}  # docs/tuning.md: why


def test_tuning_rows_are_train_and_valid_only(frame, rows, cfg):
    parts, (_, test_from) = training.split(frame, cfg)
    assert len(parts["test"]) > 0  # there are test rows to leave out
    assert rows.test_from == test_from
    assert len(rows.train) + len(rows.valid) == len(frame) - len(parts["test"])
    assert rows.train["cutoff_ts"].max() < rows.valid["cutoff_ts"].min()
    assert rows.valid["cutoff_ts"].max() < test_from
    assert rows.spec == training.spec_of(parts["train"], cfg)


def test_a_trial_scores_the_out_of_fold_predictions_training_cross_fits(rows, cfg):
    """oof_score's folds are model.cross_fit's: the same predictions, so the same scores."""
    reported = []
    score = tuning.oof_score(rows, cfg.model, lambda fold, value: reported.append((fold, value)))
    both = pd.concat([rows.train, rows.valid], ignore_index=True)
    folds = tuning.fold_count(rows, cfg.model.calibration_folds)
    oof = model.cross_fit(
        both, rows.spec, cfg.model, score.trees, training.waves(both), folds=folds
    )
    expected = binary_metrics(both["label"].to_numpy(), oof)
    assert score.log_loss == pytest.approx(expected["log_loss"])
    assert score.pr_auc == pytest.approx(expected["pr_auc"])
    assert 0 < score.trees <= cfg.model.n_estimators
    assert [f for f, _ in reported] == list(range(folds))
    assert reported[-1][1] == pytest.approx(score.log_loss)  # the last fold: every row scored


def test_the_same_seed_gives_the_same_trials(rows, cfg):
    def study(seed):
        return tuning.run_study(rows, cfg.model, trials=2, seed=seed)

    a, b, c = study(3), study(3), study(4)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]
    assert a.best.number == b.best.number
    # trial 0 is the config's own settings, whatever the seed; the sampled ones differ
    assert a.trials[0].params == c.trials[0].params == tuning.settings_of(cfg.model)
    assert a.trials[0].value == c.trials[0].value
    assert a.trials[1].params != c.trials[1].params
    assert all(t.state == "complete" for t in a.trials)


def test_a_hopeless_trial_is_pruned_and_recorded_as_such(rows, cfg):
    """Pruned after the second of 3 folds (the first alone is too noisy to judge by); a trial
    that has scored its last fold is complete, however poor (the second study)."""
    seen = []
    three = cfg.model.model_copy(update={"calibration_folds": 3})
    study = tuning.run_study(
        rows, three, trials=2, seed=1, startup_trials=1, on_trial=seen.append, enqueue=[HOPELESS]
    )
    first, hopeless = study.trials
    assert hopeless.params == HOPELESS
    assert (first.state, hopeless.state) == ("complete", "pruned")
    assert hopeless.value is None and len(hopeless.folds) == 2  # pruned at the second fold
    assert hopeless.folds[1] > first.folds[1]  # log loss: lower is better
    assert study.best is first and study.count("pruned") == 1
    assert [t.number for t in seen] == [0, 1]  # told as each trial ended
    table = study.table()
    assert list(table["state"]) == ["complete", "pruned"]
    assert table[tuning.METRIC].isna().tolist() == [False, True]
    line = tuning.trial_line(hopeless, 2, study.folds)
    assert line.startswith("trial 1 (2 of 2): pruned after fold 2 of 3")
    assert line.endswith(f"best {first.value:.5f} (trial 0)")
    history = tuning.history_figure(study)
    ax = history.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for t in history.legends[0].get_texts()]
    assert "pruned trial (1): stopped after a fold, no value" in labels
    assert tuning.study_figures(study).keys() == {"plots/optimization_history.png"}  # too few
    two = tuning.run_study(
        rows, cfg.model, trials=2, seed=1, startup_trials=1, enqueue=[HOPELESS]
    )  # 2 folds: the second is the last
    assert [t.state for t in two.trials] == ["complete", "complete"]
    assert two.trials[1].value > two.trials[0].value


def test_no_trial_starts_after_the_timeout(rows, cfg):
    study = tuning.run_study(rows, cfg.model, trials=50, seed=1, timeout=0.01)
    assert len(study.trials) == 1  # the first runs; none starts after it


def test_the_tuned_config_replaces_only_the_searched_settings(tmp_path):
    cfg = load_config(None, ["label.horizon_days=60", "model.n_estimators=123"])
    tuned = tuning.tuned_config(cfg, HOPELESS)
    assert tuning.settings_of(tuned.model) == HOPELESS
    assert tuned.model.n_estimators == 123 and tuned.label == cfg.label
    assert tuned.model_dump(exclude={"model"}) == cfg.model_dump(exclude={"model"})
    path = tmp_path / "tuned.yaml"
    path.write_text(tuning.config_yaml(tuned, ["a comment", "another"]))
    assert path.read_text().startswith("# a comment\n# another\n")
    assert load_config(path) == tuned
