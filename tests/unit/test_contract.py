"""Contract validation on tiny frames the tests build: a clean directory passes, and every
kind of violation is reported with table, column, count and examples."""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from loyalty_model.contract import (
    EVENT_TYPES,
    FOREIGN_KEYS,
    SCHEMAS,
    SQL_TYPE,
    TABLES,
    Column,
    ForeignKey,
    Kind,
)
from loyalty_model.engines import duckdb_connection
from loyalty_model.errors import ContractError
from loyalty_model.io import register_tables, validate_dir


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def good_tables() -> dict[str, pd.DataFrame]:
    return {
        "events": pd.DataFrame(
            {
                "event_ts": [ts("2024-01-02"), ts("2024-01-03"), ts("2024-01-04")],
                "follower_id": ["f1", "f1", "f2"],
                "influencer_id": ["i1", "i1", None],
                "brand_id": [None, "b1", "b1"],
                "post_id": ["p1", "p2", None],
                "event_type": ["view", "like", "purchase"],
                "amount": [None, None, 19.5],
            }
        ),
        "follows": pd.DataFrame(
            {
                "follower_id": ["f1", "f2"],
                "influencer_id": ["i1", "i1"],
                "followed_at": [ts("2023-06-01"), ts("2023-07-01")],
                "unfollowed_at": [pd.NaT, ts("2024-02-01")],
            }
        ),
        "influencers": pd.DataFrame(
            {
                "influencer_id": ["i1"],
                "follower_count": [5000],
                "category": ["beauty"],
                "price_per_post": [None],
            }
        ),
        "brands": pd.DataFrame({"brand_id": ["b1"], "category": ["beauty"], "avg_price": [20.0]}),
        "campaigns": pd.DataFrame(
            {
                "campaign_id": ["c1"],
                "brand_id": ["b1"],
                "influencer_id": ["i1"],
                "start_ts": [ts("2024-01-03")],
                "cost": [None],
            }
        ),
    }


def write(tables: dict[str, pd.DataFrame], root: Path, fmt: str = "parquet") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        if fmt == "csv":
            df.to_csv(root / f"{name}.csv", index=False)
        else:
            df.to_parquet(root / f"{name}.parquet", index=False)
    return root


def problems(root: Path) -> list[str]:
    return [str(p) for p in validate_dir(duckdb_connection(), root)]


def with_change(tmp_path: Path, table: str, change) -> list[str]:
    tables = good_tables()
    tables[table] = change(tables[table].copy())
    return problems(write(tables, tmp_path))


def test_clean_directory_has_no_problems(tmp_path):
    assert problems(write(good_tables(), tmp_path)) == []


def test_csv_directory_is_read_too(tmp_path):
    assert problems(write(good_tables(), tmp_path, fmt="csv")) == []


def test_parquet_dataset_folder_is_read(tmp_path):
    root = write(good_tables(), tmp_path)
    events = pd.read_parquet(root / "events.parquet")
    (root / "events.parquet").unlink()
    (root / "events").mkdir()
    events.iloc[:2].to_parquet(root / "events" / "part-0.parquet", index=False)
    events.iloc[2:].to_parquet(root / "events" / "part-1.parquet", index=False)
    assert problems(root) == []
    con = duckdb_connection()
    register_tables(con, root)
    assert con.execute("SELECT count(*) FROM events").fetchall()[0][0] == 3


def test_extra_columns_are_allowed(tmp_path):
    assert with_change(tmp_path, "brands", lambda d: d.assign(extra=1)) == []


def test_missing_table(tmp_path):
    root = write(good_tables(), tmp_path)
    (root / "brands.parquet").unlink()
    found = problems(root)
    assert any(p.startswith("brands: table not found") for p in found), found


def test_table_present_twice(tmp_path):
    root = write(good_tables(), tmp_path)
    good_tables()["brands"].to_csv(root / "brands.csv", index=False)
    assert any("brands: table found more than once" in p for p in problems(root))


def test_missing_column(tmp_path):
    found = with_change(tmp_path, "follows", lambda d: d.drop(columns="followed_at"))
    assert any(p.startswith("follows.followed_at: missing column") for p in found), found


