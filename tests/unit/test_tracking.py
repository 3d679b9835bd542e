"""The tracking store, when it is not simply there: a tracking server that is down or does not
answer, a sqlite store that a migration left broken, a store another process is setting up.
Real sqlite files, real sockets and HTTP servers on 127.0.0.1; MLflow itself is never faked."""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from loyalty_model import tracking
from loyalty_model.cli import app
from loyalty_model.config import TrackingConfig
from loyalty_model.errors import ModelError

runner = CliRunner()
MLFLOW_HTTP = (
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER",
)


@pytest.fixture(autouse=True)
def _no_store_from_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in MLFLOW_HTTP:
        monkeypatch.delenv(name, raising=False)


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# --- a tracking server that is down ----------------------------------------------------------


def test_predict_against_a_server_that_is_down_says_so_and_fails_in_one_line(
    tiny_world, tmp_path, monkeypatch
):
    """Nothing listens on the port: `predict` retries for tracking.timeout_seconds, saying so,
    then exits 2 with one line (it waited 252 s in silence before)."""
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args = ["predict", "--data", str(tiny_world), "--brand", "b0001", "--out", str(tmp_path / "o")]
    start = time.monotonic()
    result = runner.invoke(app, [*args, "--set", "tracking.timeout_seconds=3"])
    seconds = time.monotonic() - start
    assert result.exit_code == 2, result.output
    assert one_line(result.stderr) == (
        f"error: tracking server {uri} does not answer (connection refused) after 3 s: start it, "
        "or point MLFLOW_TRACKING_URI (or tracking.uri) at one that runs; "
        "tracking.timeout_seconds sets how long to wait"
    )
    assert f"tracking server {uri} does not answer (connection refused); retrying for" in (
        result.stderr
    )
    assert seconds < 30, seconds  # reading and validating the data included
    assert not (tmp_path / "o").exists()


