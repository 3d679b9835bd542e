"""Cross-fitting and the train-time fit/calibrate steps, on frames the tests build."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loyalty_model.config import ModelConfig
from loyalty_model.features import FeatureSpec
from loyalty_model.model import baseline_matrix, cross_fit, fit_trees, to_matrix
from loyalty_model.training import fit_and_calibrate, waves

CFG = ModelConfig(
    learning_rate=0.3, min_child_samples=5, n_estimators=50, early_stopping_rounds=10, threads=1
)


def spec() -> FeatureSpec:
    return FeatureSpec("t", (7,), 0.0, 90, 2, False, ("x",), (), {})


def frame(seed: int = 0) -> pd.DataFrame:
    """Four campaigns told apart by x; the label depends on the campaign alone."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(4), 200)
    return pd.DataFrame(
        {
            "campaign_id": [f"c{i}" for i in g],
            "brand_id": "b1",
            "cutoff_ts": pd.to_datetime("2024-01-01", utc=True) + pd.to_timedelta(g * 100, "D"),
            "x": g.astype(float),
            "label": (rng.random(len(g)) < np.array([0.9, 0.05, 0.9, 0.05])[g]).astype(int),
        }
    )


def test_cross_fit_scores_each_campaign_with_a_model_that_never_saw_it():
    f = frame()
    in_sample = fit_trees(f, spec(), CFG, 30).predict_raw(f)
    oof = cross_fit(f, spec(), CFG, 30, waves(f), folds=4)
    first = (f["campaign_id"] == "c0").to_numpy()
    assert in_sample[first].mean() > 0.8  # memorised
    assert oof[first].mean() < 0.5  # x = 0 was never seen: it falls with x = 1 (5 % loyal)
    with pytest.raises(ValueError, match="at least 2 groups"):
        cross_fit(f[first], spec(), CFG, 30, waves(f[first]), folds=4)


def test_folds_fitted_side_by_side_give_the_same_predictions_to_the_bit():
    f = frame(3)
    f["x"] += np.random.default_rng(3).normal(size=len(f))  # something for the trees to split
    one = cross_fit(f, spec(), CFG, 30, waves(f), folds=4)
    parallel = cross_fit(f, spec(), CFG.model_copy(update={"threads": 2}), 30, waves(f), 4)
    np.testing.assert_array_equal(one, parallel)
    assert np.unique(one).size > 4  # not a constant per campaign that any order would give


def test_fit_and_calibrate_refits_on_train_and_valid():
    """Eight campaigns: the label follows x, plus a campaign effect no feature shows."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(8), 300)
    x = rng.normal(size=len(g))
    effect = np.array([-1.2, 1.0, -0.4, 1.3, 0.2, -1.0, 0.8, -0.3])[g]
    f = pd.DataFrame(
        {
            "campaign_id": [f"c{i}" for i in g],
            "brand_id": "b1",
            "cutoff_ts": pd.to_datetime("2024-01-01", utc=True) + pd.to_timedelta(g * 100, "D"),
            "x": x,
            "label": (rng.random(len(g)) < 1 / (1 + np.exp(-(-2 + x + effect)))).astype(int),
        }
    )
    train, valid = f[g < 6], f[g >= 6]
    model, valid_p, info = fit_and_calibrate(train, valid, spec(), CFG)
    assert len(valid_p) == len(valid) and ((valid_p >= 0) & (valid_p <= 1)).all()
    assert info["final_trees"] == round(info["best_iteration"] * len(f) / len(train))
    assert model.booster.num_trees() == info["final_trees"]
    # the served model is the refit on train + valid: exactly (fits are deterministic), and
    # not what the same trees fitted on train alone give
    trees, served = int(info["final_trees"]), model.predict_raw(f)
    refit = fit_trees(pd.concat([train, valid]), spec(), CFG, trees).predict_raw(f)
    np.testing.assert_array_equal(served, refit)
    assert np.abs(served - fit_trees(train, spec(), CFG, trees).predict_raw(f)).max() > 0.01
    assert info["audience_dispersion"] == model.calibrator.audience_dispersion >= 0
    # campaigns differ far more than their followers' coin flips: a large dispersion
    assert info["audience_dispersion"] > 0.1


def test_audience_spread_pools_within_audience_variance_by_tier():
    from loyalty_model.model import audience_spread

    p = np.array([0.1, 0.3, 0.0, 0.0, 0.3, 0.3, 0.5, 0.2])
    groups = np.array(["a", "a", "b", "b", "b", "b", "c", "d"])
    tiers = np.array(["nano"] * 6 + ["mega"] * 2)
    spread = audience_spread(p, groups, tiers)
    # nano: a has 0.02 over 1 df, b has 4 * 0.15^2 over 3; mega: one follower each, no spread
    assert spread == {"nano": pytest.approx((0.02 + 0.09) / 4)}


@pytest.mark.filterwarnings("error")  # e.g. pandas' deprecated Categorical of unseen values
@pytest.mark.parametrize("dtype", [object, "str", "category"])
def test_an_unseen_category_becomes_missing_and_known_ones_keep_their_code(dtype):
    vocab = ("beauty", "food", "tech")  # codes 0, 1, 2: positions in the training vocabulary
    s = FeatureSpec("t", (7,), 0.0, 90, 2, False, ("cat", "x"), ("cat",), {"cat": vocab})
    f = pd.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, 4.0, 5.0],
            "cat": pd.Series(["tech", "travel", "beauty", None, "food"], dtype=dtype),
        }
    )
    m = to_matrix(f, s)
    assert list(m.columns) == ["cat", "x"] and (m.dtypes == "float64").all()
    np.testing.assert_array_equal(m["cat"], [2.0, np.nan, 0.0, np.nan, 1.0])
    # one-hot for the linear baseline: unseen and missing rows have no category at all
    onehot = baseline_matrix(f, s)[:, 1:]
    np.testing.assert_array_equal(onehot, np.eye(3)[[2, 0, 0, 0, 1]] * [[1], [0], [1], [0], [1]])
