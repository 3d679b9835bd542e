"""The data contract: the one place that knows table names, column names and types.

Validation runs as SQL in DuckDB over the files themselves, so it works on event logs far
larger than memory and needs no pandas copy. Every check reports the table, the column, how
many rows break it and up to five offending values.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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

SQL_TYPE: dict[Kind, str] = {
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

    @property
    def droppable(self) -> bool:
        """A problem of single rows (they can be dropped), not of the whole table."""
        return self.count > 0

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


@dataclass(frozen=True)
class RowRule:
    """A check of single rows: `predicate` (SQL over the raw view) is true for the rows that
    break it. Rows breaking a rule can be dropped (`--on-bad-rows drop`); the table stays."""

    table: str
    column: str | None
    check: str  # what is wrong, in words; the `reason` of a quarantined row
    predicate: str
    show: str | None  # SQL of the examples shown; None: no examples (e.g. nulls)


# timestamps may run a little ahead of this machine's clock (another machine exported them)
CLOCK_SKEW = timedelta(hours=1)
# tables that may be empty: campaigns (no past campaigns yet: the past-rate features fall back
# to their prior, with a warning). Every other table empty leaves nothing to learn or score.
MAY_BE_EMPTY: tuple[str, ...] = ("campaigns",)
# timestamps that record something that happened: none may be after the moment of the run.
# campaigns.start_ts may (a campaign planned ahead is not a training row until it closes).
PAST_ONLY: tuple[tuple[str, str], ...] = (
    ("events", "event_ts"),
    ("follows", "followed_at"),
    ("follows", "unfollowed_at"),
)


def _column_rules(table: str, col: Column, now: datetime) -> list[RowRule]:
    c = quote_ident(col.name)
    sql_type = SQL_TYPE[col.kind]
    typed = f"TRY_CAST({c} AS {sql_type})"
    out = [
        # values that do not parse as the contract type (e.g. 'abc' in a timestamp column)
        RowRule(
            table, col.name, f"not a valid {col.kind}", f"{c} IS NOT NULL AND {typed} IS NULL", c
        )
    ]
    if not col.nullable:
        out.append(RowRule(table, col.name, "null in a required column", f"{c} IS NULL", None))
    if col.kind == "string":
        out.append(
            RowRule(table, col.name, "empty string id", f"trim(CAST({c} AS VARCHAR)) = ''", c)
        )
    if col.min_value is not None:
        op, words = ("<=", "not above") if col.min_exclusive else ("<", "below")
        out.append(
            RowRule(
                table,
                col.name,
                f"value {words} {col.min_value}",
                f"{typed} {op} {col.min_value}",
                typed,
            )
        )
    if col.max_value is not None:
        out.append(
            RowRule(
                table, col.name, f"value above {col.max_value}", f"{typed} > {col.max_value}", typed
            )
        )
    if col.kind == "float":
        out.append(RowRule(table, col.name, "not a finite number", f"NOT isfinite({typed})", typed))
    if col.allowed:
        allowed = ", ".join(f"'{a}'" for a in col.allowed)
        out.append(
            RowRule(
                table,
                col.name,
                f"not one of {', '.join(col.allowed)}",
                f"{c} IS NOT NULL AND {c} NOT IN ({allowed})",
                c,
            )
        )
    if (table, col.name) in PAST_ONLY:
        limit = (now + CLOCK_SKEW).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")
        out.append(
            RowRule(
                table,
                col.name,
                "after the moment of the run",  # the same words every run: a reason to count
                f"{typed} > TIMESTAMPTZ '{limit}'",
                typed,
            )
        )
    return out


def _cross_column_rules(table: str, names: set[str]) -> list[RowRule]:
    """Rules that tie several columns of one row together."""
    out: list[RowRule] = []
    if table == "events" and {"event_type", "amount"} <= names:
        amount = "TRY_CAST(amount AS DOUBLE)"
        out.append(
            RowRule(
                table,
                "amount",
                "purchase without an amount",
                f"event_type = 'purchase' AND {amount} IS NULL",
                "follower_id",
            )
        )
        out.append(
            RowRule(
                table,
                "amount",
                "amount set on a non-purchase event",
                f"event_type <> 'purchase' AND {amount} IS NOT NULL",
                "event_type",
            )
        )
    if table == "follows" and {"followed_at", "unfollowed_at"} <= names:
        out.append(
            RowRule(
                table,
                "unfollowed_at",
                "before followed_at",
                "TRY_CAST(unfollowed_at AS TIMESTAMPTZ) < TRY_CAST(followed_at AS TIMESTAMPTZ)",
                "concat_ws('|', follower_id, influencer_id)",
            )
        )
    return out


def present_columns(
    con: duckdb.DuckDBPyConnection, table: str, view: str
) -> tuple[list[Column], list[Problem]]:
    """The contract's columns the file has in a readable type, and the problems of the table
    as a whole (a required column missing, a type that cannot be read): those no row
    filter can mend."""
    types = _column_types(con, view)
    present, problems = [], []
    for col in SCHEMAS[table].columns:
        if col.name not in types and col.optional:
            continue
        if col.name not in types:
            problems.append(Problem(table, col.name, "missing column", 0, (f"have {list(types)}",)))
            continue
        if not _castable(col.kind, types[col.name]):
            problems.append(
                Problem(table, col.name, f"type {types[col.name]} cannot be read as {col.kind}", 0)
            )
            continue
        present.append(col)
    return present, problems


def row_rules(table: str, present: list[Column], now: datetime) -> list[RowRule]:
    """Every single-row rule of a table over the columns it has, in the order reported."""
    rules = [r for col in present for r in _column_rules(table, col, now)]
    return rules + _cross_column_rules(table, {c.name for c in present})


def key_sql(table: str, present: list[Column]) -> str | None:
    """The table's key columns as SQL (the whole row for events, which has no key)."""
    names = [c.name for c in present]
    key = SCHEMAS[table].key or tuple(names)
    if not set(key) <= set(names):
        return None
    return ", ".join(quote_ident(k) for k in key)


