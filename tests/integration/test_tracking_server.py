"""Against a REAL `mlflow server` on 127.0.0.1 (sqlite backend and artifacts in a temporary
folder), everything through HTTP: two trains at once, then train, promote and predict.

The server takes 5-20 s to start (it migrates its new store) and is shared by the module."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from loyalty_model.cli import app

from .tracking_helpers import QUICK, REGISTERED, trains_at_once

runner = CliRunner()
MLFLOW = Path(sys.executable).parent / "mlflow"
MODEL = "audience-loyalty"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` with one worker; its URI once /health answers. Stopped (its whole
    process group: uvicorn and MLflow's job runner) when the module is done."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = [
        str(MLFLOW),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = root / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while not answers(f"{uri}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield uri, root
    finally:
        with_group(proc, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # uvicorn's graceful shutdown takes its time
            with_group(proc, signal.SIGKILL)
            proc.wait(30)


def with_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the server's own process group (start_new_session: its group id is its pid)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def test_two_trains_at_once_through_the_server_both_register(server, tiny_world, tmp_path):
    uri, _ = server
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    before = {mv.version for mv in client.search_model_versions(f"name='{MODEL}'")}
    results = trains_at_once(2, tiny_world, uri, tmp_path)
    versions = [v for v, _ in results]
    assert len(set(versions)) == 2 and not set(versions) & before, (versions, before)
    after = {mv.version for mv in client.search_model_versions(f"name='{MODEL}'")}
    assert after == before | set(versions)


def test_train_promote_predict_through_the_server(server, tiny_world, tmp_path, monkeypatch):
    """In this process (the CLI's commands), after the two trains above when the module runs
    whole: this train's version is then a challenger that the gate judges, and its decision is
    written through the server too."""
    uri, root = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the server holds runs and artifacts, not this folder
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    trained = runner.invoke(app, ["train", "--data", str(tiny_world), *QUICK])
    assert trained.exit_code == 0, trained.output
    found = REGISTERED.search(trained.output)
    assert found and found[1] == MODEL, trained.output
    version, aliases = found[2], found[3]
    run_id = client.get_model_version(MODEL, version).run_id

    promoted = runner.invoke(app, ["promote"])
    if "champion" in aliases:  # the first version of the store
        assert promoted.exit_code == 0, promoted.output
        assert f"version {version} is already the champion" in promoted.output
    else:
        assert promoted.exit_code in (0, 3), promoted.output  # promoted, or kept the champion
        decision = client.get_run(run_id).data.tags["gate.decision"]
        assert decision == ("promoted" if promoted.exit_code == 0 else "rejected")
    champion = client.get_model_version_by_alias(MODEL, "champion").version

    scenario = json.loads((tiny_world / "simulation.json").read_text())["scoring_scenarios"][0]
    out = tmp_path / "pred"
    args = ["--brand", scenario["brand_id"], "--as-of", scenario["as_of"], "--out", str(out)]
    predicted = runner.invoke(app, ["predict", "--data", str(tiny_world), *args])
    assert predicted.exit_code == 0, predicted.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["uri"] == f"models:/{MODEL}@champion"
    assert manifest["model"]["version"] == champion
    assert (out / "audience_scores.parquet").exists()

    # the run and its model went through the server: its artifact folder holds them
    assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    assert len(list((root / "artifacts").rglob("model_card.md"))) >= 1
    local = {"mlflow.db", "mlruns", "mlartifacts"}  # no local store or artifacts on the side
    assert not local & {p.name for p in tmp_path.iterdir()}
