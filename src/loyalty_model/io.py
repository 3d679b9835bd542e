"""The edges: finding tables on disk, registering them with an engine, writing atomically."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loyalty_model.contract import (
    DROP_ORDER,
    MAY_BE_EMPTY,
    SCHEMAS,
    SQL_TYPE,
    TABLES,
    Problem,
    flagged_sql,
    is_empty,
    present_columns,
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


def _register_all(
    con: duckdb.DuckDBPyConnection, data_dir: Path
) -> tuple[dict[str, str], list[Problem]]:
    """Every table registered as it is on disk (raw views), and the tables that cannot be."""
    views: dict[str, str] = {}
    problems: list[Problem] = []
    for name in TABLES:
        try:
            views[name] = register_raw(con, data_dir, name)
        except ContractError as exc:
            problems += exc.problems
    return views, problems


def validate_dir(
    con: duckdb.DuckDBPyConnection, data_dir: Path, now: datetime | None = None
) -> list[Problem]:
    """Every contract problem in a data directory; an empty list means it is clean. `now`:
    the moment of the run (no recorded event may be after it), default the clock."""
    views, problems = _register_all(con, data_dir)
    for name, view in views.items():
        problems += validate_table(con, name, view, now)
    # Columns already broken are not checked again as references.
    broken = {(p.table, p.column) for p in problems if p.column}
    problems += validate_foreign_keys(con, views, broken)
    return problems


BAD_ROWS = ("fail", "drop")


@dataclass(frozen=True)
class Tables:
    """The registered tables (typed views named after them) and what reading them found."""

    views: dict[str, str]
    warnings: tuple[str, ...] = ()
    # --on-bad-rows drop: per table, rows dropped per reason, and the relation holding them
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    quarantine: dict[str, str] = field(default_factory=dict)

    def dropped_rows(self) -> int:
        return sum(n for reasons in self.dropped.values() for n in reasons.values())


def register_tables(con: duckdb.DuckDBPyConnection, data_dir: Path) -> dict[str, str]:
    """Validate a data directory and register each table, typed as in the contract, as a view
    named after the table. Raises ContractError (one line) when the data breaks the contract."""
    return prepare_tables(con, data_dir).views


def prepare_tables(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    on_bad_rows: str = "fail",
    now: datetime | None = None,
) -> Tables:
    """Check a data directory against the contract and register its tables as typed views.

    `on_bad_rows="fail"`: any problem raises ContractError (one line). `"drop"`: rows that
    break a row rule (a bad value, a duplicate, an unknown reference, a time after `now`)
    are set aside with their reason, to be written by `write_quarantine`; problems of a
    whole table (missing, unreadable, a column missing or of the wrong type, empty) still
    raise. Warns about an empty table that may be empty but feeds features."""
    if on_bad_rows not in BAD_ROWS:
        raise ValueError(f"on_bad_rows must be one of {BAD_ROWS}, got {on_bad_rows!r}")
    now = now or datetime.now(UTC)
    if on_bad_rows == "fail":
        problems = validate_dir(con, data_dir, now)
        if problems:
            raise ContractError(problems)
        sources = {name: f"raw_{name}" for name in TABLES}
        dropped, quarantine = {}, {}
    else:
        sources, dropped, quarantine = _drop_bad_rows(con, data_dir, now)
    views = {}
    for name in TABLES:
        present = {r[0] for r in con.execute(f"DESCRIBE {sources[name]}").fetchall()}
        cols = ", ".join(
            f"CAST({quote_ident(c.name) if c.name in present else 'NULL'} AS {SQL_TYPE[c.kind]})"
            f" AS {quote_ident(c.name)}"
            for c in SCHEMAS[name].columns
        )
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {cols} FROM {sources[name]}")
        views[name] = name
    warnings = tuple(
        f"{name}: the table is empty; {EMPTY_MEANS[name]}"
        for name in MAY_BE_EMPTY
        if is_empty(con, name)
    )
    return Tables(views, warnings, dropped, quarantine)


# what an empty table that may be empty means for the scores
EMPTY_MEANS = {
    "campaigns": "no past campaigns, so the past-campaign features (inf_past_*, br_past_*) "
    "fall back to their priors, and there is nothing to train on"
}


def _drop_bad_rows(
    con: duckdb.DuckDBPyConnection, data_dir: Path, now: datetime
) -> tuple[dict[str, str], dict[str, dict[str, int]], dict[str, str]]:
    """Flag every row with the first row rule it breaks (parents first, so that a reference
    is checked against the rows kept); the kept rows of each table, the counts per reason and
    the relations of the dropped rows. ContractError for problems of a whole table."""
    raw, problems = _register_all(con, data_dir)
    if problems:
        raise ContractError(problems)
    kept, dropped, quarantine = {}, {}, {}
    for name in DROP_ORDER:
        present, table_problems = present_columns(con, name, raw[name])
        if table_problems:
            problems += table_problems
            continue
        refs = {p: kept[p] for p in kept}
        flagged = f"flagged_{name}"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {flagged} AS "
            + flagged_sql(name, raw[name], present, now, refs)
        )
        kept[name] = f"kept_{name}"
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {kept[name]} AS "
            f"SELECT * EXCLUDE (reason) FROM {flagged} WHERE reason IS NULL"
        )
        counts = con.execute(
            f"SELECT reason, count(*) FROM {flagged} WHERE reason IS NOT NULL GROUP BY 1 ORDER BY 1"
        ).fetchall()
        if counts:
            dropped[name] = {r: int(n) for r, n in counts}
            quarantine[name] = f"SELECT * FROM {flagged} WHERE reason IS NOT NULL"
        if name not in MAY_BE_EMPTY and is_empty(con, kept[name]):
            what = "the table is empty" + (" once its bad rows are dropped" if counts else "")
            problems.append(Problem(name, None, what, 0))
    if problems:
        raise ContractError(problems)
    return kept, dropped, quarantine


def write_quarantine(
    con: duckdb.DuckDBPyConnection, tables: Tables, folder: Path, pseudonymize=None
) -> dict:
    """Write the dropped rows of each table to FOLDER/quarantine/TABLE.parquet (their columns
    as read, plus `reason`, in a fixed order); return the manifest's record: rows per table
    and reason. `pseudonymize` (ids -> pseudonyms): follower ids written as pseudonyms, as
    in the follower scores beside them."""
    if not tables.dropped:
        return {}
    out = Path(folder) / "quarantine"
    out.mkdir(parents=True, exist_ok=True)
    for name, sql in tables.quarantine.items():
        rows = con.sql(f"SELECT * FROM ({sql}) ORDER BY ALL").to_arrow_table()
        if pseudonymize is not None and "follower_id" in rows.column_names:
            ids = rows["follower_id"].cast(pa.string()).to_numpy(zero_copy_only=False)
            hashed = pa.array(pseudonymize(ids), pa.string())
            rows = rows.set_column(rows.column_names.index("follower_id"), "follower_id", hashed)
        write_parquet(rows, out / f"{name}.parquet")
    return {name: dict(reasons) for name, reasons in tables.dropped.items()}


# -- Output folders: written beside, published in one rename ---------------------------------


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a new folder beside `target` to write an output into; when the block ends
    without an error, publish it as `target` in one atomic step.

    Layout: `target` is a symbolic link to a sibling folder `.NAME.v-PID-HOST-RANDOM` that
    holds the files. Publishing renames the finished folder to that name and puts a new link
    over `target` with one rename (atomic on local and network file systems alike). The
    version it replaced stays, for readers still on it, until the next run for `target`
    starts: that run removes it with the other leftovers (`remove_output_leftovers`); a
    process that publishes `target` again removes its own older versions itself.

    What a reader may rely on (docs/operations.md):
    - once a first run has finished, `target` always exists and always shows one complete
      output: never a missing folder, a half-written file or the files of two runs mixed;
    - a reader of several files resolves `target` once (os.path.realpath) and reads them under
      that path: they are of one run. That folder stays at least until the next run for
      `target` starts; then a file already open stays readable, one not yet opened is missing
      (FileNotFoundError: resolve `target` again and start over);
    - a run that fails, is stopped (SIGTERM/SIGINT under `exit_on_signals`) or is killed
      leaves `target` as it was.

    A `target` that is a real folder (written by an earlier version of this package) becomes
    the link in one atomic exchange where the system can swap two names (Linux renameat2),
    else by two renames (a moment without `target`, once). On a file system without symbolic
    links `target` stays a real folder, replaced by two renames. Leftovers of runs of this
    machine whose process is gone are removed first (`remove_output_leftovers`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(target) and not (target.is_symlink() or target.is_dir()):
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(target))
    remove_output_leftovers(target)
    tmp: Path | None = None
    try:
        with signals_deferred():  # a signal meanwhile stops the run once `tmp` is known
            tmp = make_owned_dir(target.parent, _output_prefix(target, "tmp"))
        yield tmp
        if _STOP.received is not None:  # stopped, even if something swallowed Terminated
            raise Terminated(_STOP.received)
        with signals_deferred():
            _publish(tmp, target)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _output_prefix(target: Path, kind: str) -> str:
    """.NAME.tmp- (being written), .NAME.v- (finished), .NAME.link- (the link about to be
    put in place), .NAME.old- (being removed); owned_name adds PID-HOST-RANDOM."""
    return f".{target.name}.{kind}-"


def _publish(tmp: Path, target: Path) -> None:
    """Make the finished folder `tmp` the output `target` (see atomic_dir)."""
    token = tmp.name.removeprefix(_output_prefix(target, "tmp"))
    version, link, old = (
        target.with_name(_output_prefix(target, kind) + token) for kind in ("v", "link", "old")
    )
    try:
        os.symlink(version.name, link)  # relative: the output moves with its parent folder
    except OSError:  # no symbolic links on this file system: a real folder, as before
        _replace_folder(tmp, target, old)
        return
    previous = _our_version(target)
    try:
        os.replace(tmp, version)
        if target.is_dir() and not target.is_symlink():  # an earlier version's real folder
            legacy: Path | None = _replace_real_folder(link, target, old)
        else:
            os.replace(link, target)  # the moment of publication
            legacy = None
    except BaseException:
        link.unlink(missing_ok=True)
        if version.is_dir():
            os.replace(version, tmp)  # unpublished: atomic_dir removes it
        raise
    if legacy is not None:  # an earlier version's real folder: kept like any replaced one
        previous = owned_name(_output_prefix(target, "v"))
        try:
            os.replace(legacy, target.with_name(previous))
        except OSError:  # published all the same: the old folder just goes now
            _discard(legacy, old)
    _remove_own_versions(target, keep=(version.name, previous))


def _remove_own_versions(target: Path, keep: tuple[str | None, ...]) -> None:
    """The version a run replaces stays for readers still on it (the next run's clean-up
    removes it); versions this process published before go now, or a process that publishes
    in a loop would pile them up."""
    for name in _names(target.parent):
        made = owner(name, _output_prefix(target, "v"))
        if made == (os.getpid(), _host()) and name not in keep:
            old = target.with_name(owned_name(_output_prefix(target, "old")))
            _discard(target.parent / name, old)


def _our_version(target: Path) -> str | None:
    """The name of the version folder `target` links to, when it is one of ours beside it."""
    try:
        dest = os.readlink(target)
    except OSError:
        return None
    return dest if owner(dest, _output_prefix(target, "v")) else None


def _replace_real_folder(link: Path, target: Path, old: Path) -> Path:
    """Put the symbolic link `link` where the real folder `target` is; return where that
    folder went."""
    if _exchange(link, target):
        return link
    os.replace(target, old)  # the one moment without `target`, once per output folder
    try:
        os.replace(link, target)
    except BaseException:
        os.replace(old, target)
        raise
    return old


def _replace_folder(tmp: Path, target: Path, old: Path) -> None:
    """Where there are no symbolic links: `target` stays a real folder, exchanged with `tmp`
    where the system can swap two names, else replaced by two renames."""
    if not os.path.lexists(target):
        os.replace(tmp, target)
        return
    if _exchange(tmp, target):
        _discard(tmp, old)
        return
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    _discard(old, old)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` atomically (Linux renameat2 with RENAME_EXCHANGE); False,
    with nothing changed, where the C library or the file system (NFS) cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p) * 2 + (ctypes.c_uint,)
    paths = (os.fsencode(a), os.fsencode(b))
    return renameat2(_AT_FDCWD, paths[0], _AT_FDCWD, paths[1], _RENAME_EXCHANGE) == 0


def _discard(path: Path, old: Path) -> None:
    """Remove a folder no longer published. It is renamed to this run's .NAME.old- name
    first: should this process die while removing it, the next run knows it is a leftover."""
    if path != old:
        try:
            os.replace(path, old)
        except OSError:  # gone already (a concurrent run removed it)
            return
    shutil.rmtree(old, ignore_errors=True)


# -- Leftovers: what runs whose process is gone left behind ---------------------------------

log = logging.getLogger(__name__)

# PID-HOST-RANDOM after a prefix: which process, on which machine, made a folder
_OWNED = re.compile(r"(?P<pid>\d+)-(?P<host>[A-Za-z0-9._-]+)-(?P<token>[0-9a-f]{8})")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def owned_name(prefix: str, pid: int | None = None) -> str:
    """`prefix` + PID-HOST-RANDOM: a name that says which process (default: this one) on
    which machine made it, so that a later run can tell a leftover of a process that is gone
    from a live one's."""
    token = secrets.token_hex(4)
    if pid is None:
        _OWN_TOKENS.add(token)
    return f"{prefix}{os.getpid() if pid is None else pid}-{_host()}-{token}"