@pytest.mark.parametrize(
    ("table", "change", "expected"),
    [
        (
            "events",
            lambda d: d.assign(event_type=["view", "poke", "purchase"]),
            "events.event_type: not one of view, like, comment, share, save, click, purchase"
            " in 1 row, e.g. 'poke'",
        ),
        (
            "events",
            lambda d: d.assign(amount=[None, None, -3.0]),
            "events.amount: value below 0.0 in 1 row, e.g. '-3.0'",
        ),
        (
            "events",
            lambda d: d.assign(amount=[None, None, None]),
            "events.amount: purchase without an amount in 1 row, e.g. 'f2'",
        ),
        (
            "events",
            lambda d: d.assign(amount=[1.0, None, 19.5]),
            "events.amount: amount set on a non-purchase event in 1 row, e.g. 'view'",
        ),
        (
            "events",
            lambda d: d.assign(follower_id=["f1", None, "f2"]),
            "events.follower_id: null in a required column in 1 row",
        ),
        (
            "events",
            lambda d: d.assign(follower_id=["f1", " ", "f2"]),
            "events.follower_id: empty string id in 1 row, e.g. ' '",
        ),
        (
            "events",
            lambda d: d.assign(event_ts=["2024-01-02", "yesterday", "2024-01-04"]),
            "events.event_ts: not a valid timestamp in 1 row, e.g. 'yesterday'",
        ),
        (
            "events",
            lambda d: d.assign(influencer_id=["i1", "i9", None]),
            "events.influencer_id: unknown influencers.influencer_id in 1 row, e.g. 'i9'",
        ),
        (
            "influencers",
            lambda d: d.assign(follower_count=[-5]),
            "influencers.follower_count: value below 0 in 1 row, e.g. '-5'",
        ),
        (
            "brands",
            lambda d: pd.concat([d, d]),
            "brands.brand_id: duplicate key in 1 row, e.g. 'b1'",
        ),
        (
            "follows",
            lambda d: d.assign(unfollowed_at=[pd.NaT, ts("2023-01-01")]),
            "follows.unfollowed_at: before followed_at in 1 row, e.g. 'f2|i1'",
        ),
        (
            "campaigns",
            lambda d: d.assign(brand_id=["nope"]),
            "campaigns.brand_id: unknown brands.brand_id in 1 row, e.g. 'nope'",
        ),
        (
            "campaigns",
            lambda d: d.assign(cost=[float("inf")]),
            "campaigns.cost: not a finite number in 1 row, e.g. 'inf'",
        ),
    ],
)
def test_each_violation_is_reported(tmp_path, table, change, expected):
    assert expected in with_change(tmp_path, table, change)


def test_wrong_column_type(tmp_path):
    found = with_change(tmp_path, "influencers", lambda d: d.assign(follower_count=[True]))
    assert any(p.startswith("influencers.follower_count: type BOOLEAN") for p in found), found


def test_unreadable_file_is_reported_not_raised(tmp_path):
    root = write(good_tables(), tmp_path)
    (root / "brands.parquet").write_bytes(b"not parquet")
    found = problems(root)
    assert any(p.startswith("brands: cannot be read") for p in found), found


def test_many_offenders_show_count_and_five_examples(tmp_path):
    n = 12
    tables = good_tables()
    tables["events"] = pd.DataFrame(
        {
            "event_ts": [ts("2024-01-02")] * n,
            "follower_id": [f"f{i}" for i in range(n)],
            "influencer_id": ["i1"] * n,
            "brand_id": [None] * n,
            "post_id": [None] * n,
            "event_type": [f"bad{i:02d}" for i in range(n)],
            "amount": [None] * n,
        }
    )
    (msg,) = [p for p in problems(write(tables, tmp_path)) if "event_type" in p]
    assert f"in {n} rows" in msg
    assert msg.count("'bad") == 5


def test_register_tables_raises_one_line_error(tmp_path):
    tables = good_tables()
    tables["events"] = tables["events"].assign(event_type=["view", "poke", "purchase"])
    root = write(tables, tmp_path)
    with pytest.raises(ContractError) as info:
        register_tables(duckdb_connection(), root)
    assert "\n" not in str(info.value)
    assert "events.event_type" in str(info.value) and "'poke'" in str(info.value)


