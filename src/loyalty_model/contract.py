"""The data contract: the one place that knows table names, column names and types.

Validation runs as SQL in DuckDB over the files themselves, so it works on event logs far
larger than memory and needs no pandas copy. Every check reports the table, the column, how
many rows break it and up to five offending values.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Literal

import duckdb

Kind = Literal["string", "timestamp", "float", "int"]

EVENT_TYPES: tuple[str, ...] = ("view", "like", "comment", "share", "save", "click", "purchase")
# Influencer tiers by follower_count: nano < 10k <= micro < 100k <= mid < 500k <= macro < 1M <= mega
TIERS: tuple[str, ...] = ("nano", "micro", "mid", "macro", "mega")
TIER_EDGES: tuple[float, ...] = (1e4, 1e5, 5e5, 1e6)  # lowest follower_count of micro .. mega


def tier_of(follower_count: float | None) -> str | None:
    """The tier of a follower count; None for a missing count."""
    if follower_count is None or follower_count != follower_count:  # None or NaN
        return None
    return TIERS[bisect.bisect_right(TIER_EDGES, follower_count)]


TABLES: tuple[str, ...] = ("events", "follows", "influencers", "brands", "campaigns")
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = False
    min_value: float | None = None
    allowed: tuple[str, ...] | None = None
    doc: str = ""
    optional: bool = False  # may be absent from the file (then read as all null)
    max_value: float | None = None
    min_exclusive: bool = False  # the value must be above min_value, not equal to it


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    doc: str = ""

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    ref_table: str
    ref_column: str


SCHEMAS: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "events",
            (
                Column("event_ts", "timestamp", doc="when it happened (UTC)"),
                Column("follower_id", "string", doc="who acted"),
                Column(
                    "influencer_id",
                    "string",
                    nullable=True,
                    doc="whose post (engagement) or who the purchase is attributed to (promo "
                    "code); null for purchases not attributed to an influencer",
                ),
                Column(
                    "brand_id",
                    "string",
                    nullable=True,
                    doc="the sponsoring brand of the post, or the brand bought; null for "
                    "non-sponsored content",
                ),
                Column(
                    "post_id",
                    "string",
                    nullable=True,
                    doc="the post engaged with; null for purchases",
                ),
                Column("event_type", "string", allowed=EVENT_TYPES, doc="what the follower did"),
                Column(
                    "amount",
                    "float",
                    nullable=True,
                    min_value=0.0,
                    doc="purchase value, >= 0 and finite; required for purchase, must be null "
                    "for every other type",
                ),
            ),
            doc="one row per follower interaction or purchase",
        ),
        Table(
            "follows",
            (
                Column("follower_id", "string"),
                Column("influencer_id", "string"),
                Column("followed_at", "timestamp", doc="start of the follow"),
                Column(
                    "unfollowed_at",
                    "timestamp",
                    nullable=True,
                    doc="end of the follow, null while still following; not before followed_at",
                ),
            ),
            key=("follower_id", "influencer_id", "followed_at"),
            doc="one row per follow period",
        ),
        Table(
            "influencers",
            (
                Column("influencer_id", "string"),
                Column("follower_count", "int", min_value=0, doc="nominal audience size, >= 0"),
                Column(
                    "category",
                    "string",
                    doc="niche, e.g. beauty, fitness, food, tech, gaming, fashion, travel, "
                    "parenting",
                ),
                Column(
                    "price_per_post",
                    "float",
                    nullable=True,
                    min_value=0.0,
                    doc="price of one sponsored post, >= 0, in the currency of config "
                    "data.currency; null when unknown",
                ),
                Column(
                    "sample_fraction",
                    "float",
                    nullable=True,
                    optional=True,
                    min_value=0.0,
                    min_exclusive=True,
                    max_value=1.0,
                    doc="share of the influencer's audience that follows holds, in (0, 1]",
                ),
            ),
            key=("influencer_id",),
        ),
        Table(
            "brands",
            (
                Column("brand_id", "string"),
                Column(
                    "category",
                    "string",
                    doc="the brand's category (same vocabulary as influencer niches)",
                ),
                Column(
                    "avg_price",
                    "float",
                    nullable=True,
                    min_value=0.0,
                    doc="typical purchase value, >= 0; null when unknown",
                ),
            ),
            key=("brand_id",),
        ),
        Table(
            "campaigns",
            (
                Column("campaign_id", "string"),
                Column("brand_id", "string"),
                Column("influencer_id", "string"),
                Column(
                    "start_ts", "timestamp", doc="campaign start; the cutoff of its training rows"
                ),
                Column(
                    "cost",
                    "float",
                    nullable=True,
                    min_value=0.0,
                    doc="what the brand paid, >= 0; null when unknown",
                ),
            ),
            key=("campaign_id",),
        ),
    )
}

FOREIGN_KEYS: tuple[ForeignKey, ...] = (
    ForeignKey("events", "influencer_id", "influencers", "influencer_id"),
    ForeignKey("events", "brand_id", "brands", "brand_id"),
    ForeignKey("follows", "influencer_id", "influencers", "influencer_id"),
    ForeignKey("campaigns", "influencer_id", "influencers", "influencer_id"),
    ForeignKey("campaigns", "brand_id", "brands", "brand_id"),
)

_SQL_TYPE: dict[Kind, str] = {
    "string": "VARCHAR",
    "timestamp": "TIMESTAMPTZ",
    "float": "DOUBLE",
    "int": "BIGINT",
}


@dataclass(frozen=True)
class Problem:
    table: str
    column: str | None
    check: str
    count: int
    examples: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        text = f"{where}: {self.check}"
        if self.count:
            text += f" in {self.count} row{'s' if self.count != 1 else ''}"
        if self.examples:
            text += f", e.g. {', '.join(self.examples)}"
        return text


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _examples(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[str, ...]:
    rows = con.execute(f"SELECT * FROM ({sql}) LIMIT {MAX_EXAMPLES}").fetchall()
    return tuple("null" if r[0] is None else repr(str(r[0])) for r in rows)


def _count_and_examples(
    con: duckdb.DuckDBPyConnection, view: str, predicate: str, show: str
) -> tuple[int, tuple[str, ...]]:
    n = con.execute(f"SELECT count(*) FROM {view} WHERE {predicate}").fetchall()[0][0]
    if not n:
        return 0, ()
    ex = _examples(
        con, f"SELECT DISTINCT {show} AS v FROM {view} WHERE {predicate} ORDER BY v NULLS FIRST"
    )
    return n, ex


def _column_types(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE {view}").fetchall()}


def _castable(kind: Kind, duck_type: str) -> bool:
    t = duck_type.upper()
    if t in ('"NULL"', "NULL"):  # an all-null column (e.g. no post ids at all): any type
        return True
    numeric = any(
        t.startswith(p) for p in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINY")
    ) or any(t.startswith(p) for p in ("USMALL", "UINT", "UBIG", "FLOAT", "DOUBLE", "DECIMAL"))
    if kind == "string":
        return t == "VARCHAR" or numeric
    if kind == "timestamp":
        return t.startswith("TIMESTAMP") or t in ("DATE", "VARCHAR")
    if kind in ("float", "int"):
        return numeric or t == "VARCHAR"
    return False


def validate_table(con: duckdb.DuckDBPyConnection, table: str, view: str) -> list[Problem]:
    """Check one raw table (a DuckDB view over its file) against its schema."""
    schema = SCHEMAS[table]
    problems: list[Problem] = []
    types = _column_types(con, view)
    present = []
    for col in schema.columns:
        if col.name not in types and col.optional:
            continue
        if col.name not in types:
            problems.append(Problem(table, col.name, "missing column", 0, (f"have {list(types)}",)))
            continue
        if not _castable(col.kind, types[col.name]):
            problems.append(
                Problem(
                    table,
                    col.name,
                    f"type {types[col.name]} cannot be read as {col.kind}",
                    0,
                )
            )
            continue
        present.append(col)

    for col in present:
        c = quote_ident(col.name)
        sql_type = _SQL_TYPE[col.kind]
        # values that do not parse as the contract type (e.g. 'abc' in a timestamp column)
        n, ex = _count_and_examples(
            con, view, f"{c} IS NOT NULL AND TRY_CAST({c} AS {sql_type}) IS NULL", c
        )
        if n:
            problems.append(Problem(table, col.name, f"not a valid {col.kind}", n, ex))
        typed = f"TRY_CAST({c} AS {sql_type})"
        if not col.nullable:
            n = con.execute(f"SELECT count(*) FROM {view} WHERE {c} IS NULL").fetchall()[0][0]
            if n:
                problems.append(Problem(table, col.name, "null in a required column", n))
        if col.kind == "string":
            n, ex = _count_and_examples(con, view, f"trim(CAST({c} AS VARCHAR)) = ''", c)
            if n:
                problems.append(Problem(table, col.name, "empty string id", n, ex))
        if col.min_value is not None:
            op, words = ("<=", "not above") if col.min_exclusive else ("<", "below")
            n, ex = _count_and_examples(con, view, f"{typed} {op} {col.min_value}", typed)
            if n:
                problems.append(Problem(table, col.name, f"value {words} {col.min_value}", n, ex))
        if col.max_value is not None:
            n, ex = _count_and_examples(con, view, f"{typed} > {col.max_value}", typed)
            if n:
                problems.append(Problem(table, col.name, f"value above {col.max_value}", n, ex))
        if col.kind == "float":
            n, ex = _count_and_examples(con, view, f"NOT isfinite({typed})", typed)
            if n:
                problems.append(Problem(table, col.name, "not a finite number", n, ex))
        if col.allowed:
            allowed = ", ".join(f"'{a}'" for a in col.allowed)
            n, ex = _count_and_examples(con, view, f"{c} IS NOT NULL AND {c} NOT IN ({allowed})", c)
            if n:
                problems.append(
                    Problem(table, col.name, f"not one of {', '.join(col.allowed)}", n, ex)
                )

    names = {c.name for c in present}
    if schema.key and set(schema.key) <= names:
        key = ", ".join(quote_ident(k) for k in schema.key)
        dup = f"SELECT {key} FROM {view} GROUP BY ALL HAVING count(*) > 1"
        n = con.execute(f"SELECT count(*) FROM ({dup})").fetchall()[0][0]
        if n:
            show = f"SELECT concat_ws('|', {key}) AS v FROM ({dup}) ORDER BY v"
            problems.append(
                Problem(
                    table,
                    ", ".join(schema.key),
                    "duplicate key",
                    n,
                    _examples(con, show),
                )
            )
    problems += _row_rules(con, table, view, names)
    return problems


def _row_rules(
    con: duckdb.DuckDBPyConnection, table: str, view: str, names: set[str]
) -> list[Problem]:
    """Rules that tie several columns of one row together."""
    out: list[Problem] = []
    if table == "events" and {"event_type", "amount"} <= names:
        amount = "TRY_CAST(amount AS DOUBLE)"
        n, ex = _count_and_examples(
            con, view, f"event_type = 'purchase' AND {amount} IS NULL", "follower_id"
        )
        if n:
            out.append(Problem(table, "amount", "purchase without an amount", n, ex))
        n, ex = _count_and_examples(
            con, view, f"event_type <> 'purchase' AND {amount} IS NOT NULL", "event_type"
        )
        if n:
            out.append(Problem(table, "amount", "amount set on a non-purchase event", n, ex))
    if table == "follows" and {"followed_at", "unfollowed_at"} <= names:
        pred = "TRY_CAST(unfollowed_at AS TIMESTAMPTZ) < TRY_CAST(followed_at AS TIMESTAMPTZ)"
        n, ex = _count_and_examples(con, view, pred, "concat_ws('|', follower_id, influencer_id)")
        if n:
            out.append(Problem(table, "unfollowed_at", "before followed_at", n, ex))
    return out


def validate_foreign_keys(
    con: duckdb.DuckDBPyConnection, views: dict[str, str], skip: set[tuple[str, str]]
) -> list[Problem]:
    """Ids that point at rows that do not exist (null references are allowed)."""
    out: list[Problem] = []
    for fk in FOREIGN_KEYS:
        if fk.table not in views or fk.ref_table not in views:
            continue
        if (fk.table, fk.column) in skip or (fk.ref_table, fk.ref_column) in skip:
            continue
        c = quote_ident(fk.column)
        pred = (
            f"{c} IS NOT NULL AND CAST({c} AS VARCHAR) NOT IN "
            f"(SELECT CAST({quote_ident(fk.ref_column)} AS VARCHAR) FROM {views[fk.ref_table]} "
            f"WHERE {quote_ident(fk.ref_column)} IS NOT NULL)"
        )
        n, ex = _count_and_examples(con, views[fk.table], pred, c)
        if n:
            out.append(
                Problem(fk.table, fk.column, f"unknown {fk.ref_table}.{fk.ref_column}", n, ex)
            )
    return out
