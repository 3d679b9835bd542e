"""The edges: finding tables on disk, registering them with an engine, writing atomically."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loyalty_model.contract import (
    SCHEMAS,
    TABLES,
    Problem,
    quote_ident,
    validate_foreign_keys,
    validate_table,
)
from loyalty_model.errors import ContractError


def table_source(data_dir: Path, name: str) -> Path:
    """Where table `name` lives: NAME.parquet, NAME/ (a parquet dataset) or NAME.csv."""
    data_dir = Path(data_dir)
    candidates = [data_dir / f"{name}.parquet", data_dir / name, data_dir / f"{name}.csv"]
    found = [p for p in candidates if p.exists()]
    if not found:
        raise ContractError(
            [
                Problem(
                    name,
                    None,
                    f"table not found: expected {name}.parquet, {name}/ or "
                    f"{name}.csv in {data_dir}",
                    0,
                )
            ]
        )
    if len(found) > 1:
        raise ContractError(
            [Problem(name, None, "table found more than once", 0, tuple(str(p) for p in found))]
        )
    return found[0]


def _scan_sql(source: Path) -> str:
    path = str(source).replace("'", "''")
    if source.is_dir():
        return (
            f"read_parquet('{path}/**/*.parquet', hive_partitioning = false, union_by_name = true)"
        )
    if source.suffix == ".csv":
        return f"read_csv('{path}', header = true, auto_detect = true)"
    return f"read_parquet('{path}')"


def register_raw(con: duckdb.DuckDBPyConnection, data_dir: Path, name: str) -> str:
    """Register the table as it is on disk, as view `raw_NAME`; return the view name."""
    view = f"raw_{name}"
    try:
        scan = _scan_sql(table_source(data_dir, name))
        con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {scan}")
    except duckdb.Error as exc:  # unreadable file: one line, naming the table
        msg = str(exc).splitlines()[0]
        raise ContractError([Problem(name, None, f"cannot be read: {msg}", 0)]) from exc
    return view


def validate_dir(con: duckdb.DuckDBPyConnection, data_dir: Path) -> list[Problem]:
    """Every contract problem in a data directory; an empty list means it is clean."""
    problems: list[Problem] = []
    views: dict[str, str] = {}
    for name in TABLES:
        try:
            views[name] = register_raw(con, data_dir, name)
        except ContractError as exc:
            problems += exc.problems
            continue
        problems += validate_table(con, name, views[name])
    # Columns already broken are not checked again as references.
    broken = {(p.table, p.column) for p in problems if p.column}
    problems += validate_foreign_keys(con, views, broken)
    return problems


def register_tables(con: duckdb.DuckDBPyConnection, data_dir: Path) -> dict[str, str]:
    """Validate a data directory and register each table, typed as in the contract, as a view
    named after the table. Raises ContractError (one line) when the data breaks the contract."""
    problems = validate_dir(con, data_dir)
    if problems:
        raise ContractError(problems)
    sql_type = {"string": "VARCHAR", "timestamp": "TIMESTAMPTZ", "float": "DOUBLE", "int": "BIGINT"}
    views = {}
    for name in TABLES:
        present = {r[0] for r in con.execute(f"DESCRIBE raw_{name}").fetchall()}
        cols = ", ".join(
            f"CAST({quote_ident(c.name) if c.name in present else 'NULL'} AS {sql_type[c.kind]})"
            f" AS {quote_ident(c.name)}"
            for c in SCHEMAS[name].columns
        )
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {cols} FROM raw_{name}")
        views[name] = name
    return views


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it replaces `target` in one rename.

    A crash or an exception leaves the previous `target` (or none) untouched and removes the
    temporary folder, so readers never see a half-written output.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the output is an ordinary folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


PARQUET_OPTIONS = {"compression": "zstd", "write_statistics": True}


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write one table as a parquet file (call inside `atomic_dir` for atomicity)."""
    pq.write_table(table, path, **PARQUET_OPTIONS)


def write_parquet_chunks(chunks: Iterable[pa.Table], path: Path, schema: pa.Schema) -> int:
    """Stream tables into one parquet file, one row group per chunk; return rows written."""
    rows = 0
    with pq.ParquetWriter(path, schema, **PARQUET_OPTIONS) as writer:
        for chunk in chunks:
            writer.write_table(chunk, row_group_size=max(1, chunk.num_rows))
            rows += chunk.num_rows
    return rows


def write_json(obj: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def fingerprint(source: Path) -> str:
    """sha256 of a table file's bytes (what `sha256sum` prints); for a dataset folder, of
    each parquet file's relative name and bytes, in sorted order."""
    h = hashlib.sha256()
    files = sorted(source.rglob("*.parquet")) if source.is_dir() else [source]
    for f in files:
        if source.is_dir():
            h.update(str(f.relative_to(source)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def input_fingerprints(con: duckdb.DuckDBPyConnection, data_dir: Path) -> dict[str, dict]:
    """Per table: file, sha256 and row count, for manifests."""
    out = {}
    for name in TABLES:
        src = table_source(data_dir, name)
        rows = con.execute(f"SELECT count(*) FROM raw_{name}").fetchall()[0][0]
        out[name] = {"path": str(src), "sha256": fingerprint(src), "rows": int(rows)}
    return out


class TableWriter:
    """Writes batches to one parquet or csv file (inside an `atomic_dir`)."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str):
        self.path, self.schema, self.fmt = Path(path), schema, fmt
        self._writer = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            if self.fmt == "parquet":
                self._writer = pq.ParquetWriter(self.path, self.schema, **PARQUET_OPTIONS)
            else:
                self._writer = pacsv.CSVWriter(self.path, self.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is None:  # nothing written: still write the header / an empty file
            self.write(self.schema.empty_table())
        self._writer.close()


def write_frame(df, path: Path, fmt: str) -> None:
    """Write a pandas frame as one parquet or csv file (inside an `atomic_dir`)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if fmt == "parquet":
        write_parquet(table, path)
    else:
        pacsv.write_csv(table, path)


def read_truth_audiences(data_dir: Path):
    """The simulator's counterfactual truth of every audience in its scoring scenarios
    (ground_truth_audiences.parquet), when the data directory has it; None for real data."""
    path = Path(data_dir) / "ground_truth_audiences.parquet"
    if not path.is_file():
        return None
    return pq.read_table(path).to_pandas()


def read_ground_truth(data_dir: Path):
    """The simulator's ground truth rows (campaign_id, follower_id, p_true), when the data
    directory has them; None for real data."""
    path = Path(data_dir) / "ground_truth.parquet"
    if not path.is_file():
        return None
    return pq.read_table(path, columns=["campaign_id", "follower_id", "p_true"]).to_pandas()