def test_register_tables_types_columns(tmp_path):
    root = write(good_tables(), tmp_path, fmt="csv")
    con = duckdb_connection()
    register_tables(con, root)
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE events)").fetchall())
    assert types["event_ts"] == "TIMESTAMP WITH TIME ZONE"
    assert types["amount"] == "DOUBLE"


def test_sample_fraction_is_optional_and_read_as_null_when_absent(tmp_path):
    root = write(good_tables(), tmp_path)
    assert problems(root) == []
    con = duckdb_connection()
    register_tables(con, root)
    assert con.execute("SELECT sample_fraction FROM influencers").fetchall() == [(None,)]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0], "influencers.sample_fraction: value not above 0.0 in 1 row, e.g. '0.0'"),
        ([1.5], "influencers.sample_fraction: value above 1.0 in 1 row, e.g. '1.5'"),
        (["half"], "influencers.sample_fraction: not a valid float in 1 row, e.g. 'half'"),
    ],
)
def test_sample_fraction_must_be_a_share(tmp_path, values, expected):
    found = with_change(tmp_path, "influencers", lambda d: d.assign(sample_fraction=values))
    assert expected in found, found


def test_a_declared_sample_fraction_is_read(tmp_path):
    tables = good_tables()
    tables["influencers"] = tables["influencers"].assign(sample_fraction=[0.25])
    con = duckdb_connection()
    register_tables(con, write(tables, tmp_path))
    assert con.execute("SELECT sample_fraction FROM influencers").fetchall() == [(0.25,)]


# --- docs/data_contract.md agrees with the schemas in contract.py ---------------------------

DOC = Path(__file__).parents[2] / "docs" / "data_contract.md"
_TABLE_HEADING = re.compile(r"^### `(?P<name>[^`]+)`(?: — (?P<doc>.+))?$")


@dataclass
class DocTable:
    """One `### `TABLE`` section of the doc: heading text, column rows, key lines."""

    doc: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, type, null?, rules
    key_lines: list[str] = field(default_factory=list)


def _cells(line: str, n: int) -> list[str]:
    """The cells of a markdown table row; the last cell keeps any further `|`."""
    return [c.strip() for c in line.strip()[1:-1].split("|", n - 1)]


def _is_header_or_rule(cells: list[str], header: str) -> bool:
    return cells[0] == header or set(cells[0]) <= set("-: ")


def _ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def _plain(text: str) -> str:
    """Markdown text without code ticks and bold, whitespace collapsed, lower case."""
    return " ".join(text.replace("`", "").replace("**", "").split()).lower()


def doc_tables(text: str) -> dict[str, DocTable]:
    tables: dict[str, DocTable] = {}
    current: DocTable | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            m = _TABLE_HEADING.match(line)
            current = None
            if m:
                assert m["name"] not in tables, f"table {m['name']!r} documented twice"
                current = tables[m["name"]] = DocTable(doc=(m["doc"] or "").strip())
        elif current is not None and line.startswith("|"):
            cells = _cells(line, 4)
            if not _is_header_or_rule(cells, "column"):
                name = re.fullmatch(r"`([^`]+)`", cells[0])
                current.rows.append((name[1] if name else cells[0], *cells[1:]))
        elif current is not None and line.startswith("Key:"):
            current.key_lines.append(line)
    return tables


@pytest.fixture(scope="module")
def doc() -> dict[str, DocTable]:
    return doc_tables(DOC.read_text())


def _range_text(col: Column) -> str | None:
    """How the doc states a column's numeric range, e.g. `>= 0` or `(0, 1]`."""
    lo, hi = col.min_value, col.max_value
    if lo is None and hi is None:
        return None
    if lo is not None and hi is not None:
        return f"`{'(' if col.min_exclusive else '['}{lo:g}, {hi:g}]`"
    if lo is not None:
        return f"`{'>' if col.min_exclusive else '>='} {lo:g}`"
    return f"`<= {hi:g}`"


def _section(doc: dict[str, DocTable], table: str) -> DocTable:
    assert table in doc, f"{DOC.name} has no ### `{table}` section"
    return doc[table]


