"""train's feature cache end to end on the tiny world: a second train with another model
setting reads the features the first built; a changed input (a copy of the world), a damaged
entry or --no-cache builds them."""

from __future__ import annotations

import logging
import os
import shutil
import time

import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

import loyalty_model as lm
from loyalty_model import cache, engines, io, training
from loyalty_model.cli import app

runner = CliRunner()
# settings that make each run quick; none of them is part of the cache key
QUICK = [
    "evaluation.truth_max_followers=0",
    "model.n_estimators=60",
    "model.calibration_folds=2",
]


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A tracking store of its own, and the working directory (where the feature cache is by
    default) in the temp folder."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(cache.ENV_CACHE_DIR, raising=False)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture
def world(tiny_world, tmp_path):
    """A copy of the tiny world that the test may change."""
    return shutil.copytree(tiny_world, tmp_path / "data")


def whole(result: lm.TrainResult) -> pd.DataFrame:
    frames = result.outcome.frames
    return pd.concat([frames["train"], frames["valid"], frames["test"]], ignore_index=True)


def test_a_second_train_with_another_model_setting_reads_the_features(world, store, tmp_path):
    first = lm.train(None, world, QUICK)
    stages = []
    second = lm.train(None, world, [*QUICK, "model.num_leaves=15"], stage=stages.append)
    client = MlflowClient(tracking_uri=store)
    tags = [client.get_run(r.run_id).data.tags for r in (first, second)]
    assert [t["feature_cache"] for t in tags] == ["miss", "hit"]
    key = tags[0]["feature_cache_key"]
    assert tags[1]["feature_cache_key"] == key and tags[1]["feature_cache_built_on"] == "duckdb"
    assert (tmp_path / ".loyalty-cache" / "features" / key / "frame.parquet").is_file()
    assert client.get_run(second.run_id).data.params["model.num_leaves"] == "15"
    # the same frame (values, types, order), far faster
    pd.testing.assert_frame_equal(whole(second), whole(first))
    built, read = first.metrics["feature_seconds"], second.metrics["feature_seconds"]
    assert read < 0.2 * built, (read, built)
    assert second.metrics["feature_cache_seconds"] <= read
    hit = [s for s in stages if s.startswith("feature cache: hit")]
    assert hit and key in hit[0], stages
    # what the spine said is cached too
    for k in ("campaigns_excluded_open_window", "train_campaigns", "test_rows", "events"):
        assert second.metrics[k] == first.metrics[k], k
    assert second.outcome.window == first.outcome.window


def features(cfg: lm.Config) -> tuple[pd.DataFrame, cache.CacheUse]:
    with engines.duckdb_session(cfg.duckdb) as con:
        read = io.prepare_tables(con, cfg.data.dir, cfg.data.on_bad_rows)
        frame, _, use = training.training_features(con, cfg, read)
    return frame, use


def test_a_touched_input_hits_a_changed_one_misses_and_a_damaged_entry_is_rebuilt(
    world, tmp_path, caplog, monkeypatch
):
    monkeypatch.delenv(cache.ENV_CACHE_DIR, raising=False)  # this test's cache, not the run's
    cfg = lm.load_config(None, [f"data.dir={world}", f"cache.dir={tmp_path / 'cache'}"])
    built, use = features(cfg)
    assert use.state == "miss" and use.entry == tmp_path / "cache" / use.key
    later = time.time() + 60
    os.utime(world / "follows.parquet", (later, later))  # touched, the same bytes
    again, hit = features(cfg)
    assert (hit.state, hit.key) == ("hit", use.key)
    pd.testing.assert_frame_equal(again, built)
    # a damaged entry: a warning and a miss, never a crash; rebuilt and stored again
    (use.entry / "frame.parquet").write_bytes(b"\0" * 100)
    with caplog.at_level(logging.WARNING, logger="loyalty_model.cache"):
        rebuilt, miss = features(cfg)
    assert (miss.state, miss.key) == ("miss", use.key) and "unusable" in caplog.text
    pd.testing.assert_frame_equal(rebuilt, built)
    assert features(cfg)[1].state == "hit"
    # a changed input file: another key
    follows = pd.read_parquet(world / "follows.parquet")
    follows.iloc[1:].to_parquet(world / "follows.parquet")
    changed = features(cfg)[1]
    assert changed.state == "miss" and changed.key != use.key


def test_no_cache_neither_reads_nor_writes(world, store, tmp_path):
    args = ["train", "--data", str(world), "--no-cache"]
    for setting in QUICK:
        args += ["--set", setting]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "feature cache: off" in result.output
    assert not (tmp_path / ".loyalty-cache").exists()
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(client.get_model_version("audience-loyalty", "1").run_id)
    assert run.data.tags["feature_cache"] == "off" and "feature_cache_key" not in run.data.tags
    assert run.data.params["cache.enabled"] == "False"
    assert run.data.metrics["feature_seconds"] > 0
