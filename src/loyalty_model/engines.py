"""Engine connections. DuckDB in-process is the embedded default; Spark (the `[spark]` extra)
is the scale-out engine. pyspark is imported inside the functions that need it, never at
import time."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import duckdb
from pydantic import ValidationError

from loyalty_model import io
from loyalty_model.config import DuckDBConfig, SparkConfig
from loyalty_model.errors import ConfigError, DataError, OutputError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

Settings = TypeVar("Settings", DuckDBConfig, SparkConfig)

# environment settings of the machine a job runs on win over the task config
ENV_MEMORY_LIMIT = "LOYALTY_DUCKDB_MEMORY_LIMIT"
ENV_THREADS = "LOYALTY_DUCKDB_THREADS"
ENV_TEMP_DIRECTORY = "LOYALTY_DUCKDB_TEMP_DIRECTORY"
ENV_TEMP_ROOT = "LOYALTY_DUCKDB_TEMP_ROOT"
ENV_SPARK_MASTER = "LOYALTY_SPARK_MASTER"
ENV_SPARK_DRIVER_MEMORY = "LOYALTY_SPARK_DRIVER_MEMORY"
ENV_SPARK_EXECUTOR_MEMORY = "LOYALTY_SPARK_EXECUTOR_MEMORY"
ENV_SPARK_SHUFFLE_PARTITIONS = "LOYALTY_SPARK_SHUFFLE_PARTITIONS"


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
    try:
        con.execute(
            "SET enable_progress_bar = false"
        )  # ours report progress; DuckDB's litters logs
    except duckdb.InvalidInputException as exc:
        # a Jupyter kernel without ipywidgets: DuckDB refuses to change the setting, as it
        # cannot draw a bar there at all (duckdb/duckdb#6831); nothing to turn off
        if "progress bar" not in str(exc):
            raise
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
        "temp_root": ENV_TEMP_ROOT,
    }
    return _with_environment(cfg, names, "LOYALTY_DUCKDB_*")


def _with_environment(cfg: Settings, names: dict[str, str], family: str) -> Settings:
    """`cfg` with the fields named in `names` (field -> environment variable) taken from the
    environment where set; a bad value is one line naming the variable."""
    given = {k: os.environ[v] for k, v in names.items() if os.environ.get(v)}
    if not given:
        return cfg
    try:
        return type(cfg).model_validate({**cfg.model_dump(), **given})
    except ValidationError as exc:
        e = exc.errors()[0]
        field = str(e["loc"][0]) if e["loc"] else ""
        where = names.get(field, family)
        msg = e["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}={given.get(field)!r}: {msg}") from None


@contextlib.contextmanager
def duckdb_session(cfg: DuckDBConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with the config's (and environment's) memory cap, threads and spill
    folder, closed and cleaned up afterwards. Unless duckdb.temp_directory is set, the spill
    folder is a fresh one under duckdb.temp_root (`spill_folder`), removed afterwards: also
    when SIGTERM or SIGINT stops the run (io.exit_on_signals); the next run removes one that
    SIGKILL left."""
    s = duckdb_settings(cfg)
    with contextlib.ExitStack() as stack:
        spill = s.temp_directory
        if spill is None:
            with io.signals_deferred():  # SIGTERM meanwhile: raised once the removal is armed
                spill = spill_folder(s.temp_root)
                stack.callback(shutil.rmtree, spill, ignore_errors=True)
        try:
            con = duckdb_connection(s.threads, s.memory_limit, str(spill))
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"duckdb settings {s.model_dump(mode='json')}: {first}") from None
        stack.callback(con.close)
        try:
            yield con
        except duckdb.OutOfMemoryException as exc:
            raise ConfigError(
                f"DuckDB ran out of memory (duckdb.memory_limit {s.memory_limit}): {_line(exc)}"
            ) from exc
        except duckdb.IOException as exc:  # most often a full disk under the spill folder
            raise OutputError(
                f"DuckDB: {_line(exc)} (spill folder {spill}: set duckdb.temp_directory or "
                "duckdb.temp_root to a disk with room, or raise duckdb.memory_limit)"
            ) from exc