def _set_diff(what: str, documented: set, in_code: set) -> str:
    """'' when equal, else what is only in the doc and what only in code."""
    parts = [
        f"{label}: {sorted(map(str, items))}"
        for label, items in (
            ("only in the doc", documented - in_code),
            ("only in code", in_code - documented),
        )
        if items
    ]
    return f"{DOC.name} vs {what}: " + "; ".join(parts) if parts else ""


def test_doc_documents_exactly_the_contract_tables(doc):
    assert set(SCHEMAS) == set(TABLES)
    diff = _set_diff("contract.TABLES (### `TABLE` sections)", set(doc), set(TABLES))
    assert not diff, diff


@pytest.mark.parametrize("table", TABLES)
def test_doc_columns_match_schema(doc, table):
    schema, documented = SCHEMAS[table], _section(doc, table)
    names = [r[0] for r in documented.rows]
    expected = [c.name for c in schema.columns]
    assert names == expected, f"{DOC.name} `{table}` columns {names}, contract.py has {expected}"
    diffs = []
    if documented.doc != schema.doc:
        diffs.append(f"heading says {documented.doc!r}, Table.doc is {schema.doc!r}")
    for (name, kind, null, rules), col in zip(documented.rows, schema.columns, strict=True):
        where = f"{table}.{name}"
        if kind != col.kind:
            diffs.append(f"{where}: type {kind!r} in the doc, {col.kind!r} in code")
        said = re.match(r"(yes|no)\b", null)
        want = "yes" if col.nullable else "no"
        if not said or said[1] != want:
            diffs.append(f"{where}: null? says {null!r}, code has nullable={col.nullable}")
        if ("optional" in null.lower()) != col.optional:
            diffs.append(f"{where}: null? says {null!r}, code has optional={col.optional}")
        listed = re.search(r"one of ((?:`[^`]+`(?:, )?)+)", rules)
        allowed = tuple(_ticked(listed[1])) if listed else None
        if allowed != col.allowed:
            diffs.append(f"{where}: allowed values {allowed} in the doc, {col.allowed} in code")
        span = _range_text(col)
        if span and span not in rules:
            diffs.append(f"{where}: range {span} (min/max_value in code) not stated in the doc")
        if col.doc and _plain(col.doc) not in _plain(rules):
            diffs.append(f"{where}: Column.doc {col.doc!r} is not in the doc's text {rules!r}")
    assert not diffs, f"{DOC.name} disagrees with contract.SCHEMAS:\n" + "\n".join(diffs)


@pytest.mark.parametrize("table", TABLES)
def test_doc_key_matches_schema(doc, table):
    key, lines = SCHEMAS[table].key, _section(doc, table).key_lines
    if not key:
        assert not lines, f"{DOC.name} `{table}`: {lines} but the table has no key in code"
        return
    assert len(lines) == 1, f"{DOC.name} `{table}`: want one 'Key: (...)' line, found {lines}"
    stated = re.match(r"Key: \(([^)]*)\)", lines[0])
    documented = tuple(_ticked(stated[1])) if stated else ()
    assert documented == key, f"{DOC.name} `{table}`: key {documented} in the doc, {key} in code"


def test_doc_foreign_keys_match_code(doc):
    documented = set()
    for table, section in doc.items():
        for name, _, _, rules in section.rows:
            for ref in re.findall(r"must exist in `([^`]+)`", rules):
                ref_table, _, ref_column = ref.partition(".")
                if not ref_column:  # `influencers` means the referenced table's one-column key
                    key = SCHEMAS[ref_table].key if ref_table in SCHEMAS else ()
                    ref_column = key[0] if len(key) == 1 else "?"
                documented.add(ForeignKey(table, name, ref_table, ref_column))
    diff = _set_diff("contract.FOREIGN_KEYS ('must exist in `X`')", documented, set(FOREIGN_KEYS))
    assert not diff, diff


def test_doc_event_types_match_code(doc):
    assert SCHEMAS["events"].column("event_type").allowed == EVENT_TYPES
    rules = {r[0]: r[3] for r in _section(doc, "events").rows}["event_type"]
    listed = re.search(r"one of ((?:`[^`]+`(?:, )?)+)", rules)
    documented = tuple(_ticked(listed[1])) if listed else ()
    assert documented == EVENT_TYPES, f"doc lists {documented}, EVENT_TYPES is {EVENT_TYPES}"