def test_the_wait_is_the_timeout_and_the_environment_is_put_back(monkeypatch):
    """The library call itself: it gives up after about timeout_seconds, and leaves the
    user's environment (MLFLOW_TRACKING_URI, MLflow's HTTP settings) as it found it."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "999")
    before = dict(os.environ)
    cfg = TrackingConfig(uri=f"http://user:secret@127.0.0.1:{closed_port()}/", timeout_seconds=2)
    start = time.monotonic()
    with pytest.raises(ModelError, match="does not answer") as caught:
        tracking.load_champion(cfg)
    seconds = time.monotonic() - start
    assert 2 <= seconds < 10, seconds
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)
    assert dict(os.environ) == before


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A socket that listens and never answers: connections are made, no byte comes back."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_server_that_accepts_connections_but_never_answers_is_given_up_on():
    with silent_server() as uri:
        start = time.monotonic()
        with pytest.raises(ModelError, match=r"does not answer \(no answer within") as caught:
            tracking.candidate(TrackingConfig(uri=uri, timeout_seconds=3), None)
        seconds = time.monotonic() - start
    assert 3 <= seconds < 15, seconds
    assert f"tracking server {uri} does not answer" in str(caught.value)


class _HealthyButBroken(http.server.BaseHTTPRequestHandler):
    """Like a proxy in front of a dead MLflow: /health answers, the API does not (503, or no
    answer at all when the server's `hang` is set)."""

    def do_GET(self):
        if self.path.endswith("/health"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
            return
        if self.server.hang:
            self.server.released.wait(60)  # set when the test ends
            return
        self.send_response(503)
        self.send_header("Retry-After", "3600")  # MLflow must not wait for it either
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def healthy_but_broken(hang: bool) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthyButBroken)
    server.daemon_threads = True
    server.hang, server.released = hang, threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("hang", [False, True], ids=["503", "no-answer"])
def test_mlflow_own_retries_fit_in_the_timeout(hang):
    """The health check passes, MLflow's requests fail: MLflow's own retries (by default 7,
    with backoff, 120 s per attempt, and a Retry-After of an hour honoured) are bounded by
    tracking.timeout_seconds too, and the failure is one line naming the store."""
    with healthy_but_broken(hang) as uri:
        cfg = TrackingConfig(uri=uri, timeout_seconds=3)
        start = time.monotonic()
        with pytest.raises(ModelError) as caught:
            tracking.load_for_scoring("models:/audience-loyalty@champion", cfg)
        seconds = time.monotonic() - start
    message = str(caught.value)
    assert seconds < 10, seconds
    assert message.startswith(
        f"cannot load model 'models:/audience-loyalty@champion' from {uri}: "
    ), message
    assert "\n" not in message
    assert not any(name in os.environ for name in MLFLOW_HTTP)


@pytest.mark.parametrize("total", [0.5, 1, 2, 3, 10, 30, 120, 600])
def test_mlflow_http_settings_add_up_to_at_most_the_timeout(total, monkeypatch):
    limits = tracking._http_limits(total)
    worst = tracking._http_worst_case(
        int(limits["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]),
        int(limits["MLFLOW_HTTP_REQUEST_TIMEOUT"]),
        int(limits["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]),
        float(limits["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"]),
    )
    assert worst <= max(total, 1)  # one attempt of at least 1 s: MLflow's timeout is an int
    assert limits["MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER"] == "false"
    # a user's own lower settings are kept
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    lower = tracking._http_limits(total)
    assert lower["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert lower["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "1"


# --- a sqlite store that a migration left broken -------------------------------------------


def test_a_store_left_half_migrated_is_one_line_that_says_how_to_recover(tmp_path, monkeypatch):
    """Two processes migrating one new store at once used to leave it so (the issue's "table
    _alembic_tmp_experiments already exists" on every later command). The message names the
    store and the fix; the fix works."""
    db = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
        con.commit()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    for _ in range(2):  # every later command says the same
        result = runner.invoke(app, ["promote"])
        assert result.exit_code == 2, result.output
        line = one_line(result.stderr)
        assert line.startswith(
            "error: tracking store sqlite:///mlflow.db is broken: a schema migration stopped "
            "half-way and left the table _alembic_tmp_experiments ("
        ), line
        fix = f"sqlite3 {db} 'DROP TABLE _alembic_tmp_experiments'"
        assert f"back up {db}, then run: {fix} and retry" in line, line
        assert "move the file aside to start a new store" in line
    with contextlib.closing(sqlite3.connect(db)) as con:  # what the message says to do
        con.execute("DROP TABLE _alembic_tmp_experiments")
        con.commit()
    assert tracking.load_champion(TrackingConfig()) is None  # the store opens: no champion yet
    result = runner.invoke(app, ["promote"])
    assert result.exit_code == 2
    assert one_line(result.stderr) == (
        "error: model 'audience-loyalty' has no alias challenger in sqlite:///mlflow.db"
    )


def test_a_store_that_is_not_a_database_is_one_line(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_text("not a database\n" * 100)
    with pytest.raises(ModelError) as caught:
        tracking.load_champion(TrackingConfig(uri=f"sqlite:///{db}"))
    message = str(caught.value)
    assert message.startswith(f"tracking store sqlite:///{db} cannot be opened or migrated (")
    assert "move the file aside to start a new store" in message and "\n" not in message


# --- a new sqlite store is set up under a lock beside it --------------------------------------


def test_every_entry_point_waits_for_the_lock_of_a_new_store(tmp_path, capfd):
    """While another process holds DB.lock, no entry point touches the new store (so none
    runs MLflow's migrations beside another); each says it waits, and goes on when the lock
    is released."""
    db = tmp_path / "new" / "mlflow.db"
    cfg = TrackingConfig(uri=f"sqlite:///{db}")
    cand = tracking.Candidate("1", "0" * 32, {}, {}, None)
    calls = {
        "load_champion": lambda: tracking.load_champion(cfg),
        "candidate": lambda: tracking.candidate(cfg, None),
        "load_for_scoring": lambda: tracking.load_for_scoring("models:/m/1", cfg),
        "load_pyfunc": lambda: tracking.load_pyfunc("models:/m/1", cfg),
        "record_promotion": lambda: tracking.record_promotion(cfg, cand, False, "", False),
    }
    done: dict[str, BaseException | None] = {}

    def run(name):
        try:
            calls[name]()
            done[name] = None
        except Exception as exc:
            done[name] = exc

    db.parent.mkdir()
    lock = os.open(db.with_name("mlflow.db.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as another process setting the store up would
        threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in calls]
        for t in threads:
            t.start()
        time.sleep(2.5)
        assert not done and not db.exists()
    finally:
        os.close(lock)
    for t in threads:
        t.join(60)
    assert set(done) == set(calls)
    # none failed on the store itself: only on what it does not hold
    assert done["load_champion"] is None
    for name in set(calls) - {"load_champion"}:
        assert isinstance(done[name], ModelError) and "tracking store" not in str(done[name])
    waits = capfd.readouterr().err.count(
        f"waiting for another process that is setting up the tracking store {db}"
    )
    assert waits == len(calls)
    with contextlib.closing(sqlite3.connect(db)) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    assert {"experiments", "runs", "registered_models", "model_versions"} <= tables
    assert not [t for t in tables if t.startswith("_alembic_tmp_")]