# the tokens of the names this process made: a name with this process's PID but another
# token was made by an earlier process that had the same PID (a container's PID 1)
_OWN_TOKENS: set[str] = set()


def make_owned_dir(parent: Path, prefix: str, mode: int = 0o777) -> Path:
    """A new folder `parent`/owned_name(prefix), of `mode` less the umask."""
    while True:
        path = Path(parent) / owned_name(prefix)
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            continue
        return path


def owner(name: str, prefix: str) -> tuple[int, str] | None:
    """(PID, host) of a name owned_name(prefix) made; None for any other name."""
    if not name.startswith(prefix):
        return None
    m = _OWNED.fullmatch(name[len(prefix) :])
    return (int(m["pid"]), m["host"]) if m else None


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs, as os.kill(pid, 0) tells: a process
    we may not signal runs; one that has exited and is not yet reaped (a zombie) does not.
    Outside POSIX nothing is judged dead (os.kill would end the process)."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # no process has such a number
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc here: alive
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _gone(name: str, prefix: str) -> bool:
    """`name` was made (owned_name) by a process of this machine, not this one, that is gone."""
    made = owner(name, prefix)
    if made is None or made[1] != _host():
        return False
    if made[0] == os.getpid():
        return name.rsplit("-", 1)[1] not in _OWN_TOKENS
    return not process_alive(made[0])