def test_doc_types_table_matches_sql_types():
    text = DOC.read_text().split("\n## Types\n", 1)[1].split("\n## ", 1)[0]
    rows = [_cells(line, 3) for line in text.splitlines() if line.startswith("|")]
    documented = {
        r[0]: (_ticked(r[2]) or [r[2]])[0]
        for r in rows
        if not _is_header_or_rule(r, "contract type")
    }
    assert set(documented) == set(typing.get_args(Kind)), "contract types: doc vs contract.Kind"
    assert documented == SQL_TYPE, f"'read as' in the doc {documented}, code {SQL_TYPE}"


# -- data that would silently change scores ---------------------------------------------------


def test_events_after_the_moment_of_the_run_are_refused(tmp_path):
    def future(d):
        d.loc[0, "event_ts"] = ts("2100-01-01")
        return d

    got = with_change(tmp_path, "events", future)
    assert len(got) == 1 and got[0].startswith("events.event_ts: after the moment of the run in")
    assert got[0].endswith("in 1 row, e.g. '2100-01-01 00:00:00+00:00'")


def test_a_follow_ending_in_the_future_is_refused_but_a_planned_campaign_is_not(tmp_path):
    tables = good_tables()
    tables["follows"].loc[1, "unfollowed_at"] = ts("2100-01-01")
    tables["campaigns"].loc[0, "start_ts"] = ts("2100-01-01")
    got = problems(write(tables, tmp_path))
    assert len(got) == 1 and got[0].startswith("follows.unfollowed_at: after the moment")


def test_now_is_the_moment_given_with_an_hour_of_clock_skew(tmp_path):
    root = write(good_tables(), tmp_path)  # the latest time: an unfollow on 2024-02-01 00:00
    con = duckdb_connection()
    assert validate_dir(con, root, now=ts("2024-01-31 23:30").to_pydatetime()) == []
    late = validate_dir(con, root, now=ts("2024-01-31 22:59").to_pydatetime())
    assert [str(p) for p in late] == [
        "follows.unfollowed_at: after the moment of the run in 1 row, "
        "e.g. '2024-02-01 00:00:00+00:00'"
    ]


def test_exact_duplicate_events_are_refused_with_the_extra_copies_counted(tmp_path):
    def twice(d):
        return pd.concat([d, d.iloc[[0, 0, 1]]], ignore_index=True)

    got = with_change(tmp_path, "events", twice)
    assert got == [
        "events: exact duplicate rows in 3 rows, e.g. '2024-01-02 00:00:00+00|f1|i1', "
        "'2024-01-03 00:00:00+00|f1|i1'"
    ]


def test_the_same_event_twice_but_for_its_amount_is_not_a_duplicate(tmp_path):
    def near(d):
        return pd.concat([d, d.iloc[[2]].assign(amount=20.0)], ignore_index=True)

    assert with_change(tmp_path, "events", near) == []


@pytest.mark.parametrize("table", ["events", "follows", "influencers", "brands"])
def test_tables_that_must_not_be_empty(tmp_path, table):
    got = with_change(tmp_path, table, lambda d: d.iloc[:0])
    assert f"{table}: the table is empty" in got


def test_empty_campaigns_pass_with_a_warning(tmp_path):
    from loyalty_model.io import prepare_tables

    root = write(good_tables() | {"campaigns": good_tables()["campaigns"].iloc[:0]}, tmp_path)
    assert problems(root) == []
    read = prepare_tables(duckdb_connection(), root)
    assert len(read.warnings) == 1 and read.warnings[0].startswith("campaigns: the table is empty")
    assert prepare_tables(duckdb_connection(), write(good_tables(), tmp_path / "b")).warnings == ()


