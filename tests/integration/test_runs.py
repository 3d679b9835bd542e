"""Lineage on a real training run (git commit, input tables as MLflow datasets, the registered
version's description) and `loyalty-model runs` over two real runs: the `tiny` world trained
twice, with different settings, into a tracking store of this module."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

import loyalty_model as lm
from loyalty_model import io, tracking
from loyalty_model.cli import app
from loyalty_model.contract import TABLES

from .tracking_helpers import QUICK

runner = CliRunner()
HEADLINE = {
    "test_roc_auc": "ROC-AUC",
    "test_pr_auc": "PR-AUC",
    "test_ece": "ECE",
    "test_audience_spearman_rate": "audience Spearman",
}


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory, monkeypatch_session) -> tuple[str, list[lm.TrainResult]]:
    """(store URI, [first, second]): a quick train on `tiny`, then one on half its followers
    with other leaves; the artifacts in the module's temp folder."""
    root = tmp_path_factory.mktemp("runs-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    quick = [QUICK[i + 1] for i in range(0, len(QUICK), 2)]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the default artifact root lands in the temp folder
        first = lm.train(None, tiny_world, [f"tracking.uri={uri}", *quick])
        second = lm.train(
            None,
            tiny_world,
            [f"tracking.uri={uri}", *quick, "data.sample_fraction=0.5", "model.num_leaves=15"],
        )
    return uri, [first, second]


def rows_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("│")]


def test_a_run_records_the_commit_of_the_package_source(trained):
    uri, (first, _) = trained
    tags = MlflowClient(uri).get_run(first.run_id).data.tags
    package = Path(tracking.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        assert tags["git_commit"] == tags["git_dirty"] == "unknown"
        return
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"]), tags
    assert tags["git_commit"] == tags["mlflow.source.git.commit"] == head
    assert tags["git_dirty"] in ("true", "false")
    assert tags["mlflow.source.git.dirty"] == tags["git_dirty"]


def test_a_run_has_one_dataset_input_per_table_with_its_digest(trained, tiny_world):
    uri, (first, _) = trained
    inputs = MlflowClient(uri).get_run(first.run_id).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == sorted(TABLES)
    for i in inputs:
        source = io.table_source(tiny_world, i.dataset.name)
        sha256 = io.fingerprint(source)  # what the prediction manifest records
        tags = {t.key: t.value for t in i.tags}
        assert tags == {"mlflow.data.context": "training", "sha256": sha256}
        assert i.dataset.digest == sha256[: tracking.DIGEST_CHARS]
        assert i.dataset.source_type == "local"
        assert str(source.absolute()) in i.dataset.source


def test_the_registered_version_describes_window_label_and_metrics(trained):
    uri, (first, second) = trained
    client = MlflowClient(uri)
    text = client.get_model_version(first.model_name, first.model_version).description
    w = first.outcome.window
    for key in ("train_from", "valid_from", "test_from", "test_to"):
        assert w[key][:10] in text, (key, text)
    assert "at least 2 purchases of the campaign's brand within 90 days" in text
    m = first.metrics
    for key, label in HEADLINE.items():
        assert f"{label} {m[key]:.4f}" in text, (key, text)
    assert first.run_id in text
    commit = client.get_run(first.run_id).data.tags["git_commit"]
    assert (commit in text) if commit != "unknown" else ("unknown source commit" in text)
    # the second was compared with the first, the champion, on the same test rows
    text = client.get_model_version(second.model_name, second.model_version).description
    assert f"champion v{first.model_version} on the same rows: ROC-AUC " in text


def test_runs_lists_the_runs_with_their_versions_sorted_and_cut_to_top(trained):
    uri, (first, second) = trained
    store = ["--set", f"tracking.uri={uri}"]
    result = runner.invoke(app, ["runs", *store])
    assert result.exit_code == 0, result.output
    rows = rows_of(result.output)
    assert [r[2:10] for r in rows] == [second.run_id[:8], first.run_id[:8]]  # newest first
    assert " challenger " in rows[0] and " champion " in rows[1]
    assert f"{second.metrics['test_roc_auc']:.4f}" in rows[0]

    # half the followers: fewer training rows; sorted by it, the older run comes first
    assert first.metrics["train_rows"] > second.metrics["train_rows"]
    result = runner.invoke(app, ["runs", *store, "--sort", "train_rows"])
    assert [r[2:10] for r in rows_of(result.output)] == [first.run_id[:8], second.run_id[:8]]
    result = runner.invoke(app, ["runs", *store, "--sort", "train_rows", "--top", "1"])
    assert [r[2:10] for r in rows_of(result.output)] == [first.run_id[:8]]

    by_id = {first.run_id: first, second.run_id: second}
    for metric in ("test_pr_auc", "test_ece"):
        board = lm.runs(overrides=[f"tracking.uri={uri}"], sort=metric)
        values = [by_id[r].metrics[metric] for r in board.runs.run_id]
        assert values == sorted(values, reverse=not board.ascending), metric
        assert list(board.runs[metric]) == values
    assert board.ascending  # test_ece
    # the baselines were logged, and the board shows the best of them
    frame = lm.runs(overrides=[f"tracking.uri={uri}"]).runs
    best = max(
        v
        for k, v in second.metrics.items()
        if k.startswith("baseline_") and k.endswith("_test_roc_auc")
    )
    assert frame.best_baseline_test_roc_auc.iloc[0] == pytest.approx(best)
    assert list(frame.model_version) == [second.model_version, first.model_version]

    result = runner.invoke(app, ["runs", *store, "--sort", "test_roc"])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: no training run of experiment")
    assert "test_roc_auc" in errors[0]