def is_empty(con: duckdb.DuckDBPyConnection, view: str) -> bool:
    return not con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {view} LIMIT 1)").fetchall()[0][0]


def validate_table(
    con: duckdb.DuckDBPyConnection, table: str, view: str, now: datetime | None = None
) -> list[Problem]:
    """Check one raw table (a DuckDB view over its file) against its schema, with `now` (the
    moment of the run; default: the clock) as the latest time a recorded event may have."""
    now = now or datetime.now(UTC)
    present, problems = present_columns(con, table, view)
    if table not in MAY_BE_EMPTY and is_empty(con, view):
        problems.append(Problem(table, None, "the table is empty", 0))
        return problems
    for rule in row_rules(table, present, now):
        if rule.show is None:
            n = con.execute(f"SELECT count(*) FROM {view} WHERE {rule.predicate}").fetchall()
            n, ex = n[0][0], ()
        else:
            n, ex = _count_and_examples(con, view, rule.predicate, rule.show)
        if n:
            problems.append(Problem(table, rule.column, rule.check, n, ex))
    key = key_sql(table, present)
    if key is not None:
        problems += _duplicates(con, table, view, key, present)
    return problems


def _duplicates(
    con: duckdb.DuckDBPyConnection, table: str, view: str, key: str, present: list[Column]
) -> list[Problem]:
    """Keys that appear more than once; for events (no key), rows that appear more than once
    exactly: a repeated export, which would count every event twice."""
    if SCHEMAS[table].key:
        dup = f"SELECT {key} FROM {view} GROUP BY ALL HAVING count(*) > 1"
        what, column = "duplicate key", ", ".join(SCHEMAS[table].key)
        n = con.execute(f"SELECT count(*) FROM ({dup})").fetchall()[0][0]
        show = f"SELECT concat_ws('|', {key}) AS v FROM ({dup}) ORDER BY v"
    else:
        # one 64-bit hash per row first (a group-by on one integer column), the full rows
        # compared only for the hashes seen twice
        hashed = f"SELECT hash({key}) AS _h FROM {view} GROUP BY ALL HAVING count(*) > 1"
        dup = (
            f"SELECT {key}, count(*) AS _n FROM {view} WHERE hash({key}) IN ({hashed}) "
            "GROUP BY ALL HAVING count(*) > 1"
        )
        what, column = "exact duplicate rows", None
        n = con.execute(f"SELECT coalesce(sum(_n - 1), 0) FROM ({dup})").fetchall()[0][0]
        first = [c.name for c in present][:3]
        cols = ", ".join(f"CAST({quote_ident(c)} AS VARCHAR)" for c in first)
        show = f"SELECT concat_ws('|', {cols}) AS v FROM ({dup}) ORDER BY v"
    if not n:
        return []
    return [Problem(table, column, what, int(n), _examples(con, show))]


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
        pred = _fk_predicate(fk, views[fk.ref_table])
        n, ex = _count_and_examples(con, views[fk.table], pred, quote_ident(fk.column))
        if n:
            out.append(Problem(fk.table, fk.column, _fk_check(fk), n, ex))
    return out