def test_drop_sets_bad_rows_aside_with_their_reason_and_keeps_the_rest(tmp_path):
    from loyalty_model.io import prepare_tables, write_quarantine

    tables = good_tables()
    ev = tables["events"]
    odd = ev.iloc[[0, 0, 0]].assign(
        event_ts=[ts("2100-01-01"), ts("2024-01-05"), ts("2024-01-05")],
        influencer_id=["i1", "i404", "i1"],
        event_type=["view", "view", "dance"],
    )
    tables["events"] = pd.concat([ev, ev.iloc[[0]], odd], ignore_index=True)
    fo = tables["follows"]
    # an unknown influencer, and a follow exported twice (one copy is kept)
    tables["follows"] = pd.concat([fo, fo.iloc[[0]].assign(influencer_id="i404"), fo.iloc[[1]]])
    ca = tables["campaigns"]
    # one campaign id for two different campaigns: which is right is unknown, both go
    c2 = ca.assign(campaign_id="c2")
    tables["campaigns"] = pd.concat([ca, c2, c2.assign(cost=5.0)])
    root = write(tables, tmp_path / "data")
    with pytest.raises(ContractError):
        prepare_tables(duckdb_connection(), root)
    con = duckdb_connection()
    read = prepare_tables(con, root, "drop", now=ts("2026-01-01").to_pydatetime())
    assert read.dropped == {
        "events": {
            "events.event_ts: after the moment of the run": 1,
            "events.event_type: not one of " + ", ".join(EVENT_TYPES): 1,
            "events.influencer_id: unknown influencers.influencer_id": 1,
            "events: exact duplicate row": 1,
        },
        "follows": {
            "follows.influencer_id: unknown influencers.influencer_id": 1,
            "follows: exact duplicate row": 1,
        },
        "campaigns": {"campaigns.campaign_id: duplicate key": 2},
    }
    assert read.dropped_rows() == 8
    kept = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}
    assert kept == {"events": 3, "follows": 2, "influencers": 1, "brands": 1, "campaigns": 1}
    # the kept rows are the original ones, typed as the contract says
    got = con.execute("SELECT * FROM events ORDER BY event_ts").df()
    pd.testing.assert_frame_equal(got, ev, check_dtype=False)
    out = tmp_path / "out"
    assert write_quarantine(con, read, out) == read.dropped
    q = pd.read_parquet(out / "quarantine" / "events.parquet")
    assert sorted(q.columns) == sorted([*ev.columns, "reason"])
    assert q.reason.value_counts().to_dict() == read.dropped["events"]
    assert sorted(p.name for p in (out / "quarantine").iterdir()) == [
        "campaigns.parquet",
        "events.parquet",
        "follows.parquet",
    ]


def test_drop_still_fails_on_a_broken_table_and_on_a_table_left_empty(tmp_path):
    from loyalty_model.io import prepare_tables

    tables = good_tables()
    tables["brands"] = tables["brands"].drop(columns="category")
    with pytest.raises(ContractError, match=r"brands\.category: missing column"):
        prepare_tables(duckdb_connection(), write(tables, tmp_path / "a"), "drop")
    tables = good_tables()
    tables["follows"] = tables["follows"].assign(influencer_id="i404")
    with pytest.raises(ContractError, match="follows: the table is empty once its bad rows"):
        prepare_tables(duckdb_connection(), write(tables, tmp_path / "b"), "drop")


def test_validate_with_drop_answers_what_a_run_with_drop_would_do(tmp_path):
    import loyalty_model as lm

    tables = good_tables()
    inf = tables["influencers"]
    tables["influencers"] = pd.concat(
        [inf, inf.assign(influencer_id="i2"), inf.assign(influencer_id="i2", follower_count=7)]
    )
    tables["events"] = pd.concat(
        [tables["events"], tables["events"].iloc[[0]].assign(influencer_id="i2")]
    )
    root = write(tables, tmp_path / "a")
    got = {str(p) for p in lm.validate(root, on_bad_rows="drop")}
    # both rows of the ambiguous influencer, and the event that names it, counted
    assert got == {
        "influencers.influencer_id: duplicate key in 2 rows",
        "events.influencer_id: unknown influencers.influencer_id in 1 row",
    }
    assert all(p.droppable for p in lm.validate(root, on_bad_rows="drop"))
    # a table left empty by the drop is what stops the run: said, not "ok"
    tables = good_tables()
    tables["influencers"] = pd.concat([inf, inf.assign(follower_count=7)])
    problems = lm.validate(write(tables, tmp_path / "b"), on_bad_rows="drop")
    fatal = [str(p) for p in problems if not p.droppable]
    assert "influencers: the table is empty once its bad rows are dropped" in fatal
