"""Engine connections. DuckDB in-process is the embedded default."""

from __future__ import annotations

import duckdb


def duckdb_connection(
    threads: int | None = None, memory_limit: str | None = None, temp_dir: str | None = None
) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection with UTC as its session time zone.

    All timestamps in the contract are UTC; naive timestamps in input files are read as UTC.
    `memory_limit` (e.g. "3GB") caps DuckDB's memory; beyond it, it spills to `temp_dir`.
    Row order is never relied upon (queries that need an order say ORDER BY), which lets
    DuckDB skip preserving insertion order: faster and leaner.
    """
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    if temp_dir:
        con.execute(f"SET temp_directory = '{temp_dir}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con


def ibis_tables(con: duckdb.DuckDBPyConnection, names: list[str] | tuple[str, ...]) -> dict:
    """Ibis tables over views already registered on a DuckDB connection (see io.register_tables)."""
    import ibis

    backend = ibis.duckdb.from_connection(con)
    return {name: backend.table(name) for name in names}