SPILL_PREFIX = "loyalty-spill-"


def spill_folder(root: Path | None) -> Path:
    """A new spill folder loyalty-spill-PID-HOST-RANDOM (private to its user) under `root`
    (default: the system temp folder), made when missing. The spill folders there of
    processes of this machine that are gone (a run killed by SIGKILL) are removed first,
    with a warning; a live run's are never touched."""
    root = Path(root) if root is not None else Path(tempfile.gettempdir())
    try:
        root.mkdir(parents=True, exist_ok=True)
        io.remove_leftovers(root, SPILL_PREFIX)
        return io.make_owned_dir(root, SPILL_PREFIX, mode=0o700)
    except OSError as exc:
        raise ConfigError(
            f"duckdb.temp_root {root}: cannot make a spill folder there: {exc.strerror or exc} "
            f"(set duckdb.temp_root or {ENV_TEMP_ROOT} to a writable folder)"
        ) from None


def _line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one line (DuckDB's wrap across lines)."""
    return " ".join(str(exc).split())[:limit]


def ibis_tables(con: duckdb.DuckDBPyConnection, names: list[str] | tuple[str, ...]) -> dict:
    """Ibis tables over views already registered on a DuckDB connection (see io.register_tables)."""
    import ibis

    backend = ibis.duckdb.from_connection(con)
    return {name: backend.table(name) for name in names}


# -- Spark ----------------------------------------------------------------------------------


def spark_settings(cfg: SparkConfig) -> SparkConfig:
    """The config's Spark settings with the environment's (LOYALTY_SPARK_*) applied: the
    machine or the scheduler a job runs on says where Spark is, the task config what to do."""
    names = {
        "master": ENV_SPARK_MASTER,
        "driver_memory": ENV_SPARK_DRIVER_MEMORY,
        "executor_memory": ENV_SPARK_EXECUTOR_MEMORY,
        "shuffle_partitions": ENV_SPARK_SHUFFLE_PARTITIONS,
    }
    return _with_environment(cfg, names, "LOYALTY_SPARK_*")


def spark_preflight(cfg: SparkConfig) -> SparkConfig:
    """The settings (environment applied) once the cheap checks pass: pyspark installed, a
    Java runtime where Spark's launcher looks for one, a cluster master that answers.

    Each failure is a one-line ConfigError, in a second rather than after a JVM start: a
    missing `java` otherwise surfaces as "Java gateway process exited before sending its port
    number", and an unreachable standalone master as a context that starts and is killed a
    minute later ("All masters are unresponsive")."""
    s = spark_settings(cfg)
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the spark engine needs pyspark: pip install 'loyalty-model[spark]' (and Java 17)"
        ) from None
    _check_java()
    _check_master(s.master)
    return s


