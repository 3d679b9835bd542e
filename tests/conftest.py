"""Shared fixtures: simulated worlds written once per test session, and a model trained on
`tiny` in a tracking store of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

import loyalty_model as lm


@pytest.fixture(scope="session", autouse=True)
def shared_feature_cache(tmp_path_factory):
    """One feature cache for the whole run (LOYALTY_CACHE_DIR, inherited by the commands the
    tests start): trains on the same world and settings read the features the first one
    built, as a data scientist's do, instead of leaving a cache in every test's folder. The
    cache's own tests use caches of their own."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LOYALTY_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The `tiny` world, seed 1. Read-only: copy it before changing anything."""
    out = tmp_path_factory.mktemp("tiny") / "data"
    lm.simulate("tiny", seed=1, out=out)
    return out


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """The `small` world (the demo's), seed 7. Read-only."""
    out = tmp_path_factory.mktemp("small") / "data"
    lm.simulate("small", seed=7, out=out)
    return out


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> lm.Config:
    """The default config with a tracking store of its own (a sqlite file in a temp folder)."""
    root = tmp_path_factory.mktemp("tiny-store")
    return lm.load_config(None, [f"tracking.uri=sqlite:///{root / 'mlflow.db'}"])


@pytest.fixture(scope="session")
def tiny_trained(tiny_world, tiny_config, monkeypatch_session) -> lm.TrainResult:
    """A model trained on `tiny` through the Python API; the first version, so the champion."""
    return lm.train(tiny_config, data_dir=tiny_world)


@pytest.fixture(scope="session")
def monkeypatch_session():
    """A session-wide MonkeyPatch: no MLFLOW_TRACKING_URI from the environment, so that the
    configs' own stores apply."""
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield mp
    mp.undo()


@pytest.fixture(scope="session")
def spark_session(monkeypatch_session):
    """One Spark (local[2], 4 shuffle partitions) for the whole test run: starting one costs
    10-20 s. LOYALTY_SPARK_MASTER=local[2] makes every library call with the spark engine
    reuse it (a call uses the running Spark of its master and leaves it running)."""
    pytest.importorskip("pyspark")
    from loyalty_model import engines

    monkeypatch_session.setenv(engines.ENV_SPARK_MASTER, "local[2]")
    monkeypatch_session.setenv(engines.ENV_SPARK_SHUFFLE_PARTITIONS, "4")
    cfg = lm.load_config(None, ["spark.driver_memory=2g", "spark.conf={spark.ui.enabled: false}"])
    with engines.spark_session(cfg.spark) as session:
        yield session