def _names(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []


def _delete(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _report(removed: list[Path], where: str) -> None:
    if removed:
        names = ", ".join(p.name for p in removed)
        log.warning(
            "removed %d leftover(s) of runs whose process is gone %s: %s",
            len(removed),
            where,
            names,
        )


def remove_leftovers(parent: Path, prefix: str) -> list[Path]:
    """Remove the entries of `parent` named owned_name(prefix) whose process, on this
    machine, is gone, saying so on stderr (a logging warning); return them. Those of a live
    process (or of a PID now reused), of another machine or of any other name stay."""
    parent = Path(parent)
    removed = [parent / name for name in _names(parent) if _gone(name, prefix)]
    for path in removed:
        _delete(path)
    _report(removed, f"in {parent}")
    return removed


def remove_output_leftovers(target: Path) -> list[Path]:
    """Remove what runs of this machine whose process is gone left beside the output folder
    `target`: folders they were writing (.NAME.tmp-*) or removing (.NAME.old-*, and the
    .NAME.old-PID of earlier versions of this package) and links they had not put in place
    (.NAME.link-*), saying so on stderr (a logging warning); and, silently, finished folders
    `target` does not point to (.NAME.v-*): the version the last run replaced, kept until now
    for its readers, or one a killed run never published. Return what was removed."""
    target = Path(target)
    found = {name: kind for name in _names(target.parent) if (kind := _left(name, target))}
    for name in found:
        _delete(target.parent / name)
    _report([target.parent / n for n, k in found.items() if k == "leftover"], f"beside {target}")
    return [target.parent / name for name in found]


def _left(name: str, target: Path) -> str | None:
    """What `name`, beside `target`, is when a run of this machine that is gone left it and it
    may go: a "leftover" or a "version" (no longer published); None otherwise."""
    prefix = {kind: _output_prefix(target, kind) for kind in ("tmp", "old", "link", "v")}
    if any(_gone(name, prefix[k]) for k in ("tmp", "old", "link")):
        return "leftover"
    if _legacy_old(name, prefix["old"]):
        return "leftover"
    # the link is read after the process was found gone: only it could point `target` here
    if _gone(name, prefix["v"]) and _our_version(target) != name:
        return "version"
    # a version not published within VERSION_GRACE was replaced or abandoned, whichever
    # machine made it (runs from a new host or pod each time would otherwise pile them up)
    if owner(name, prefix["v"]) and _our_version(target) != name and _older(target, name):
        return "version"
    return None


VERSION_GRACE = 3600.0  # seconds: publishing follows a finished version within milliseconds


def _older(target: Path, name: str) -> bool:
    try:
        age = time.time() - (target.parent / name).lstat().st_mtime
    except OSError:
        return False
    return age > VERSION_GRACE


def _legacy_old(name: str, prefix: str) -> bool:
    """.NAME.old-PID: a previous output earlier versions were removing when stopped."""
    pid = name.removeprefix(prefix)
    return (
        name.startswith(prefix)
        and pid.isdigit()
        and int(pid) != os.getpid()
        and not process_alive(int(pid))
    )


# -- Signals: SIGTERM and SIGINT stop a command cleanly --------------------------------------


class Terminated(BaseException):
    """SIGTERM or SIGINT arrived while `exit_on_signals` was in force. A BaseException, as
    KeyboardInterrupt is, so that `except Exception` does not swallow it while every `finally`
    and context manager on the way out runs."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class _Stop:
    """What exit_on_signals knows: its handler is in place, the signal received, and how
    deep the run is in sections that a signal does not interrupt."""

    def __init__(self) -> None:
        self.installed = False
        self.received: int | None = None
        self.waiting = 0


_STOP = _Stop()
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _on_signal(signum: int, frame: object) -> None:
    if _STOP.received is not None:
        return  # stopping already: let the clean-up finish
    _STOP.received = signum
    if not _STOP.waiting:
        raise Terminated(signum)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """Run the block (a command) so that SIGTERM and SIGINT stop it cleanly: the signal raises
    Terminated where the program is (DuckDB turns it into "Query interrupted"; either way),
    every `finally` and context manager on the way out runs — atomic_dir removes its folder
    and keeps the previous output, duckdb_session its spill folder — and the process exits
    with 128 + the signal (143 for SIGTERM, 130 for SIGINT), saying so on stderr. A second
    signal while it cleans up is ignored (SIGKILL ends it at once; the next run removes what
    is left). For the CLI's entry point, never on import; the previous handlers come back."""
    previous = {s: signal.signal(s, _on_signal) for s in _STOP_SIGNALS}
    _STOP.installed, _STOP.received = True, None
    try:
        yield
    except BaseException:
        if _STOP.received is None:
            raise
    finally:
        received = _STOP.received
        _STOP.installed, _STOP.received = False, None
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received is not None:
        name = signal.Signals(received).name
        print(f"stopped by {name}: temporary files removed", file=sys.stderr)
        raise SystemExit(128 + received)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """A section that SIGTERM/SIGINT (under exit_on_signals) do not interrupt: making a
    temporary folder and arming its clean-up, publishing an output. One that arrives
    meanwhile stops the run (Terminated) when the section ends."""
    _STOP.waiting += 1
    try:
        yield
    finally:
        _STOP.waiting -= 1
    if not _STOP.waiting and _STOP.installed and _STOP.received is not None:
        raise Terminated(_STOP.received)


@contextlib.contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """Put exit_on_signals' handlers back should the block replace them: starting Spark
    installs a SIGINT handler of its own, which raises KeyboardInterrupt (exit 1)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in saved.items():
            if handler is _on_signal and signal.getsignal(s) is not _on_signal:
                signal.signal(s, handler)


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


def write_text_atomic(out: Path, text: str, failure: str) -> None:
    """`text` as the file `out`, atomically: a temporary file beside it (leftovers of dead
    processes removed first), fsync, then one rename; nothing is left behind on failure or a
    stop (KeyboardInterrupt). An OSError becomes OutputError(f"{failure}: {why}")."""
    from loyalty_model.errors import OutputError

    prefix = f".{out.name}.tmp-"
    remove_leftovers(out.parent, prefix)  # of a run whose process is gone
    tmp = out.parent / owned_name(prefix)
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OutputError(f"{failure}: {e.strerror or e}") from e
        raise


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


def table_digests(data_dir: Path) -> dict[str, dict[str, str]]:
    """Per table: where it is (absolute path) and the sha256 of its bytes (`fingerprint`)."""
    out = {}
    for name in TABLES:
        src = table_source(data_dir, name)
        out[name] = {"path": str(src.absolute()), "sha256": fingerprint(src)}
    return out


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


def read_frame(path: Path, fmt: str):
    """A pandas frame from one parquet or csv file, or from a folder of part files (what
    the Spark engine writes), read in name order."""
    import pandas as pd

    path = Path(path)
    parts = sorted(path.glob(f"*.{fmt}")) if path.is_dir() else [path]
    if fmt == "parquet":
        return pq.read_table(parts[0] if len(parts) == 1 else parts).to_pandas()
    return pd.concat(
        [pd.read_csv(p, dtype={"follower_id": str, "influencer_id": str}) for p in parts],
        ignore_index=True,
    )


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
