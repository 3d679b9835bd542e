"""Version shims, in one place."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import ibis
import ibis.expr.types as ir
import pyarrow as pa


def duckdb_batches(
    con: duckdb.DuckDBPyConnection, expr: ir.Table, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Stream an Ibis expression's result from DuckDB in record batches.

    ibis 12's `to_pyarrow_batches` calls `fetch_record_batch` on the connection, which
    DuckDB 2.0 removed; compile the expression and read it through a relation instead, cast
    to the expression's schema as ibis would (DuckDB sums integers into HUGEINT, which arrow
    reads as decimal).
    """
    target = expr.schema().to_pyarrow()
    reader = con.sql(ibis.to_sql(expr, dialect="duckdb")).to_arrow_reader(batch_rows)
    for batch in reader:
        yield batch.cast(target)
