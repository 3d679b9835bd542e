"""DuckDB sessions: the config's memory cap, threads and spill folder, the environment's over
them, and one-line errors for bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loyalty_model import engines
from loyalty_model.config import load_config
from loyalty_model.errors import ConfigError


def settings(con) -> tuple[str, int, str]:
    return con.execute(
        "SELECT current_setting('memory_limit'), current_setting('threads'), "
        "current_setting('temp_directory')"
    ).fetchall()[0]


def test_a_session_has_the_configs_settings_and_cleans_up(tmp_path, monkeypatch):
    for var in (engines.ENV_MEMORY_LIMIT, engines.ENV_THREADS, engines.ENV_TEMP_DIRECTORY):
        monkeypatch.delenv(var, raising=False)
    cfg = load_config(None, ["duckdb.memory_limit=1GB", "duckdb.threads=1"]).duckdb
    with engines.duckdb_session(cfg) as con:
        memory, threads, spill = settings(con)
        bar = con.execute("SELECT current_setting('enable_progress_bar')").fetchall()[0][0]
    assert (memory, threads) == ("953.6 MiB", 1)  # DuckDB reports 1GB in MiB
    assert bar is False  # DuckDB's own bar would print over our output
    assert "loyalty-spill-" in spill and not Path(spill).exists()  # removed afterwards
    mine = load_config(None, [f"duckdb.temp_directory={tmp_path}"]).duckdb
    with engines.duckdb_session(mine) as con:
        assert settings(con)[2] == str(tmp_path)
    assert tmp_path.is_dir()  # a folder the user gave is theirs: kept


def test_the_environment_wins(monkeypatch):
    monkeypatch.setenv(engines.ENV_MEMORY_LIMIT, "512MB")
    monkeypatch.setenv(engines.ENV_THREADS, "1")
    cfg = load_config(None, ["duckdb.memory_limit=2GB", "duckdb.threads=2"]).duckdb
    with engines.duckdb_session(cfg) as con:
        memory, threads, _ = settings(con)
    assert (memory, threads) == ("488.2 MiB", 1)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("LOYALTY_DUCKDB_THREADS", "zero", "LOYALTY_DUCKDB_THREADS='zero': Input should be"),
        ("LOYALTY_DUCKDB_MEMORY_LIMIT", "lots", "must be a size such as 4GB or 512MB"),
    ],
)
def test_bad_environment_values_are_one_line(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=message):
        engines.duckdb_settings(load_config(None).duckdb)


# -- Spark: settings and the checks before a JVM starts (no JVM here) -----------------------

SPARK_ENV = (
    engines.ENV_SPARK_MASTER,
    engines.ENV_SPARK_DRIVER_MEMORY,
    engines.ENV_SPARK_EXECUTOR_MEMORY,
    engines.ENV_SPARK_SHUFFLE_PARTITIONS,
)


def test_spark_settings_come_from_the_config_and_the_environment_wins(monkeypatch):
    for var in SPARK_ENV:
        monkeypatch.delenv(var, raising=False)
    cfg = load_config(None, ["spark.master=local[2]", "spark.shuffle_partitions=3"]).spark
    assert engines.spark_settings(cfg) == cfg
    monkeypatch.setenv(engines.ENV_SPARK_MASTER, "spark://10.0.0.1:7077")
    monkeypatch.setenv(engines.ENV_SPARK_DRIVER_MEMORY, "1G")
    monkeypatch.setenv(engines.ENV_SPARK_EXECUTOR_MEMORY, "8g")
    monkeypatch.setenv(engines.ENV_SPARK_SHUFFLE_PARTITIONS, "200")
    s = engines.spark_settings(cfg)
    assert (s.master, s.driver_memory, s.executor_memory, s.shuffle_partitions) == (
        "spark://10.0.0.1:7077",
        "1g",
        "8g",
        200,
    )


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("LOYALTY_SPARK_MASTER", "spark:/oops", "LOYALTY_SPARK_MASTER='spark:/oops': must be"),
        ("LOYALTY_SPARK_SHUFFLE_PARTITIONS", "0", "LOYALTY_SPARK_SHUFFLE_PARTITIONS='0'"),
        ("LOYALTY_SPARK_DRIVER_MEMORY", "lots", "must be a JVM size such as 4g or 512m"),
    ],
)
def test_bad_spark_environment_values_are_one_line(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=message) as info:
        engines.spark_settings(load_config(None).spark)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["spark.master=nonsense"], "spark.master: must be local[*], local[N], spark://HOST:PORT"),
        (["spark.executor_memory=4 GB"], "spark.executor_memory: must be a JVM size"),
        (["spark.shuffle_partitions=0"], "spark.shuffle_partitions"),
        (["spark.extra=1"], "spark.extra: unknown key"),
    ],
)
def test_bad_spark_config_is_one_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_spark_conf_values_are_the_strings_spark_reads():
    cfg = load_config(None, ["spark.conf={spark.ui.enabled: false, spark.executor.cores: 4}"])
    assert cfg.spark.conf == {"spark.ui.enabled": "false", "spark.executor.cores": "4"}


def test_an_unreachable_master_is_one_line_without_starting_spark(monkeypatch):
    pytest.importorskip("pyspark")
    monkeypatch.setenv(engines.ENV_SPARK_MASTER, "spark://127.0.0.1:1")  # nothing listens there
    with pytest.raises(ConfigError) as info:
        engines.spark_preflight(load_config(None).spark)
    assert str(info.value).startswith("spark.master spark://127.0.0.1:1: cannot reach 127.0.0.1:1")
    assert "\n" not in str(info.value)


def test_missing_java_is_one_line(monkeypatch, tmp_path):
    pytest.importorskip("pyspark")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java
    with pytest.raises(ConfigError, match="Java 17: no java on PATH and JAVA_HOME is not set"):
        engines.spark_preflight(load_config(None).spark)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=f"JAVA_HOME={tmp_path} has no bin/java"):
        engines.spark_preflight(load_config(None).spark)


def test_missing_pyspark_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'loyalty-model\[spark\]'"):
        engines.spark_preflight(load_config(None).spark)


def test_the_spark_engine_modules_import_without_pyspark():
    code = (
        "import sys; import loyalty_model.api, loyalty_model.cli, loyalty_model.engines, "
        "loyalty_model.spark, loyalty_model.training; print('pyspark' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_failing_spark_job_is_one_line():
    pytest.importorskip("pyspark")
    from pyspark.errors import PySparkException

    from loyalty_model.errors import DataError

    with pytest.raises(DataError) as info, engines.spark_job("scoring the followers"):
        raise PySparkException(message="[CAST_INVALID_INPUT] 'abc' cannot be cast\nstack...")
    assert str(info.value) == (
        "spark: scoring the followers failed: [CAST_INVALID_INPUT] 'abc' cannot be cast"
    )


def test_a_full_spill_disk_is_one_line(tmp_path):
    """DuckDB's IO errors while a session runs (a full disk under the spill folder) are an
    OutputError of one line that says where it spills and what to change."""
    import duckdb

    from loyalty_model.config import DuckDBConfig
    from loyalty_model.errors import OutputError

    cfg = DuckDBConfig(temp_directory=str(tmp_path))
    with pytest.raises(OutputError) as info, engines.duckdb_session(cfg):
        raise duckdb.IOException('IO Error: Could not write file "x.tmp": No space\nleft on device')
    msg = str(info.value)
    assert "\n" not in msg and "No space left on device" in msg
    assert str(tmp_path) in msg and "duckdb.temp_directory" in msg


def test_spark_sessions_stay_in_utc_whatever_the_conf_says():
    from loyalty_model.config import SparkConfig
    from loyalty_model.engines import _sql_conf

    conf = _sql_conf(SparkConfig(conf={"spark.sql.session.timeZone": "Europe/Paris"}))
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert (
        _sql_conf(SparkConfig(conf={"spark.sql.shuffle.partitions": "3"}))[
            "spark.sql.shuffle.partitions"
        ]
        == "3"
    )