def _check_java() -> None:
    """Spark's launcher runs $JAVA_HOME/bin/java when JAVA_HOME is set, else `java` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = os.path.join(home, "bin", "java")
        if not os.access(java, os.X_OK):
            raise ConfigError(
                f"the spark engine needs Java 17: JAVA_HOME={home} has no bin/java; "
                "set JAVA_HOME to a JDK or unset it to use java on PATH"
            )
    elif shutil.which("java") is None:
        raise ConfigError(
            "the spark engine needs Java 17: no java on PATH and JAVA_HOME is not set; "
            "install a JDK (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )


def _check_master(master: str, timeout: float = 5.0) -> None:
    """A standalone (spark://h1:p1,h2:p2) or Kubernetes (k8s://https://host:port) master must
    accept a TCP connection on one of its addresses; local and yarn have nothing to reach."""
    if master.startswith("spark://"):
        addresses = [_host_port(a, 7077) for a in master[len("spark://") :].split(",")]
    elif master.startswith("k8s://"):
        url = urlsplit(master[len("k8s://") :])
        addresses = [(url.hostname or "", url.port or (80 if url.scheme == "http" else 443))]
    else:
        return
    reasons = []
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            reasons.append(f"{host}:{port} ({exc.strerror or exc})")
    raise ConfigError(f"spark.master {master}: cannot reach {', '.join(reasons)}")


def _host_port(address: str, default: int) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        return address.strip(), default
    return host, int(port)


@contextlib.contextmanager
def spark_session(cfg: SparkConfig) -> Iterator[SparkSession]:
    """A Spark session of the config's (and environment's) settings, for one run.

    Spark runs one context per process, and starting one costs 10-20 s. A context already
    running here (a notebook's, a test session's) is reused as it is: its master must be the
    one asked for, since a running JVM cannot move; its memory stays what it was started
    with. A context this call starts, it stops at the end: whoever starts Spark stops it
    (start one yourself to keep it across calls).

    The run gets a session of its own over that context (`newSession`): its own temporary
    views (the tables) and SQL settings — UTC as the session time zone, Arrow for pandas
    transfers, the shuffle partitions, the spark.sql.* keys of `conf` — so it neither sees
    nor changes the caller's session. On a local master the Python workers run this
    interpreter (PYSPARK_PYTHON, when unset), which has this package and LightGBM installed;
    on a cluster, PYSPARK_PYTHON must name a Python that has them on every node.
    """
    s = spark_preflight(cfg)
    from pyspark.sql import SparkSession

    from loyalty_model.compat import running_spark_context

    running = running_spark_context()
    if running is not None:
        if running.master != s.master:
            raise ConfigError(
                f"spark.master {s.master}: this process already runs Spark on {running.master} "
                "(one per process); use that master or stop the running session first"
            )
        base, started = SparkSession.builder.getOrCreate(), False
    else:
        if s.master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder.master(s.master).appName(s.app_name)
        for key, value in {**_static_conf(s), **_sql_conf(s)}.items():
            builder = builder.config(key, value)
        try:
            with io.signal_handlers_kept():  # Spark's own SIGINT handler would exit 1
                base, started = builder.getOrCreate(), True
        except Exception as exc:  # the JVM did not start: the message is Spark's first line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"cannot start Spark (spark.master {s.master}): {first}") from None
    try:
        session = base.newSession()
        for key, value in _sql_conf(s).items():
            session.conf.set(key, value)
        yield session
    finally:
        if started:
            base.stop()


def _static_conf(s: SparkConfig) -> dict[str, str]:
    """Settings fixed when the JVM starts (the builder passes them to it). Spark's console
    progress bars and its WARN lines are off, as DuckDB's bar is: in a log they bury our
    output (set spark.log.level=WARN in `conf` to see them)."""
    fixed = {
        "spark.driver.memory": s.driver_memory,
        "spark.executor.memory": s.executor_memory,
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": "ERROR",
    }
    return fixed | {k: v for k, v in s.conf.items() if not k.startswith("spark.sql.")}


def _sql_conf(s: SparkConfig) -> dict[str, str]:
    """Settings of each session: the contract's timestamps are UTC instants; Arrow moves
    columns between the JVM and pandas (and is what mapInPandas runs on); parquet timestamps
    written as microseconds adjusted to UTC, the type the DuckDB engine writes."""
    ours = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": str(s.shuffle_partitions),
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }
    # the session time zone stays UTC whatever spark.conf says: the features' day numbers
    # (and the BG/NBD fits keyed by them) read the instants as UTC days
    theirs = {k: v for k, v in s.conf.items() if k.startswith("spark.sql.")}
    return ours | theirs | {"spark.sql.session.timeZone": "UTC"}


@contextlib.contextmanager
def spark_job(what: str) -> Iterator[None]:
    """A Spark job that fails (an executor out of memory, a disk full, a value Spark cannot
    cast, a worker without a package) as one line naming what was running, rather than a
    Java stack trace: a DataError, exit 2."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        yield
    except (Py4JJavaError, PySparkException) as exc:
        text = str(getattr(exc, "java_exception", None) or exc).strip()
        first = text.splitlines()[0][:300] if text else type(exc).__name__
        raise DataError(f"spark: {what} failed: {first}") from exc
