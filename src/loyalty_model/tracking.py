"""MLflow: the only module that imports mlflow.

Runs, metrics, artifacts, and the registry with aliases (MLflow 3: no stages). The logged
model is a pyfunc that returns probabilities of brand-loyal conversion, never class labels.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from loyalty_model.config import Config, TrackingConfig
from loyalty_model.errors import ModelError
from loyalty_model.model import BOOSTER_FILE, SPEC_FILE, LoyaltyModel

if TYPE_CHECKING:
    from loyalty_model.training import RunRecord
    from loyalty_model.tuning import TrialResult

DEFAULT_URI = "sqlite:///mlflow.db"
CHALLENGER, CHAMPION = "challenger", "champion"


class _NoCloudPickleNotice(logging.Filter):
    """The pyfunc class is ours and ships in this package; the pickle notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CloudPickle" not in record.getMessage()


def _quiet() -> None:
    """MLflow's info chatter hides our own output; keep its warnings."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    if not any(isinstance(f, _NoCloudPickleNotice) for f in pyfunc_log.filters):
        pyfunc_log.addFilter(_NoCloudPickleNotice())
    warnings.filterwarnings("ignore", message=".*Integer columns.*", module="mlflow")


def tracking_uri(cfg: TrackingConfig) -> str:
    """MLFLOW_TRACKING_URI wins, then the config, else an embedded sqlite file in the cwd."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri or DEFAULT_URI


