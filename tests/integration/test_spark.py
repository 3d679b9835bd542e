"""The same job on Spark: features, labels and prediction files equal the DuckDB engine's on
the `tiny` world, and Spark that cannot start is one line (exit 2).

One Spark (local[2]) serves the whole test run (conftest.spark_session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import loyalty_model as lm
from loyalty_model import engines, training
from loyalty_model.cli import app
from loyalty_model.features import SPINE_KEYS

pytestmark = pytest.mark.spark
runner = CliRunner()
CLI = Path(sys.executable).parent / "loyalty-model"


def assert_same_frame(spark: pd.DataFrame, duck: pd.DataFrame, keys: list[str]) -> None:
    """Equal rows, sorted by `keys`: the same columns, nulls in the same places, numbers
    within 1e-9 (types normalised: an int8 on one engine may be an int32 on the other, an
    integer column with nulls a float), everything else exactly."""
    assert list(spark.columns) == list(duck.columns)
    s = spark.sort_values(keys).reset_index(drop=True)
    d = duck.sort_values(keys).reset_index(drop=True)
    assert len(s) == len(d) > 0
    for c in d.columns:
        a, b = s[c], d[c]
        assert (a.isna() == b.isna()).all(), f"{c}: nulls differ"
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            x = a.to_numpy(dtype="float64", na_value=np.nan)
            y = b.to_numpy(dtype="float64", na_value=np.nan)
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=c)
        else:
            assert a.astype(object).where(a.notna()).equals(b.astype(object).where(b.notna())), c


def test_spark_reads_each_form_of_table_as_duckdb_does(tiny_world, tmp_path, spark_session):
    """A parquet file, a folder of parquet files and a csv file: the same typed rows on both
    engines (naive csv timestamps read as UTC)."""
    from loyalty_model import io, spark
    from loyalty_model.contract import TABLES

    data = tmp_path / "data"
    (data / "events").mkdir(parents=True)
    events = pd.read_parquet(tiny_world / "events.parquet")
    half = len(events) // 2
    events.iloc[:half].to_parquet(data / "events" / "part-0.parquet")
    events.iloc[half:].to_parquet(data / "events" / "part-1.parquet")
    follows = pd.read_parquet(tiny_world / "follows.parquet")
    for c in ("followed_at", "unfollowed_at"):
        follows[c] = follows[c].dt.tz_convert(None)  # naive in the file: UTC by contract
    follows.to_csv(data / "follows.csv", index=False)
    for name in ("influencers", "brands", "campaigns"):
        (data / f"{name}.parquet").symlink_to(tiny_world / f"{name}.parquet")
    with engines.duckdb_session(lm.load_config(None).duckdb) as con:
        io.register_tables(con, data)
        duck = {name: con.execute(f"SELECT * FROM {name}").df() for name in TABLES}
        types = {n: t.schema() for n, t in engines.ibis_tables(con, TABLES).items()}
    with engines.spark_session(lm.load_config(None).spark) as session:
        tables = spark.spark_tables(session, data)
        on_spark = {name: tables[name].to_pandas() for name in TABLES}
    for name in TABLES:
        assert tables[name].schema() == types[name], name
        assert_same_frame(on_spark[name], duck[name], list(duck[name].columns))


def test_features_and_labels_on_spark_equal_duckdb(tiny_world, spark_session):
    """On a sampled spine (both samplers, which must keep the same followers on both engines:
    MD5, not each engine's own hash) of the tiny world's 14,769 training rows."""
    sampled = ["data.sample_fraction=0.7", "data.max_training_rows=6000"]
    cfg = lm.load_config(None, [f"data.dir={tiny_world}", *sampled])
    on_spark = cfg.model_copy(update={"data": cfg.data.model_copy(update={"engine": "spark"})})
    with engines.duckdb_session(cfg.duckdb) as con:
        duck, duck_spine = training.build_training_frame(con, cfg)
        spark, spark_spine = training.build_training_frame(con, on_spark)
    assert (spark_spine.campaigns_used, spark_spine.campaigns_excluded) == (
        duck_spine.campaigns_used,
        duck_spine.campaigns_excluded,
    )
    assert str(spark["cutoff_ts"].dtype) == str(duck["cutoff_ts"].dtype) == "datetime64[us, UTC]"
    assert duck["label"].sum() > 0 and duck.shape[1] > 60  # something to compare
    assert duck_spine.rows_before_cap > 6000 >= len(duck) - duck["campaign_id"].nunique()
    assert_same_frame(spark, duck, ["campaign_id", *SPINE_KEYS])


@pytest.fixture(scope="module")
def predicted(tiny_trained, tiny_config, tiny_world, spark_session, tmp_path_factory):
    """One request scored by both engines: DuckDB through the API, Spark through the CLI."""
    root = tmp_path_factory.mktemp("engines")
    duck = lm.predict(tiny_world, "b0001", root / "duckdb", config=tiny_config)
    args = ["predict", "--data", str(tiny_world), "--brand", "b0001", "--out", str(root / "spark")]
    args += ["--engine", "spark", "--set", f"tracking.uri={tiny_config.tracking.uri}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return duck.out, root / "spark", result.output


def test_predict_on_spark_writes_the_follower_scores_duckdb_writes(predicted):
    duck, spark, output = predicted
    assert sorted(p.name for p in spark.iterdir()) == [
        "audience_scores.parquet",
        "follower_scores",
        "manifest.json",
    ]
    parts = sorted(p.name for p in (spark / "follower_scores").iterdir())
    assert parts and all(p.startswith("part-") and p.endswith(".parquet") for p in parts), parts
    s = pd.read_parquet(spark / "follower_scores")
    d = pd.read_parquet(duck / "follower_scores.parquet")
    assert s.dtypes.to_dict() == d.dtypes.to_dict()
    # the same rows in the same order (influencer, follower) across the part files
    pd.testing.assert_frame_equal(s.drop(columns="p_loyal"), d.drop(columns="p_loyal"))
    np.testing.assert_allclose(s.p_loyal, d.p_loyal, rtol=1e-9, atol=1e-9)
    assert d.p_loyal.nunique() > 10
    assert f"{len(s):,} followers scored" in output


def test_predict_on_spark_writes_the_audiences_and_manifest_duckdb_writes(predicted):
    duck, spark, _ = predicted
    pd.testing.assert_frame_equal(
        pd.read_parquet(spark / "audience_scores.parquet"),
        pd.read_parquet(duck / "audience_scores.parquet"),
        rtol=1e-9,
        atol=1e-9,
    )
    ms = json.loads((spark / "manifest.json").read_text())
    md = json.loads((duck / "manifest.json").read_text())
    assert (ms["engine"], md["engine"]) == ("spark", "duckdb")
    assert sorted(ms) == sorted(md)
    differ = sorted(k for k in md if ms[k] != md[k])
    # drift and explanations are counted where the rows are scored in the driver's process:
    # not on Spark
    assert differ == ["created_at", "drift", "engine", "rows_written"] and ms["drift"] is None
    assert md["rows_written"] == {**ms["rows_written"], "audience_explanations": 72}


def test_an_unreachable_master_is_one_line_and_writes_nothing(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv(engines.ENV_SPARK_MASTER, "spark://127.0.0.1:1")
    out = tmp_path / "out"
    args = ["predict", "--data", str(tiny_world), "--brand", "b0001", "--out", str(out)]
    result = runner.invoke(app, [*args, "--engine", "spark"])
    assert result.exit_code == 2, result.output
    assert "spark.master spark://127.0.0.1:1: cannot reach 127.0.0.1:1" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_another_master_than_the_running_one_is_refused(spark_session, monkeypatch):
    monkeypatch.delenv(engines.ENV_SPARK_MASTER)  # the test session's local[2] would win
    cfg = lm.load_config(None, ["spark.master=local[1]"]).spark
    refused = pytest.raises(lm.ConfigError, match=r"this process already runs Spark on local\[2\]")
    with refused, engines.spark_session(cfg):
        pass


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_without_java_train_and_predict_say_so_in_one_line(tiny_world, tmp_path):
    """In a process whose PATH holds no java and no JAVA_HOME is set."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"} | {"PATH": str(empty)}
    for cmd in (["train"], ["predict", "--brand", "b0001", "--out", str(tmp_path / "o")]):
        done = _cli([*cmd, "--data", str(tiny_world), "--engine", "spark"], env, tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            "error: the spark engine needs Java 17: no java on PATH and JAVA_HOME is not set; "
            "install a JDK (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    assert not (tmp_path / "o").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_java_that_does_not_start_is_one_line(tiny_world, tmp_path):
    """JAVA_HOME names a java that exits at once: Spark's launcher fails, and so does the
    command, in one line, before anything is trained or written."""
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\necho 'not a JVM' >&2\nexit 1\n")
    java.chmod(0o755)
    env = os.environ | {"JAVA_HOME": str(tmp_path / "jdk"), "LOYALTY_SPARK_MASTER": "local[1]"}
    # --no-cache: features cached by an earlier train would spare it starting Spark at all
    args = ["train", "--data", str(tiny_world), "--engine", "spark", "--no-cache"]
    done = _cli([*args, "--set", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"], env, tmp_path)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot start Spark (spark.master local[1]): "), done.stderr
    assert "Traceback" not in done.stderr
