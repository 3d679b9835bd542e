"""DuckDB sessions: the config's memory cap, threads and spill folder, the environment's over
them, and one-line errors for bad values."""

from __future__ import annotations

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