def _point_at(uri: str) -> None:
    """Point MLflow at `uri`.

    `mlflow.set_tracking_uri` also writes MLFLOW_TRACKING_URI into the environment (for
    subprocesses); left there, the first store a process used would win over every later
    config (a notebook training into one store could never score from another). The user's
    own environment is put back."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@contextlib.contextmanager
def _store(cfg: TrackingConfig) -> Iterator[str]:
    """MLflow pointed at the store of `cfg`, ready to use; yields its URI.

    Every function of this module that talks to the store runs inside this block. A tracking
    server (http/https) must answer its health check within `cfg.timeout_seconds`, and MLflow's
    own HTTP retries are bounded by the same total while the block runs. A database store is
    opened (created and migrated when new or old) before anything else touches it, under a
    file lock for a sqlite file, so that two processes starting on a new store do not run
    MLflow's migrations at the same time. The user's environment is put back afterwards."""
    uri = tracking_uri(cfg)
    http = _is_http(uri)
    with _environ(_http_limits(cfg.timeout_seconds) if http else {}):
        _point_at(uri)
        if http:
            _wait_for_server(uri, cfg.timeout_seconds)
        elif _is_database(uri):
            _open_database(uri)
        yield uri


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Environment variables set for the block, then put back as they were."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""


def _is_http(uri: str) -> bool:
    return _scheme(uri) in ("http", "https")


def _is_database(uri: str) -> bool:
    return _scheme(uri) in ("sqlite", "postgresql", "mysql", "mssql")


def _shown(uri: str) -> str:
    """The URI as it may be printed: no user name or password."""
    if _is_http(uri):
        parts = urllib.parse.urlsplit(uri)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    if _is_database(uri):
        from sqlalchemy.engine import make_url

        with contextlib.suppress(Exception):
            return make_url(uri).render_as_string(hide_password=True)
    return uri


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --- a database store: opened (created, migrated) under a lock ------------------------------


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite URI (None: not sqlite, or in memory)."""
    if _scheme(uri) != "sqlite":
        return None
    from sqlalchemy.engine import make_url

    try:
        database = make_url(uri).database
    except Exception:  # an unparsable URI: MLflow says what is wrong with it
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on the sqlite store of `uri` (a no-op for other stores): the file
    DB.lock beside the database, `flock`ed.

    POSIX only (`fcntl`; elsewhere no lock is taken), and only between processes that see the
    same local file system (flock is not reliable over NFS). The lock goes with its process:
    a killed process never leaves the store locked."""
    path = _sqlite_file(uri)
    fd = None if path is None else _lock_fd(path, uri)
    if fd is None:
        yield
        return
    import fcntl

    try:
        waited = time.monotonic() + 1.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= waited:
                    print(
                        f"waiting for another process that is setting up the tracking store "
                        f"{path} (lock {path.name}.lock)",
                        file=sys.stderr,
                        flush=True,
                    )
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    break
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock_fd(path: Path, uri: str) -> int | None:
    """An open descriptor of the store's lock file, or None when no lock can or need be taken:
    no fcntl (not POSIX), or a read-only folder holding a store that already exists."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - not POSIX
        return None
    lock = path.with_name(path.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        return os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if path.exists():
            return None  # nothing to create; MLflow says if it cannot read the store
        raise ModelError(
            f"cannot create the tracking store {_shown(uri)}: {exc.strerror or exc} ({lock}); "
            "point MLFLOW_TRACKING_URI (or tracking.uri) at a folder you can write"
        ) from exc


def _open_database(uri: str) -> None:
    """Open the tracking and registry stores once, which makes MLflow create the tables of a
    new store and migrate an old one; under the store's lock, so only one process migrates
    and the others find the tables made. A store that cannot be opened is one line that says
    how to recover."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    with _store_lock(uri):
        try:
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
        except (MlflowException, SQLAlchemyError, CommandError, sqlite3.Error) as exc:
            raise ModelError(_broken_store(uri, exc)) from exc


def _broken_store(uri: str, exc: BaseException) -> str:
    shown, what = _shown(uri), _first_line(exc)
    path = _sqlite_file(uri)
    if path is None or not path.exists():
        return (
            f"tracking store {shown} cannot be opened or migrated ({what}); back it up, then run "
            f"`mlflow db upgrade {shown}` if its schema is out of date, or point "
            "MLFLOW_TRACKING_URI (or tracking.uri) at another store"
        )
    path = path.resolve()  # a batch job's cwd is not the reader's
    left, tables = _migration_leftovers(path)
    if left:
        missing = [t for t in left if t.removeprefix("_alembic_tmp_") not in tables]
        if missing:
            return (
                f"tracking store {shown} is broken: a schema migration stopped half-way and left "
                f"{', '.join(missing)} in place of {', '.join(_orig(t) for t in missing)} "
                f"({what}); restore {path} from a backup, or move it aside to start a new store"
            )
        drops = "; ".join(f"DROP TABLE {t}" for t in left)
        return (
            f"tracking store {shown} is broken: a schema migration stopped half-way and left "
            f"the table{'s' if len(left) > 1 else ''} {', '.join(left)} ({what}); back up "
            f"{path}, then run: sqlite3 {path} '{drops}' and retry (MLflow finishes the "
            "migration), or move the file aside to start a new store"
        )
    return (
        f"tracking store {shown} cannot be opened or migrated ({what}); back up {path}, then run "
        f"`mlflow db upgrade {shown}` if its schema is out of date, or move the file aside to "
        "start a new store"
    )


def _orig(table: str) -> str:
    return table.removeprefix("_alembic_tmp_")


def _migration_leftovers(path: Path) -> tuple[list[str], set[str]]:
    """The `_alembic_tmp_*` tables of a sqlite file (an interrupted migration leaves them)
    and every table's name; nothing when the file cannot be read."""
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return [], set()
    tables = {r[0] for r in rows}
    return sorted(t for t in tables if t.startswith("_alembic_tmp_")), tables


# --- a tracking server: it must answer, and MLflow's retries fit in the timeout --------------

# MLflow's HTTP client (mlflow.utils.rest_utils.http_request) reads these on every request.
# Its defaults (7 retries, backoff factor 2, 120 s per request) wait about 4 minutes for a
# server that is down; inside `_store` they are lowered so that one request, retries
# included, fits in tracking.timeout_seconds.
_HTTP_TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"  # seconds per attempt (int)
_HTTP_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"  # retries after the first attempt (int)
_HTTP_BACKOFF = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"  # sleep factor * 2**(n-1) (int)
_HTTP_JITTER = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"  # plus up to this much at random (float)
_HTTP_RETRY_AFTER = "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER"  # a server's Retry-After: unbounded


def _http_worst_case(retries: int, per_try: float, factor: float, jitter: float) -> float:
    """Seconds one MLflow request may take at worst: every attempt times out, and urllib3's
    backoff sleeps 0 after the first failure and factor * 2**(n-1) + jitter after the nth."""
    sleeps = sum(factor * 2 ** (n - 1) + jitter for n in range(2, retries + 1))
    return (retries + 1) * per_try + sleeps


def _user_number(name: str, default: float) -> float:
    try:
        value = float(os.environ[name])
    except (KeyError, ValueError):
        return default
    return value if value >= 0 else default


def _http_limits(total: float) -> dict[str, str]:
    """MLflow HTTP settings under which one request, retries included, takes at most about
    `total` seconds (an attempt is bounded per socket operation, not in all). A user's own
    lower settings are kept."""
    per_try = max(1, int(min(_user_number(_HTTP_TIMEOUT, 120), total // 4)))
    factor = int(min(_user_number(_HTTP_BACKOFF, 1), 1))
    jitter = min(_user_number(_HTTP_JITTER, 0.5), 0.5)
    most = int(min(_user_number(_HTTP_RETRIES, 7), 7))
    retries = 0
    while retries < most and _http_worst_case(retries + 1, per_try, factor, jitter) <= total:
        retries += 1
    return {
        _HTTP_TIMEOUT: str(per_try),
        _HTTP_RETRIES: str(retries),
        _HTTP_BACKOFF: str(factor),
        _HTTP_JITTER: str(jitter),
        _HTTP_RETRY_AFTER: "false",
    }


def _health_url(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]  # no credentials: /health needs none
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", "")
    )


def _no_answer(url: str, timeout: float) -> str | None:
    """Why the server behind `url` does not answer, or None when it does. Any HTTP answer but a
    gateway's 502/503/504 counts, and so does a TLS handshake (certificates are MLflow's
    business: it has its own settings for them)."""
    import http.client
    import ssl

    try:
        with urllib.request.urlopen(url, timeout=timeout):  # http(s) only: _is_http
            return None
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code}" if exc.code in (502, 503, 504) else None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return None
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout:.0f} s"
        if isinstance(reason, OSError):
            return (reason.strerror or str(reason)).lower()
        return str(reason)
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except ssl.SSLError:
        return None
    except (OSError, http.client.HTTPException) as exc:
        return _first_line(exc).lower()


def _wait_for_server(uri: str, total: float) -> None:
    """Return when the tracking server answers its health check; retry (saying so on stderr)
    until `total` seconds have passed, then raise a one-line ModelError."""
    url, shown = _health_url(uri), _shown(uri)
    deadline = time.monotonic() + total
    delay, said_at = 0.5, None
    while True:
        reason = _no_answer(url, timeout=max(0.2, min(5.0, deadline - time.monotonic())))
        if reason is None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise ModelError(
                f"tracking server {shown} does not answer ({reason}) after {total:g} s: start "
                "it, or point MLFLOW_TRACKING_URI (or tracking.uri) at one that runs; "
                "tracking.timeout_seconds sets how long to wait"
            )
        if said_at is None or said_at - left >= 5:
            print(
                f"tracking server {shown} does not answer ({reason}); "
                f"retrying for {math.ceil(left)} s more",
                file=sys.stderr,
                flush=True,
            )
            said_at = left
        time.sleep(min(delay, left))
        delay = min(delay * 2, 4.0)


def _set_alias(
    client: MlflowClient, name: str, alias: str, version: str, only_if_absent: bool = False
) -> bool:
    """Point `alias` at `version` (with `only_if_absent`, only when it points nowhere yet);
    whether it was set. Two runs setting one alias at the same moment through a tracking
    server both insert it, and the store's unique key fails one of them (BAD_REQUEST,
    IntegrityError): that one tries again and then sees the row."""
    for attempt in range(5):
        if only_if_absent:
            try:
                client.get_model_version_by_alias(name, alias)
                return False
            except MlflowException as exc:
                if not _absent(exc):
                    raise
        try:
            client.set_registered_model_alias(name, alias, version)
            # setting is an upsert: of two runs that both saw no alias, the later one wins;
            # read it back so that the earlier one does not also report it as its own
            return str(client.get_model_version_by_alias(name, alias).version) == version
        except MlflowException:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    return False


def _absent(exc: MlflowException) -> bool:
    """MLflow's answer for a model or alias that is not there (not: a store that failed)."""
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class LoyaltyPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: a feature frame in, a `p_loyal` column of probabilities out. Logged as
    code (PYFUNC_CODE, MLflow "models from code"), so the logged model holds no pickle."""

    def load_context(self, context) -> None:
        folder = Path(context.artifacts["model_dir"])
        self.model = LoyaltyModel.load(folder)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"p_loyal": self.model.predict_proba(model_input)})


# the file MLflow runs to build the pyfunc when someone loads the model with
# mlflow.pyfunc.load_model: the class comes from the installed package, the state from the
# model's native files (booster text, JSON spec and calibration); nothing is unpickled
PYFUNC_CODE = '''"""loyalty_model's pyfunc, logged as code: no pickle in this model."""

import mlflow

from loyalty_model.tracking import LoyaltyPyfunc

mlflow.models.set_model(LoyaltyPyfunc())
'''
MODEL_FILES = "model_dir"  # the pyfunc's artifact holding the native model files


@dataclass(frozen=True)
class Registered:
    run_id: str
    name: str
    version: str
    aliases: tuple[str, ...]
    uri: str
    artifact_uri: str  # the run's artifact root


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{p}=={version(p)}"
        for p in ("mlflow", "lightgbm", "pandas", "numpy", "scikit-learn", "loyalty-model")
    ]


# --- lineage: the source tree's commit, the input tables, the version's description --------

GIT_COMMIT, GIT_DIRTY, GIT_DIRTY_FILES = "git_commit", "git_dirty", "git_dirty_files"
MLFLOW_GIT_COMMIT, MLFLOW_GIT_BRANCH = "mlflow.source.git.commit", "mlflow.source.git.branch"
MLFLOW_GIT_DIRTY, MLFLOW_GIT_REPO = "mlflow.source.git.dirty", "mlflow.source.git.repoURL"
UNKNOWN = "unknown"
GIT_TIMEOUT = 5.0  # seconds for all the git calls of one lookup
INPUT_CONTEXT = "training"
DIGEST_CHARS = 36  # MLflow's limit on a dataset digest (String(36) in its stores)


def _git(folder: Path, args: list[str], deadline: float) -> str | None:
    """stdout of `git -C folder ARGS`, or None when git is missing, fails or is too slow.
    GIT_OPTIONAL_LOCKS=0: `git status` must not take the index lock of a checkout that
    people (or other processes) are working in."""
    import subprocess

    left = deadline - time.monotonic()
    if left <= 0:
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=left,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def source_lineage(folder: Path | None = None, timeout: float = GIT_TIMEOUT) -> dict[str, str]:
    """Tags naming the source this package runs from: the git commit of its checkout and
    whether it differs from the commit (`git_commit`, `git_dirty`, the files that differ in
    `git_dirty_files`, and MLflow's `mlflow.source.git.*` tags). Dirty: a tracked file changed
    anywhere in the checkout, or a file in the package's folder that git does not track (code
    that ran but is in no commit); other untracked files (notes, data) do not count.

    `folder` (default: this package's folder) must hold a file git tracks: an installed copy
    (site-packages, even inside a checkout) has no commit. No git, no checkout, a git that
    does not answer within `timeout` seconds: `unknown`; never an error."""
    folder = Path(__file__).resolve().parent if folder is None else Path(folder)
    unknown = {GIT_COMMIT: UNKNOWN, GIT_DIRTY: UNKNOWN}
    deadline = time.monotonic() + timeout
    tracked = _git(folder, ["ls-files", "--error-unmatch", "--", "__init__.py"], deadline)
    head = _git(folder, ["rev-parse", "HEAD", "--abbrev-ref", "HEAD"], deadline)
    if tracked is None or head is None or len(head.split()) != 2:
        return unknown
    commit, branch = head.split()
    changed = _git(folder, ["status", "--porcelain", "--untracked-files=no"], deadline)
    new = _git(folder, ["ls-files", "--others", "--exclude-standard"], deadline)
    if changed is None or new is None:
        return {GIT_COMMIT: commit, GIT_DIRTY: UNKNOWN, MLFLOW_GIT_COMMIT: commit}
    files = [line[3:] for line in changed.splitlines() if line.strip()]
    files += [f"{f} (untracked)" for f in new.splitlines() if f.strip()]
    dirty = "true" if files else "false"
    tags = {
        GIT_COMMIT: commit,
        GIT_DIRTY: dirty,
        MLFLOW_GIT_COMMIT: commit,
        MLFLOW_GIT_DIRTY: dirty,
    }
    if branch != "HEAD":  # HEAD: a detached checkout
        tags[MLFLOW_GIT_BRANCH] = branch
    if files:
        shown = ", ".join(files[:20]) + (f" (+{len(files) - 20} more)" if len(files) > 20 else "")
        tags[GIT_DIRTY_FILES] = shown[:5000]
    return tags


def _drop_foreign_git_tags(
    client: MlflowClient, run_id: str, tags: Mapping[str, str], lineage: Mapping[str, str]
) -> None:
    """MLflow tags a new run with the git checkout of the script that launched the process
    (often none: a venv's bin/ is ignored), which need not be this package's: only the git
    tags of `lineage` are kept. Its remote URL (which may hold a token) is never kept."""
    for key in (MLFLOW_GIT_COMMIT, MLFLOW_GIT_BRANCH, MLFLOW_GIT_DIRTY, MLFLOW_GIT_REPO):
        if key in tags and key not in lineage:
            client.delete_tag(run_id, key)


INPUT_ATTEMPTS = 4  # tries of logging the input tables when another run logs them at once


def _log_inputs(inputs: Mapping[str, Mapping[str, str]]) -> None:
    """Each input table as an MLflow dataset input of context `training`: named by the table,
    its source the file (or folder), its digest the first DIGEST_CHARS hex characters of the
    sha256 the prediction manifest records; the whole sha256 is the input's tag `sha256`."""
    if not inputs:
        return
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from sqlalchemy.exc import SQLAlchemyError

    datasets = []
    with warnings.catch_warnings():  # a local path matches two registered sources: same one
        warnings.simplefilter("ignore", UserWarning)
        for table, info in inputs.items():
            source = resolve_dataset_source(info["path"])
            datasets.append(MetaDataset(source, name=table, digest=info["sha256"][:DIGEST_CHARS]))
    for attempt in range(INPUT_ATTEMPTS):
        try:
            mlflow.log_inputs(
                datasets,
                contexts=[INPUT_CONTEXT] * len(datasets),
                tags_list=[{"sha256": info["sha256"]} for info in inputs.values()],
            )
            return
        except (MlflowException, SQLAlchemyError) as exc:
            # two runs logging the same new dataset at once: the store looks the dataset up,
            # both miss it, and the second insert breaks the unique key (its transaction is
            # rolled back). Again, the lookup finds the one the other run stored.
            if "UNIQUE constraint" not in str(exc) or attempt == INPUT_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _version_description(record: RunRecord, lineage: Mapping[str, str], run_id: str) -> str:
    """The registered version's description: the record's (data window, label, headline
    metrics) and where it came from (run, commit)."""
    commit = lineage.get(GIT_COMMIT, UNKNOWN)
    dirty = {"true": ", with uncommitted changes", "false": ""}.get(
        lineage.get(GIT_DIRTY, UNKNOWN), " (unknown whether it had uncommitted changes)"
    )
    source = "unknown source commit" if commit == UNKNOWN else f"source commit {commit}{dirty}"
    return "\n".join(filter(None, [record.description, f"Run {run_id}, {source}."]))


def _experiment_id(name: str) -> str:
    """The experiment's id, created when new. Not `mlflow.set_experiment`, which would leave
    it active (and in MLFLOW_EXPERIMENT_ID) for whatever the process runs next. Two runs that
    start together on a new store may both try to create it: the second uses the first's."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def log_training_run(
    cfg: Config, model: LoyaltyModel, record: RunRecord, example: pd.DataFrame
) -> Registered:
    """One run: params, metrics, text artifacts, figures, the pyfunc model; register it and
    give it alias `challenger` (and `champion` when there is none yet)."""
    _quiet()
    with _store(cfg.tracking) as uri:
        try:
            return _log_training_run(uri, cfg, model, record, example)
        except MlflowException as exc:
            raise ModelError(
                f"cannot log the training run to the tracking store {_shown(uri)}: "
                f"{_first_line(exc)}"
            ) from exc


def _log_training_run(
    uri: str, cfg: Config, model: LoyaltyModel, record: RunRecord, example: pd.DataFrame
) -> Registered:
    name = cfg.tracking.model_name
    run_in = _experiment_id(cfg.tracking.experiment)
    lineage = source_lineage()
    with (
        mlflow.start_run(experiment_id=run_in, tags=lineage) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        _drop_foreign_git_tags(MlflowClient(), run.info.run_id, run.data.tags, lineage)
        mlflow.log_params({k: str(v)[:500] for k, v in record.params.items()})
        mlflow.log_metrics(record.metrics)
        _log_inputs(record.inputs)
        for filename, text in record.artifacts.items():
            mlflow.log_text(text, filename)
        for filename, fig in record.figures.items():
            mlflow.log_figure(fig, filename)
        mlflow.set_tags(record.tags)
        model_dir = Path(tmp) / "model"
        model.save(model_dir)
        x = example[list(model.spec.names)].copy()
        ints = [c for c in x.columns if pd.api.types.is_integer_dtype(x[c])]
        x[ints] = x[ints].astype("float64")  # counts may be missing at scoring time
        signature = infer_signature(x, pd.DataFrame({"p_loyal": model.predict_proba(x)}))
        code = Path(tmp) / "loyalty_pyfunc.py"
        code.write_text(PYFUNC_CODE)
        info = mlflow.pyfunc.log_model(  # models from code: the class ships in this package
            name="model",
            python_model=str(code),
            artifacts={MODEL_FILES: str(model_dir)},
            signature=signature,
            input_example=x.head(5),
            pip_requirements=_pip_requirements(),
            registered_model_name=name,
            metadata={"feature_spec": model.spec.to_dict(), "files": [BOOSTER_FILE, SPEC_FILE]},
        )
        version = str(info.registered_model_version)
        client = MlflowClient()
        client.update_model_version(
            name, version, description=_version_description(record, lineage, run.info.run_id)
        )
        _set_alias(client, name, CHALLENGER, version)
        aliases = [CHALLENGER]
        # look and set under the store's lock (sqlite), so that of two runs registering at
        # once on a new store only one becomes the champion; a server has no such lock: the
        # store's unique key refuses the second of two at once, which then finds the first's
        with _store_lock(uri):
            if _set_alias(client, name, CHAMPION, version, only_if_absent=True):
                aliases.append(CHAMPION)
        mlflow.set_tag("aliases_at_registration", ",".join(aliases))
        return Registered(
            run.info.run_id,
            name,
            version,
            tuple(aliases),
            f"models:/{name}/{version}",
            run.info.artifact_uri,
        )


def load_pyfunc(uri: str, cfg: TrackingConfig) -> mlflow.pyfunc.PyFuncModel:
    with _store(cfg) as store:
        try:
            return mlflow.pyfunc.load_model(uri)
        except (MlflowException, OSError) as exc:
            raise ModelError(
                f"cannot load model {uri!r} from {_shown(store)}: {_first_line(exc)}"
            ) from exc


@dataclass(frozen=True)
class ModelRef:
    """What identifies a loaded model (recorded in prediction files and manifests)."""

    uri: str
    name: str | None
    version: str | None
    run_id: str | None


def load_for_scoring(uri: str, cfg: TrackingConfig) -> tuple[LoyaltyModel, ModelRef]:
    """The packaged model behind a models:/ or runs:/ URI and what identifies it."""
    _quiet()
    with _store(cfg) as store:
        return _load_for_scoring(uri, store)


def _load_for_scoring(uri: str, store: str) -> tuple[LoyaltyModel, ModelRef]:
    name = version = run_id = None
    try:
        if uri.startswith("models:/"):
            rest = uri[len("models:/") :]
            client = MlflowClient()
            if "@" in rest:
                name, alias = rest.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
            else:
                name, _, ver = rest.partition("/")
                mv = client.get_model_version(name, ver)
            version, run_id = str(mv.version), mv.run_id
        with tempfile.TemporaryDirectory(prefix="loyalty-model-") as tmp:
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            files, logged_run = _native_files(folder, uri)
            model = LoyaltyModel.load(files)
    except (MlflowException, OSError) as exc:
        raise ModelError(
            f"cannot load model {uri!r} from {_shown(store)}: {_first_line(exc)}"
        ) from exc
    return model, ModelRef(uri, name, version, run_id or logged_run)


def read_model_card(run_id: str, cfg: TrackingConfig) -> tuple[str, dict[str, float]]:
    """(the run's model_card.md, its metrics) for the report; one-line ModelError when the
    store does not answer or the run has no card. A sqlite store that does not exist is
    not created: reading a card writes nothing."""
    _quiet()
    uri = tracking_uri(cfg)
    database = _sqlite_file(uri)
    if database is not None and not database.is_file():
        raise ModelError(
            f"no tracking store at {_shown(uri)} (set MLFLOW_TRACKING_URI or --config)"
        )
    with _store(cfg) as store:
        try:
            metrics = dict(MlflowClient().get_run(run_id).data.metrics)
            text = mlflow.artifacts.load_text(f"runs:/{run_id}/model_card.md")
        except (MlflowException, OSError) as exc:
            raise ModelError(
                f"cannot read the model card of run {run_id} from {_shown(store)}: "
                f"{_first_line(exc)}"
            ) from exc
    return text, metrics


def _native_files(folder: Path, uri: str) -> tuple[Path, str | None]:
    """The folder of the model's native files (booster text, JSON spec and calibration), read
    from the MLmodel file (YAML) of a downloaded model, and the run that logged it. Scoring
    reads only these: it neither unpickles nor runs anything from the tracking store."""
    import yaml

    mlmodel = folder / "MLmodel"
    meta = yaml.safe_load(mlmodel.read_text()) if mlmodel.is_file() else None
    flavor = ((meta or {}).get("flavors") or {}).get("python_function") or {}
    path = ((flavor.get("artifacts") or {}).get(MODEL_FILES) or {}).get("path")
    files = folder / path if path else None
    if files is None or not (files / BOOSTER_FILE).is_file() or not (files / SPEC_FILE).is_file():
        raise ModelError(
            f"model {uri!r} is not a loyalty_model model (no {MODEL_FILES} artifact with "
            f"{BOOSTER_FILE} and {SPEC_FILE})"
        )
    return files, meta.get("run_id")


@dataclass(frozen=True)
class Champion:
    model: LoyaltyModel
    version: str


def load_champion(cfg: TrackingConfig) -> Champion | None:
    """The current champion and its version, or None when there is none yet."""
    _quiet()
    with _store(cfg) as store:
        try:
            mv = MlflowClient().get_model_version_by_alias(cfg.model_name, CHAMPION)
        except MlflowException as exc:
            if _absent(exc):
                return None
            raise ModelError(
                f"cannot look up the champion of model {cfg.model_name!r} in {_shown(store)}: "
                f"{_first_line(exc)}"
            ) from exc
        model, _ = _load_for_scoring(f"models:/{cfg.model_name}/{mv.version}", store)
        return Champion(model, str(mv.version))


@dataclass(frozen=True)
class Candidate:
    version: str
    run_id: str
    metrics: dict
    tags: dict
    champion_version: str | None


def candidate(cfg: TrackingConfig, version: str | None) -> Candidate:
    """A registered version (default: the challenger) with its run's metrics, and the
    current champion's version."""
    _quiet()
    with _store(cfg) as store:
        client = MlflowClient()
        name = cfg.model_name
        try:
            mv = (
                client.get_model_version(name, version)
                if version
                else client.get_model_version_by_alias(name, CHALLENGER)
            )
        except MlflowException as exc:
            if not _absent(exc):
                raise ModelError(
                    f"cannot look up model {name!r} in {_shown(store)}: {_first_line(exc)}"
                ) from exc
            what = f"version {version}" if version else f"alias {CHALLENGER}"
            raise ModelError(f"model {name!r} has no {what} in {_shown(store)}") from exc
        try:
            run = client.get_run(mv.run_id)
        except MlflowException as exc:
            raise ModelError(
                f"cannot read the run {mv.run_id} of model {name!r} version {mv.version} in "
                f"{_shown(store)}: {_first_line(exc)}"
            ) from exc
        try:
            champ = str(client.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException as exc:
            if not _absent(exc):
                raise ModelError(
                    f"cannot look up model {name!r} in {_shown(store)}: {_first_line(exc)}"
                ) from exc
            champ = None
        return Candidate(str(mv.version), mv.run_id, run.data.metrics, run.data.tags, champ)


def record_promotion(
    cfg: TrackingConfig, cand: Candidate, promoted: bool, summary: str, forced: bool
) -> None:
    """Log the gate's decision on the candidate's run; move `champion` when promoted."""
    with _store(cfg) as store:
        client = MlflowClient()
        try:
            client.set_tag(cand.run_id, "gate.decision", "promoted" if promoted else "rejected")
            client.set_tag(cand.run_id, "gate.reasons", summary[:5000])
            client.set_tag(cand.run_id, "gate.forced", str(forced).lower())
            client.set_tag(cand.run_id, "gate.champion_before", str(cand.champion_version))
            if promoted:
                client.set_registered_model_alias(cfg.model_name, CHAMPION, cand.version)
        except MlflowException as exc:
            raise ModelError(
                f"cannot record the promotion decision in {_shown(store)}: {_first_line(exc)}"
            ) from exc


# --- the leaderboard: the training runs of an experiment ------------------------------------

TRAINING_TAG = "champion_compared"  # every training run sets it (and no other run does)
HEADLINE = ("test_roc_auc", "test_pr_auc", "test_ece", "test_audience_spearman_rate")
BASELINE_PREFIX = "baseline_"  # baseline_<scorer>_test_<metric> (training.run_record)
_LOWER_IS_BETTER = ("loss", "ece", "brier", "mae", "rmse", "seconds")
RUN_COLUMNS = (
    "run_id",
    "run_name",
    "start_time",
    "status",
    "model_name",
    "model_version",
    "aliases",
    "git_commit",
    "git_dirty",
    "engine",
    "data_dir",
)


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is better: losses, calibration errors (ECE,
    Brier), absolute errors (MAE, RMSE) and durations (seconds)."""
    return any(part in _LOWER_IS_BETTER for part in metric.lower().split("_"))


def training_runs(
    cfg: TrackingConfig, experiment: str, top: int = 10, sort: str | None = None
) -> pd.DataFrame:
    """The training runs of `experiment` (not nested runs, not other runs), one row each
    (columns: RUN_COLUMNS, then each HEADLINE metric and its best baseline, then `sort` when
    it is none of those): the `top` most recent, or the `top` best by metric `sort` (highest
    first, lowest first when `lower_is_better`), runs without it left out. Raises a one-line
    RequestError for an unknown experiment or a metric no training run logged, ModelError
    when the store does not answer."""
    _quiet()
    with _store(cfg) as store:
        try:
            return _training_runs(store, experiment, top, sort)
        except MlflowException as exc:
            raise ModelError(
                f"cannot read the runs of experiment {experiment!r} from {_shown(store)}: "
                f"{_first_line(exc)}"
            ) from exc


def _training_runs(store: str, experiment: str, top: int, sort: str | None) -> pd.DataFrame:
    from loyalty_model.errors import RequestError

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments(max_results=50))
        known = f"; its experiments: {', '.join(names)}" if names else ": it has none"
        raise RequestError(f"no experiment {experiment!r} in {_shown(store)}{known}")
    order = ["attributes.start_time DESC", "attributes.run_id ASC"]
    if sort is not None:  # a store sorts runs without the metric last, whatever the direction
        order.insert(0, f"metrics.`{sort}` {'ASC' if lower_is_better(sort) else 'DESC'}")
    chosen, seen, token = [], None, None
    while len(chosen) < top:
        page = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.{TRAINING_TAG} LIKE '%'",
            order_by=order,
            max_results=max(50, 2 * top),
            page_token=token,
        )
        done = False
        for run in page:
            if "mlflow.parentRunId" in run.data.tags:
                continue
            seen = seen or run
            value = run.data.metrics.get(sort) if sort is not None else 0.0
            if value is None or value != value:  # the rest have no value either
                done = True
                break
            chosen.append(run)
            if len(chosen) == top:
                break
        token = page.token
        if done or not token:
            break
    if sort is not None and seen is not None and not chosen:
        raise RequestError(_unknown_metric(sort, experiment, seen.data.metrics))
    return _leaderboard(client, chosen, sort)


def _unknown_metric(sort: str, experiment: str, logged: Mapping[str, float]) -> str:
    import difflib

    like = difflib.get_close_matches(sort, list(logged), n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(like)}?" if like else f"; e.g. {', '.join(HEADLINE)}"
    return f"no training run of experiment {experiment!r} logged the metric {sort!r}{hint}"


def _leaderboard(client: MlflowClient, runs: list, sort: str | None) -> pd.DataFrame:
    """One row per run, in the order given, with its registered version and that version's
    current aliases."""
    versions: dict[str, object] = {}
    if runs:
        ids = ", ".join(f"'{r.info.run_id}'" for r in runs)
        for mv in client.search_model_versions(f"run_id IN ({ids})"):
            known = versions.get(mv.run_id)
            if known is None or int(mv.version) > int(known.version):
                versions[mv.run_id] = mv
    aliases: dict[tuple[str, str], list[str]] = {}
    for name in sorted({mv.name for mv in versions.values()}):
        for alias, version in client.get_registered_model(name).aliases.items():
            aliases.setdefault((name, str(version)), []).append(alias)
    metrics = list(HEADLINE)
    columns = list(RUN_COLUMNS)
    for m in HEADLINE:
        columns += [m, f"best_baseline_{m}"]
    if sort is not None and sort not in columns:
        metrics.append(sort)
        columns.append(sort)
    rows = []
    for run in runs:
        tags, logged = run.data.tags, run.data.metrics
        mv = versions.get(run.info.run_id)
        names = sorted(aliases.get((mv.name, str(mv.version)), ())) if mv is not None else []
        row = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
            "status": run.info.status,
            "model_name": mv.name if mv is not None else None,
            "model_version": str(mv.version) if mv is not None else None,
            "aliases": ", ".join(names),
            "git_commit": tags.get(GIT_COMMIT),
            "git_dirty": {"true": True, "false": False}.get(tags.get(GIT_DIRTY, "")),
            "engine": tags.get("engine"),
            "data_dir": run.data.params.get("data.dir"),
        }
        for m in metrics:
            row[m] = logged.get(m, float("nan"))
        for m in HEADLINE:
            row[f"best_baseline_{m}"] = _best_baseline(logged, m)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    frame["start_time"] = pd.to_datetime(frame["start_time"], utc=True)
    for m in (c for c in columns if c in metrics or c.startswith("best_baseline_")):
        frame[m] = frame[m].astype("float64")
    return frame


def _best_baseline(logged: Mapping[str, float], metric: str) -> float:
    """The best value of `metric` (test_X) among the baselines a run logged
    (baseline_<scorer>_test_X); NaN when it logged none."""
    suffix = "_" + metric
    values = [
        v
        for k, v in logged.items()
        if k.startswith(BASELINE_PREFIX) and k.endswith(suffix) and v == v
    ]
    if not values:
        return float("nan")
    return min(values) if lower_is_better(metric) else max(values)


# --- tuning: a study's parent run, a nested run per trial -----------------------------------

RUN_KIND = "run_kind"  # tune on a study's parent run, tune_trial on its trials' runs
TUNE_RUN, TRIAL_RUN = "tune", "tune_trial"
PARENT_RUN = "mlflow.parentRunId"  # how MLflow nests a run under another
TRIAL_STATE = "trial_state"  # complete, pruned or failed


def _ms(moment) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class TuningLog:
    """The open parent run of a study (`tuning_run`): `trial` logs each trial as a run nested
    under it, `finish` the study's record on it."""

    run_id: str
    experiment_id: str
    store: str

    def trial(self, t: TrialResult) -> str:
        """A nested run for trial `t`: its settings as parameters; its value, scores and seconds
        as metrics (the log loss after each fold as steps of oof_log_loss_so_far); its state as
        the tag trial_state. Returns the run's id."""
        from mlflow.entities import Metric, Param, RunStatus

        from loyalty_model.tuning import METRIC

        client = MlflowClient()
        tags = {
            PARENT_RUN: self.run_id,
            RUN_KIND: TRIAL_RUN,
            TRIAL_STATE: t.state,
            "trial_number": str(t.number),
        }
        when = _ms(t.ended)
        values = {
            METRIC: t.value,
            "oof_pr_auc": t.pr_auc,
            "oof_roc_auc": t.roc_auc,
            "trees": None if t.trees is None else float(t.trees),
            "seconds": t.seconds,
        }
        metrics = [Metric(k, float(v), when, 0) for k, v in values.items() if v is not None]
        metrics += [Metric(f"{METRIC}_so_far", v, when, k) for k, v in t.folds.items()]
        try:
            run = client.create_run(
                self.experiment_id,
                start_time=_ms(t.started),
                tags=tags,
                run_name=f"trial-{t.number}",
            )
            run_id = run.info.run_id
            params = [Param(k, str(v)) for k, v in t.params.items()]
            client.log_batch(run_id, metrics=metrics, params=params)
            status = RunStatus.FAILED if t.state == "failed" else RunStatus.FINISHED
            client.set_terminated(run_id, RunStatus.to_string(status), end_time=when)
        except MlflowException as exc:
            raise ModelError(
                f"cannot log trial {t.number} to the tracking store {_shown(self.store)}: "
                f"{_first_line(exc)}"
            ) from exc
        return run_id

    def finish(self, record: RunRecord) -> None:
        """The study's parameters (those not logged at the start), metrics, artifacts,
        figures and tags, on the parent run."""
        try:
            logged = MlflowClient().get_run(self.run_id).data.params
            fresh = {k: str(v)[:500] for k, v in record.params.items() if k not in logged}
            mlflow.log_params(fresh)
            mlflow.log_metrics(record.metrics)
            for filename, text in record.artifacts.items():
                mlflow.log_text(text, filename)
            for filename, fig in record.figures.items():
                mlflow.log_figure(fig, filename)
            mlflow.set_tags(record.tags)
        except MlflowException as exc:
            raise ModelError(
                f"cannot log the study to the tracking store {_shown(self.store)}: "
                f"{_first_line(exc)}"
            ) from exc


@contextlib.contextmanager
def tuning_run(
    cfg: Config,
    params: Mapping[str, object],
    inputs: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[TuningLog]:
    """The parent run of a study, open for the block: in the config's experiment, tagged
    run_kind=tune with the source lineage, `params` and the input tables (as a training run
    logs them) logged at the start. It ends FINISHED, or FAILED when the block raises.
    Tuning runs are not training runs: they lack the tag the leaderboard (`training_runs`)
    selects on, and their trials are nested runs, which it leaves out too."""
    _quiet()
    with _store(cfg.tracking) as uri:
        try:
            run_in = _experiment_id(cfg.tracking.experiment)
            lineage = source_lineage()
            tags = {**lineage, RUN_KIND: TUNE_RUN}
            run = mlflow.start_run(experiment_id=run_in, tags=tags, run_name="tune")
        except MlflowException as exc:
            raise ModelError(
                f"cannot start the tuning run in the tracking store {_shown(uri)}: "
                f"{_first_line(exc)}"
            ) from exc
        with run:
            try:
                _drop_foreign_git_tags(MlflowClient(), run.info.run_id, run.data.tags, lineage)
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
                _log_inputs(inputs or {})
            except MlflowException as exc:
                raise ModelError(
                    f"cannot log the tuning run to the tracking store {_shown(uri)}: "
                    f"{_first_line(exc)}"
                ) from exc
            yield TuningLog(run.info.run_id, run_in, uri)
