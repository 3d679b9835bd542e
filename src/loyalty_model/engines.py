"""Engine connections. DuckDB in-process is the embedded default."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import duckdb
from pydantic import ValidationError

from loyalty_model.config import DuckDBConfig
from loyalty_model.errors import ConfigError

# environment settings of the machine a job runs on win over the task config
ENV_MEMORY_LIMIT = "LOYALTY_DUCKDB_MEMORY_LIMIT"
ENV_THREADS = "LOYALTY_DUCKDB_THREADS"
ENV_TEMP_DIRECTORY = "LOYALTY_DUCKDB_TEMP_DIRECTORY"


def duckdb_connection(
    threads: int | None = None, memory_limit: str | None = None, temp_dir: str | None = None
) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection with UTC as its session time zone.

    All timestamps in the contract are UTC; naive timestamps in input files are read as UTC.
    `memory_limit` (e.g. "3GB") caps DuckDB's memory; beyond it, it spills to `temp_dir`.
    Row order is never relied upon (queries that need an order say ORDER BY), which lets
    DuckDB skip preserving insertion order: faster and leaner. DuckDB's own progress bar is
    off: in a notebook or a log it printed "~45 hours remaining" bars over our output.
    """
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")  # ours report progress; DuckDB's litters logs
    if temp_dir:
        con.execute(f"SET temp_directory = '{temp_dir}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con


def duckdb_settings(cfg: DuckDBConfig) -> DuckDBConfig:
    """The config's DuckDB settings with the environment's (LOYALTY_DUCKDB_*) applied."""
    names = {
        "memory_limit": ENV_MEMORY_LIMIT,
        "threads": ENV_THREADS,
        "temp_directory": ENV_TEMP_DIRECTORY,
    }
    given = {k: os.environ[v] for k, v in names.items() if os.environ.get(v)}
    if not given:
        return cfg
    try:
        return DuckDBConfig.model_validate({**cfg.model_dump(), **given})
    except ValidationError as exc:
        e = exc.errors()[0]
        field = str(e["loc"][0]) if e["loc"] else ""
        where = names.get(field, "LOYALTY_DUCKDB_*")
        msg = e["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}={given.get(field)!r}: {msg}") from None


@contextlib.contextmanager
def duckdb_session(cfg: DuckDBConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with the config's (and environment's) memory cap, threads and spill
    folder (a fresh temporary one unless set), closed and cleaned up afterwards."""
    s = duckdb_settings(cfg)
    with contextlib.ExitStack() as stack:
        spill = s.temp_directory
        if spill is None:
            spill = stack.enter_context(tempfile.TemporaryDirectory(prefix="loyalty-spill-"))
        try:
            con = duckdb_connection(s.threads, s.memory_limit, str(spill))
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"duckdb settings {s.model_dump(mode='json')}: {first}") from None
        stack.callback(con.close)
        yield con


def ibis_tables(con: duckdb.DuckDBPyConnection, names: list[str] | tuple[str, ...]) -> dict:
    """Ibis tables over views already registered on a DuckDB connection (see io.register_tables)."""
    import ibis

    backend = ibis.duckdb.from_connection(con)
    return {name: backend.table(name) for name in names}
