"""Engine connections. DuckDB in-process is the embedded default."""

from __future__ import annotations

import duckdb


def duckdb_connection(
    threads: int | None = None, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection with UTC as its session time zone.

    All timestamps in the contract are UTC; naive timestamps in input files are read as UTC.
    """
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
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
