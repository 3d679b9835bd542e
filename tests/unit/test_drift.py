"""Feature drift (drift.py): the reference histogram of the training rows and the PSI of the
rows scored, on frames the tests build."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loyalty_model.drift import DriftCounter, FeatureReference


def frame(n: int, shift: float = 0.0, seed: int = 0, missing: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, n)
    x[rng.random(n) < missing] = np.nan
    return pd.DataFrame({"x": x, "cat": rng.integers(0, 3, n).astype(float)})


def test_the_reference_has_decile_bins_and_a_missing_bin():
    ref = FeatureReference.of(frame(10_000, missing=0.1), categorical=("cat",))
    assert len(ref.edges["x"]) == 9 and len(ref.shares["x"]) == 11
    assert ref.shares["x"][-1] == pytest.approx(0.1, abs=0.01)  # the missing values
    assert all(s == pytest.approx(0.09, abs=0.01) for s in ref.shares["x"][:-1])
    assert ref.edges["cat"] == (0.5, 1.5) and sum(ref.shares["cat"]) == pytest.approx(1.0)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    ref = FeatureReference.of(frame(20_000), categorical=("cat",))
    same = ref.psi(ref.counts(frame(20_000, seed=1)))
    assert same["x"] < 0.01 and same["cat"] < 0.01
    moved = ref.psi(ref.counts(frame(20_000, shift=1.0, seed=1)))
    assert moved["x"] > 0.25 and moved["cat"] < 0.01
    # missing values that were not missing in training are a shift too
    gone = ref.psi(ref.counts(frame(20_000, seed=1, missing=0.5)))
    assert gone["x"] > 0.25


def test_counting_in_batches_equals_counting_at_once_and_the_summary_flags_above_threshold():
    ref = FeatureReference.of(frame(5_000), categorical=("cat",))
    scored = frame(3_000, shift=1.0, seed=2)
    counter = DriftCounter(ref)
    for lo in range(0, 3_000, 700):
        counter.add(scored.iloc[lo : lo + 700])
    assert counter.rows == 3_000
    at_once = ref.counts(scored)
    for k, c in at_once.items():
        np.testing.assert_array_equal(counter.counts[k], c)
    s = counter.summary(threshold=0.25)
    assert s["flagged"] == ["x"] and s["rows_scored"] == 3_000 and s["reference_rows"] == 5_000
    assert s["psi"]["x"] == pytest.approx(ref.psi(at_once)["x"], abs=1e-6)


def test_the_reference_survives_a_round_trip_through_json():
    import json

    ref = FeatureReference.of(frame(1_000), categorical=("cat",))
    again = FeatureReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert again == ref


def test_a_feature_always_missing_in_training_has_one_bin_besides_the_missing_one():
    ref = FeatureReference.of(pd.DataFrame({"x": [np.nan] * 10}))
    assert ref.edges["x"] == () and ref.shares["x"] == (0.0, 1.0)
