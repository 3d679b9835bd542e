"""The Python API end to end on `tiny`: train, promote, predict without a shell."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import loyalty_model as lm


def test_train_returns_the_registered_run(tiny_trained, tiny_config):
    r = tiny_trained
    assert r.model_version == "1" and r.aliases == ("challenger", "champion")
    assert r.model_uri == f"models:/{tiny_config.tracking.model_name}/1"
    assert r.champion_compared is None
    assert 0.5 < r.metrics["test_roc_auc"] <= 1 and r.metrics["test_rows"] > 0
    assert {"model_card.md", "baselines.csv", "model"} <= set(r.artifacts)
    assert r.outcome.model.spec.names  # the fitted model, for a notebook


def test_promote_the_champion_is_a_no_op(tiny_trained, tiny_config):
    decision = lm.promote(tiny_config, version=tiny_trained.model_version)
    assert decision.already_champion and decision.champion_after == tiny_trained.model_version


def test_predict_returns_what_it_wrote(tiny_trained, tiny_world, tiny_config, tmp_path):
    meta = json.loads((tiny_world / "simulation.json").read_text())
    scenario = meta["scoring_scenarios"][0]
    calls = []
    result = lm.predict(
        tiny_world,
        scenario["brand_id"],
        tmp_path / "out",
        as_of=scenario["as_of"],
        model=tiny_trained.model_uri,
        config=tiny_config,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in result.files.values()
    )
    followers = pd.read_parquet(result.files["follower_scores"])
    assert len(followers) == result.rows["follower_scores"] == calls[-1][0] == calls[-1][1]
    written = json.loads(result.files["manifest"].read_text())
    assert written == json.loads(json.dumps(dict(result.manifest), default=str))
    assert written["model"]["version"] == tiny_trained.model_version
    pd.testing.assert_frame_equal(
        pd.read_parquet(result.files["audience_scores"]), result.audiences, check_dtype=False
    )
    assert result.truth is not None and -1 <= result.truth["spearman_cost"] <= 1
    # where the time went: every stage, in the order they ran, adding up to at most the whole
    stages = list(result.stage_seconds)
    assert stages[:4] == ["read and validate", "load model", "count followers", "features"]
    assert {"model", "write", "audience intervals", "truth check"} <= set(stages)
    assert all(v >= 0 for v in result.stage_seconds.values())
    assert 0 < sum(result.stage_seconds.values()) <= result.seconds
    assert result.model_seconds == result.stage_seconds["model"] > 0


def test_predict_uses_the_configs_registry(tiny_trained, tiny_world, tmp_path):
    """Without the config, the default store (here: an empty one) has no such model."""
    empty = lm.load_config(None, [f"tracking.uri=sqlite:///{tmp_path / 'empty.db'}"])
    with pytest.raises(lm.ModelError, match="cannot load model"):
        lm.predict(tiny_world, "b0001", tmp_path / "out", config=empty)
    assert not (tmp_path / "out").exists()


def test_the_truth_check_scores_a_sample_of_whole_audiences(tiny_trained, tiny_world, tiny_config):
    """Above evaluation.truth_max_followers a scenario is scored on a reproducible sample of
    whole audiences, each scored exactly as in the full check; the model card says so."""
    from dataclasses import replace

    from loyalty_model import engines, io
    from loyalty_model.card import model_card
    from loyalty_model.training import audiences_against_scenarios

    full = tiny_trained.outcome.truth
    assert (full.scenarios.influencers_scored == full.scenarios.influencers_in_scenario).all()
    truth = io.read_truth_audiences(tiny_world)
    cap = int(truth.groupby("scenario_id").followers_in_data.sum().min() // 3)
    with engines.duckdb_session(tiny_config.duckdb) as con:
        io.register_tables(con, tiny_world)
        check = audiences_against_scenarios(con, tiny_trained.outcome.model, truth, cap)
    sc = check.scenarios
    assert (sc.followers_scored <= cap).all() and (sc.influencers_scored >= 1).all()
    assert (sc.influencers_scored < sc.influencers_in_scenario).all()
    for whole, part in zip(full.audiences, check.audiences, strict=True):
        assert len(part) == len(set(part.influencer_id)) > 0
        same = whole.set_index("influencer_id").loc[part.influencer_id]
        pd.testing.assert_series_equal(
            part.set_index("influencer_id").expected_loyal, same.expected_loyal
        )
    metrics = check.metrics()
    assert metrics["truth_followers_scored"] == sc.followers_scored.sum() <= 3 * cap
    card = model_card(tiny_config, replace(tiny_trained.outcome, truth=check))
    assert "a reproducible sample of whole audiences" in card
    assert "a reproducible sample" not in model_card(tiny_config, tiny_trained.outcome)


def test_a_model_reading_features_this_package_does_not_build_is_refused(
    tiny_trained, tiny_world, tiny_config
):
    import copy
    from dataclasses import replace

    from loyalty_model import engines, io, scoring
    from loyalty_model.errors import ModelError

    model = copy.copy(tiny_trained.outcome.model)
    model.spec = replace(model.spec, names=(*model.spec.names, "fi_gone_7d"))
    with engines.duckdb_session(tiny_config.duckdb) as con:
        tables = engines.ibis_tables(con, list(io.register_tables(con, tiny_world)))
        with pytest.raises(ModelError) as info:
            next(
                scoring.feature_batches(
                    con, tables, "b0001", pd.Timestamp("2024-06-01", tz="UTC"), None, model, 1000
                )
            )
    assert str(info.value).startswith(
        "the model reads 1 feature(s) this package does not build, e.g. fi_gone_7d"
    )


def test_scoring_unpickles_nothing_and_the_logged_model_holds_no_pickle(
    tiny_trained, tiny_world, tiny_config, tmp_path, monkeypatch
):
    """Anyone who can write to the artifact store must not be able to run code in the batch
    job: predict reads the model's native files only, and the model is logged as code."""
    import pickle

    import cloudpickle
    from mlflow import MlflowClient

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was read while scoring")

    for module in (pickle, cloudpickle):
        monkeypatch.setattr(module, "load", refuse)
        monkeypatch.setattr(module, "loads", refuse)
    # nor does it run the code logged with the model (models from code): only native files
    import mlflow.pyfunc

    monkeypatch.setattr(mlflow.pyfunc, "load_model", refuse)
    result = lm.predict(
        tiny_world, "b0001", tmp_path / "o", model=tiny_trained.model_uri, config=tiny_config
    )
    assert result.rows["follower_scores"] > 0
    assert result.manifest["model"]["run_id"] == tiny_trained.run_id
    monkeypatch.undo()
    client = MlflowClient(tracking_uri=tiny_config.tracking.uri)

    def files(path: str) -> list[str]:
        out = []
        for a in client.list_artifacts(tiny_trained.run_id, path):
            out += files(a.path) if a.is_dir else [a.path]
        return out

    logged = files("model")
    assert "model/MLmodel" in logged and any(f.endswith("booster.txt") for f in logged)
    assert not [f for f in logged if f.endswith((".pkl", ".pickle", ".joblib"))], logged
    # and MLflow itself still loads it (running the logged code, not unpickling)
    pyfunc = lm_tracking_load(tiny_trained.model_uri, tiny_config)
    frame = tiny_trained.outcome.frames["test"].head(5)[list(tiny_trained.outcome.model.spec.names)]
    ints = [c for c in frame.columns if pd.api.types.is_integer_dtype(frame[c])]
    frame = frame.astype(dict.fromkeys(ints, "float64"))  # the signature: counts as doubles
    p = pyfunc.predict(frame)["p_loyal"].to_numpy()
    assert np.allclose(p, tiny_trained.outcome.model.predict_proba(frame))


def lm_tracking_load(uri, cfg):
    from loyalty_model import tracking

    return tracking.load_pyfunc(uri, cfg.tracking)