def _fk_check(fk: ForeignKey) -> str:
    return f"unknown {fk.ref_table}.{fk.ref_column}"


def _fk_predicate(fk: ForeignKey, ref_view: str) -> str:
    c, r = quote_ident(fk.column), quote_ident(fk.ref_column)
    return (
        f"{c} IS NOT NULL AND CAST({c} AS VARCHAR) NOT IN "
        f"(SELECT CAST({r} AS VARCHAR) FROM {ref_view} WHERE {r} IS NOT NULL)"
    )


# the order in which bad rows are dropped: parents before the tables that refer to them
DROP_ORDER: tuple[str, ...] = ("influencers", "brands", "events", "follows", "campaigns")


def flagged_sql(
    table: str, view: str, present: list[Column], now: datetime, ref_views: dict[str, str]
) -> str:
    """The raw rows with a `reason` column: null for a row to keep, else the first rule it
    breaks, as `table.column: check` (what `--on-bad-rows drop` quarantines). `ref_views`:
    the kept rows of the tables it refers to. Of rows repeated exactly, the first copy is
    kept; of rows sharing a key but not all their values, none (which one is right is
    unknown)."""
    cases = [
        (r.predicate, _reason(r.table, r.column, r.check)) for r in row_rules(table, present, now)
    ]
    for fk in FOREIGN_KEYS:
        if (
            fk.table == table
            and fk.ref_table in ref_views
            and fk.column in {c.name for c in present}
        ):
            cases.append(
                (
                    _fk_predicate(fk, ref_views[fk.ref_table]),
                    _reason(table, fk.column, _fk_check(fk)),
                )
            )
    key = key_sql(table, present)
    whole = ", ".join(quote_ident(c.name) for c in present)
    extra = "NULL AS _dup, NULL AS _copy"
    if key is not None and SCHEMAS[table].key:
        # rows sharing a key but not every value: none is kept; a row repeated exactly: one
        extra = (
            f"count(*) OVER (PARTITION BY {key}) > count(*) OVER (PARTITION BY {whole}) AS _dup, "
            f"row_number() OVER (PARTITION BY {whole}) > 1 AS _copy"
        )
        cases.append(("_dup", _reason(table, ", ".join(SCHEMAS[table].key), "duplicate key")))
        cases.append(("_copy", _reason(table, None, "exact duplicate row")))
    elif key is not None:
        extra = f"NULL AS _dup, row_number() OVER (PARTITION BY {key}) > 1 AS _copy"
        cases.append(("_copy", _reason(table, None, "exact duplicate row")))
    whens = " ".join(f"WHEN coalesce({p}, false) THEN '{why}'" for p, why in cases)
    reason = f"CASE {whens} END" if whens else "NULL"
    return (
        f"SELECT * EXCLUDE (_dup, _copy), CAST({reason} AS VARCHAR) AS reason "
        f"FROM (SELECT *, {extra} FROM {view})"
    )


def _reason(table: str, column: str | None, check: str) -> str:
    where = f"{table}.{column}" if column else table
    return f"{where}: {check}".replace("'", "''")
