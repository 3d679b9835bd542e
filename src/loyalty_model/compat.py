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


def spark_dataframe(session, expr: ir.Table):
    """A pyspark DataFrame of an Ibis expression, to hand to Spark's own APIs (mapInPandas,
    write, groupBy) without collecting it.

    ibis 12 has no public way back from an expression to a DataFrame; do what its backend's
    `execute` does: register the in-memory tables and UDFs the expression uses, compile it and
    run the SQL on the session."""
    backend = ibis.pyspark.connect(session)
    backend._run_pre_execute_hooks(expr)
    return session.sql(backend.compile(expr))


def running_spark_context():
    """The SparkContext running in this process, or None; unlike SparkContext.getOrCreate it
    starts nothing, and unlike SparkSession.getActiveSession it sees a context started in
    another thread. pyspark 4 has no public call for it."""
    from pyspark import SparkContext

    return SparkContext._active_spark_context
