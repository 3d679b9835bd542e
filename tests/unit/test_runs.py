"""`loyalty-model runs` and the source lineage of a run, without training: runs made by hand in
a sqlite store of their own (real MLflow), and real git in scratch repositories."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from typer.testing import CliRunner

import loyalty_model as lm
from loyalty_model import tracking
from loyalty_model.cli import app

runner = CliRunner()
MODEL = "audience-loyalty"
HEX40 = re.compile(r"[0-9a-f]{40}")
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def _no_store_from_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# --- which way a metric is better --------------------------------------------------------------


def test_losses_errors_and_durations_sort_lowest_first_and_nothing_else():
    for metric in (
        "test_log_loss",
        "test_ece",
        "champion_test_ece",
        "baseline_logistic_regression_test_log_loss",
        "test_brier",
        "test_audience_mae_count",
        "fit_seconds",
    ):
        assert tracking.lower_is_better(metric), metric
    for metric in (
        "test_roc_auc",
        "test_pr_auc",
        "test_audience_spearman_rate",
        "test_recall_top10pct",  # "ece" inside a word is not ECE
        "truth_top20_overlap_cost",
        "train_rows",
    ):
        assert not tracking.lower_is_better(metric), metric


# --- lineage: the git commit of the package's source tree ----------------------------------------


def git(repo: Path, *args: str) -> str:
    ident = ["-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
    done = subprocess.run(
        [GIT, "-C", str(repo), *ident, *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A git repository holding a package `pkg` (committed), a README and an ignored venv/."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    (repo / "README").write_text("hello\n")
    (repo / ".gitignore").write_text("venv/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    return repo


@needs_git
def test_this_checkout_is_tagged_with_its_head_commit():
    root = Path(tracking.__file__).resolve().parent
    try:
        head = git(root, "rev-parse", "HEAD")
    except subprocess.CalledProcessError:
        pytest.skip("the package does not run from a git checkout")
    tags = tracking.source_lineage()
    assert HEX40.fullmatch(tags["git_commit"]) and tags["git_commit"] == head
    assert tags["mlflow.source.git.commit"] == head
    assert tags["git_dirty"] in ("true", "false")
    if git(root, "status", "--porcelain", "--untracked-files=no"):
        assert tags["git_dirty"] == "true" and tags["git_dirty_files"]


@needs_git
def test_dirty_means_a_changed_tracked_file_or_new_code_in_the_package(checkout):
    pkg = checkout / "pkg"
    clean = tracking.source_lineage(pkg)
    assert clean["git_commit"] == git(checkout, "rev-parse", "HEAD")
    assert clean["git_dirty"] == clean["mlflow.source.git.dirty"] == "false"
    assert "git_dirty_files" not in clean

    (checkout / "notes.txt").write_text("scratch\n")  # untracked, outside the package
    (checkout / "venv").mkdir()
    (checkout / "venv" / "junk.py").write_text("")  # ignored
    assert tracking.source_lineage(pkg)["git_dirty"] == "false"

    (checkout / "README").write_text("changed\n")  # a tracked file, outside the package
    tags = tracking.source_lineage(pkg)
    assert tags["git_dirty"] == "true" and tags["git_dirty_files"] == "README"
    git(checkout, "checkout", "--", "README")

    (pkg / "new_module.py").write_text("y = 2\n")  # code that ran, in no commit
    tags = tracking.source_lineage(pkg)
    assert tags["git_dirty"] == "true" and tags["git_dirty_files"] == "new_module.py (untracked)"


@needs_git
def test_lineage_is_unknown_without_a_checkout_without_git_or_when_git_hangs(
    checkout, tmp_path, monkeypatch
):
    unknown = {"git_commit": "unknown", "git_dirty": "unknown"}
    outside = tmp_path / "plain"
    outside.mkdir()
    (outside / "__init__.py").write_text("")
    assert tracking.source_lineage(outside) == unknown
    # a copy installed into an ignored folder of a checkout (a venv inside the repo) is not
    # the checkout's code
    installed = checkout / "venv" / "pkg"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("x = 1\n")
    assert tracking.source_lineage(installed) == unknown
    # a checkout whose package was never committed
    git(checkout, "rm", "-q", "--cached", "pkg/__init__.py")
    assert tracking.source_lineage(checkout / "pkg") == unknown
    git(checkout, "add", "pkg/__init__.py")

    path, sleep = os.environ["PATH"], shutil.which("sleep")
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-bin"))  # no git at all
    assert tracking.source_lineage(checkout / "pkg") == unknown

    slow = tmp_path / "slow-bin"
    slow.mkdir()
    (slow / "git").write_text(f"#!/bin/sh\nexec {sleep} 30\n")
    (slow / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{slow}{os.pathsep}{path}")
    start = time.monotonic()
    assert tracking.source_lineage(checkout / "pkg", timeout=1.0) == unknown
    assert 1.0 <= time.monotonic() - start < 5  # it waited for git, then gave up


# --- the leaderboard, on runs made by hand --------------------------------------------------------


class Store:
    """A sqlite tracking store in a temp folder, and training-like runs made in it."""

    def __init__(self, root: Path):
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(self.uri)
        self.exp = self.client.create_experiment("exp", artifact_location=str(root / "art"))
        self.clock = 1_700_000_000_000

    def run(
        self,
        metrics: dict[str, float],
        training: bool = True,
        parent: str | None = None,
        register: bool = True,
        commit: str = "a" * 40,
        dirty: str = "false",
    ) -> str:
        self.clock += 60_000  # a minute later than the previous one
        tags = {"git_commit": commit, "git_dirty": dirty, "engine": "duckdb"}
        if training:
            tags["champion_compared"] = "none"
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.exp, start_time=self.clock, tags=tags)
        rid = run.info.run_id
        self.client.log_batch(rid, [Metric(k, v, self.clock, 0) for k, v in metrics.items()])
        self.client.log_param(rid, "data.dir", "data/tiny")
        self.client.set_terminated(rid)
        if register:
            if not self.client.search_registered_models(f"name = '{MODEL}'"):
                self.client.create_registered_model(MODEL)
            self.client.create_model_version(MODEL, f"runs:/{rid}/model", run_id=rid)
        return rid

    def version_of(self, rid: str) -> str:
        (mv,) = self.client.search_model_versions(f"run_id = '{rid}'")
        return str(mv.version)

    def args(self, *extra: str) -> list[str]:
        return ["runs", "--experiment", "exp", "--set", f"tracking.uri={self.uri}", *extra]

    def runs(self, **kwargs) -> lm.RunsResult:
        return lm.runs(overrides=[f"tracking.uri={self.uri}"], experiment="exp", **kwargs)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A new sqlite store, made (migrated) once: each test starts from a copy."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path, empty_store) -> Store:
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return Store(tmp_path)


def test_mlflow_guesses_of_another_checkout_are_dropped(store):
    client = store.client
    guessed = {
        "mlflow.source.git.commit": "f" * 40,
        "mlflow.source.git.branch": "other",
        "mlflow.source.git.repoURL": "https://user:token@example.com/other.git",
        "engine": "duckdb",
    }
    for lineage, kept in (
        ({"git_commit": "unknown", "git_dirty": "unknown"}, {"engine"}),
        (
            {"git_commit": "a" * 40, "mlflow.source.git.commit": "a" * 40},
            {"engine", "mlflow.source.git.commit"},
        ),
    ):
        run = client.create_run(client.create_experiment(str(len(kept))), tags=guessed)
        rid = run.info.run_id
        tracking._drop_foreign_git_tags(client, rid, run.data.tags, lineage)
        tags = client.get_run(rid).data.tags
        assert {k for k in guessed if k in tags} == kept


def headline(roc: float, pr: float, ece: float, spearman: float) -> dict[str, float]:
    return {
        "test_roc_auc": roc,
        "test_pr_auc": pr,
        "test_ece": ece,
        "test_audience_spearman_rate": spearman,
    }


def test_runs_most_recent_first_with_version_aliases_commit_and_best_baselines(store):
    baselines = {
        "baseline_follower_count_test_roc_auc": 0.61,
        "baseline_logistic_regression_test_roc_auc": 0.71,
        "baseline_logistic_regression_test_ece": 0.05,
        "baseline_other_test_ece": 0.03,
        "baseline_follower_count_test_audience_spearman_rate": 0.4,
    }
    old = store.run(headline(0.80, 0.20, 0.010, 0.5) | baselines)
    new = store.run(headline(0.70, 0.30, 0.020, 0.6), commit="b" * 40, dirty="true")
    store.client.set_registered_model_alias(MODEL, "champion", store.version_of(old))
    store.client.set_registered_model_alias(MODEL, "challenger", store.version_of(new))

    result = store.runs()
    assert (result.experiment, result.sort, result.ascending) == ("exp", None, False)
    frame = result.runs
    assert list(frame.columns) == [
        *tracking.RUN_COLUMNS,
        "test_roc_auc",
        "best_baseline_test_roc_auc",
        "test_pr_auc",
        "best_baseline_test_pr_auc",
        "test_ece",
        "best_baseline_test_ece",
        "test_audience_spearman_rate",
        "best_baseline_test_audience_spearman_rate",
    ]
    assert list(frame.run_id) == [new, old]
    assert list(frame.model_version) == ["2", "1"]
    assert list(frame.aliases) == ["challenger", "champion"]
    assert list(frame.git_commit) == ["b" * 40, "a" * 40]
    assert list(frame.git_dirty) == [True, False]
    assert str(frame.start_time.dt.tz) == "UTC"
    assert frame.start_time.iloc[0] > frame.start_time.iloc[1]
    older = frame.iloc[1]
    assert older.best_baseline_test_roc_auc == 0.71  # the highest
    assert older.best_baseline_test_ece == 0.03  # the lowest: a loss-like metric
    assert older.best_baseline_test_audience_spearman_rate == 0.4
    assert frame.iloc[0][["best_baseline_test_roc_auc"]].isna().all()  # none logged

    out = runner.invoke(app, store.args()).output
    assert "the 2 most recent training runs of exp" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert rows[0].startswith(f"│ {new[:8]} ") and rows[1].startswith(f"│ {old[:8]} ")
    assert "bbbbbbbb*" in rows[0] and "challenger" in rows[0]
    assert "aaaaaaaa " in rows[1] and "champion" in rows[1]
    assert "0.8000 (0.7100)" in rows[1] and "0.0100 (0.0300)" in rows[1]


def test_runs_sort_by_any_metric_lowest_first_for_losses_and_leave_out_runs_without_it(store):
    a = store.run(headline(0.90, 0.10, 0.030, 0.1) | {"fit_seconds": 5.0})
    b = store.run(headline(0.70, 0.30, 0.010, 0.3))  # no fit_seconds
    c = store.run(headline(0.80, 0.20, 0.020, 0.2) | {"fit_seconds": 9.0})

    assert list(store.runs().runs.run_id) == [c, b, a]
    assert list(store.runs(sort="test_roc_auc").runs.run_id) == [a, c, b]
    assert list(store.runs(sort="test_pr_auc").runs.run_id) == [b, c, a]
    by_ece = store.runs(sort="test_ece")
    assert by_ece.ascending and list(by_ece.runs.run_id) == [b, c, a]
    by_time = store.runs(sort="fit_seconds")
    assert list(by_time.runs.run_id) == [a, c]  # b never logged it
    assert list(by_time.runs.fit_seconds) == [5.0, 9.0]  # a column of its own
    assert list(store.runs(sort="test_roc_auc", top=2).runs.run_id) == [a, c]
    assert list(store.runs(top=1).runs.run_id) == [c]

    out = runner.invoke(app, store.args("--sort", "test_ece", "--top", "2")).output
    assert "the 2 best training runs of exp by test_ece (lowest first)" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert [r[2:10] for r in rows] == [b[:8], c[:8]]
    assert "ECE ▲" in out


def test_runs_leave_out_nested_and_other_runs_even_beyond_a_page(store):
    wanted = store.run(headline(0.8, 0.2, 0.01, 0.5), register=False)
    store.run({"test_roc_auc": 0.99}, training=False, register=False)  # e.g. a tuning parent
    for _ in range(51):  # more than a page of newer nested runs
        store.run({"test_roc_auc": 0.99}, parent=wanted, register=False)
    frame = store.runs(top=1).runs
    assert list(frame.run_id) == [wanted]
    assert frame.model_version.isna().all() and list(frame.aliases) == [""]
    assert list(store.runs(sort="test_roc_auc").runs.run_id) == [wanted]


def test_runs_errors_are_one_line_and_exit_2(store, tmp_path):
    store.run(headline(0.8, 0.2, 0.01, 0.5))
    result = runner.invoke(app, store.args("--sort", "pr_auc"))
    assert result.exit_code == 2, result.output
    line = one_line(result.stderr)
    assert "no training run of experiment 'exp' logged the metric 'pr_auc'" in line
    assert "did you mean test_pr_auc" in line

    result = runner.invoke(app, [*store.args(), "--experiment", "nope"])
    assert result.exit_code == 2, result.output
    assert one_line(result.stderr) == (
        f"error: no experiment 'nope' in {store.uri}; its experiments: Default, exp"
    )

    with pytest.raises(lm.RequestError, match="top must be"):
        store.runs(top=0)

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = ["runs", "--set", f"tracking.uri=http://127.0.0.1:{port}"]
    result = runner.invoke(app, [*down, "--set", "tracking.timeout_seconds=1"])
    assert result.exit_code == 2, result.output
    assert "does not answer (connection refused)" in one_line(result.stderr)


def test_runs_of_an_experiment_without_training_runs(store):
    store.run({"x": 1.0}, training=False, register=False)
    result = runner.invoke(app, store.args("--sort", "anything"))
    assert result.exit_code == 0, result.output
    assert "no training runs in experiment exp" in result.output
    assert store.runs().runs.empty
