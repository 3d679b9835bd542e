"""`loyalty-model train` end to end on the tiny world against a temporary tracking store,
and on a sparse world that is nothing like the simulator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from loyalty_model import tracking
from loyalty_model.cli import app
from loyalty_model.config import TrackingConfig

from ..helpers import events_frame, ts, write_dir

runner = CliRunner()


# settings that make a run quick, for tests of the registry and the gate rather than of the
# model (60 trees, 2 calibration folds, no truth check)
QUICK = (
    *("--set", "evaluation.truth_max_followers=0", "--set", "model.n_estimators=60"),
    *("--set", "model.calibration_folds=2"),
)


def train(data, *extra) -> str:
    result = runner.invoke(app, ["train", "--data", str(data), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_train_registers_a_model_that_returns_probabilities(tiny_world, store, monkeypatch):
    from loyalty_model import engines

    connections = []
    real = engines.duckdb_connection

    def counting(*args, **kwargs):
        connections.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engines, "duckdb_connection", counting)
    out = train(tiny_world)
    assert len(connections) == 1  # one engine connection for the whole run
    assert "version 1" in out and "challenger, champion" in out
    # every long stage says when it starts (on stderr: not a terminal here)
    stages = [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("[")]
    assert stages[:2] == [
        "opening the tracking store, loading the champion",
        "building point-in-time features on duckdb",
    ]
    assert "cross-fitting: 5 of 5 folds done" in stages
    assert stages[-1] == "logging the run and registering the model"
    assert any(s.startswith("refitting on train and valid") for s in stages)
    assert "roc_auc" in out
    model = tracking.load_pyfunc("models:/audience-loyalty@champion", TrackingConfig())
    client = MlflowClient(tracking_uri=store)
    mv = client.get_model_version_by_alias("audience-loyalty", "champion")
    run = client.get_run(mv.run_id)
    for key in ("test_roc_auc", "test_pr_auc", "test_log_loss", "valid_roc_auc", "train_rows"):
        assert key in run.data.metrics, key
    assert run.data.params["label.horizon_days"] == "90"
    assert run.data.params["data.engine"] == run.data.tags["engine"] == "duckdb"
    arts = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {
        "config.yaml",
        "feature_spec.json",
        "feature_importance.csv",
        "calibration.json",
        "baselines.csv",
        "baselines.md",
        "audiences_test.csv",
        "model_card.md",
        "audiences_vs_truth.csv",
        "audience_tiers_vs_truth.csv",
    } <= arts
    pngs = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    assert {
        f"plots/{n}.png"
        for n in ("roc", "pr", "reliability", "gains", "importance", "shap_summary")
    } <= pngs
    card = Path(client.download_artifacts(mv.run_id, "model_card.md")).read_text()
    assert "Known limits" in card and "follower_count" in card
    # audiences against the simulator's counterfactual truth, for each scoring scenario
    assert "Audiences against the simulator's ground truth" in card
    vs = pd.read_csv(client.download_artifacts(mv.run_id, "audiences_vs_truth.csv"))
    assert list(vs.scenario_id) == ["s1", "s2", "s3"]
    assert vs.spearman_cost.between(-1, 1).all() and (vs.priced_influencers > 3).all()
    m = run.data.metrics
    assert m["truth_scenarios"] == 3
    assert m["truth_spearman_cost"] == pytest.approx(vs.spearman_cost.mean())
    assert "audiences vs ground truth (3 scoring scenarios)" in out
    base = pd.read_csv(client.download_artifacts(mv.run_id, "baselines.csv"))
    assert set(base.scorer) >= {
        "model (LightGBM)",
        "follower_count",
        "engagement_rate",
        "logistic_regression",
        "oracle (ground truth)",
    }
    for key in (
        "test_brier",
        "test_ece",
        "test_lift_top1pct",
        "test_recall_top10pct",
        "test_audience_interval_coverage",
        "test_oracle_roc_auc",
        "test_roc_auc_vs_oracle",
        "best_iteration",
        "final_trees",
    ):
        assert key in run.data.metrics, key
    # the registered model is refitted on train+valid and carries the audience dispersion
    assert run.data.metrics["final_trees"] >= run.data.metrics["best_iteration"]
    cal = json.loads(Path(client.download_artifacts(mv.run_id, "calibration.json")).read_text())
    assert cal["audience_dispersion"] == run.data.metrics["audience_dispersion"] >= 0
    spec = json.loads(Path(client.download_artifacts(mv.run_id, "feature_spec.json")).read_text())
    # scoring input: the feature frame (categoricals as strings, counts possibly missing)
    frame = pd.DataFrame({n: np.zeros(4) for n in spec["names"]})
    for c in spec["categorical"]:
        frame[c] = [spec["categories"][c][0], "unseen", None, spec["categories"][c][-1]]
    pred = model.predict(frame)
    p = np.asarray(pred["p_loyal"])
    assert p.shape == (4,) and ((p >= 0) & (p <= 1)).all()
    assert not set(np.unique(p)) <= {0.0, 1.0}  # probabilities, not class labels


def test_second_version_is_challenger_and_champion_stays(tiny_world, store):
    train(tiny_world, *QUICK)
    out = train(tiny_world, *QUICK, "--set", "model.num_leaves=15")  # the default is 7
    assert "version 2  aliases: challenger\n" in out
    client = MlflowClient(tracking_uri=store)
    v2 = client.get_run(client.get_model_version("audience-loyalty", "2").run_id)
    assert v2.data.params["model.num_leaves"] == "15"
    assert str(client.get_model_version_by_alias("audience-loyalty", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("audience-loyalty", "challenger").version) == "2"


def test_training_is_deterministic(tiny_world, store):
    first = train(tiny_world, *QUICK)
    second = train(tiny_world, *QUICK)

    def table(out):
        return [line for line in out.splitlines() if line.startswith(("│ roc_auc", "│ pr_auc"))]

    assert len(table(first)) == 2, first  # the metrics table was rendered and found
    assert table(first) == table(second)


def test_bad_inputs_fail_cleanly(tmp_path, store):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "data directory not found" in result.output
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--set", "label.horizon=3"])
    assert result.exit_code == 2 and "label.horizon: unknown key" in result.output
    result = runner.invoke(app, ["train", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "table not found" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  seed: [1\n")
    result = runner.invoke(app, ["train", "--config", str(broken)])
    assert result.exit_code == 2 and "broken.yaml: not valid YAML at line 3" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "mlruns").exists()


def sparse_world() -> dict[str, pd.DataFrame]:
    """One influencer, one brand, purchases only, no prices, no unfollows, 4 campaigns."""
    rng = np.random.default_rng(0)
    followers = [f"u{i:03d}" for i in range(120)]
    starts = [ts("2024-03-01"), ts("2024-06-01"), ts("2024-09-01"), ts("2024-12-01")]
    rows = []
    for s in starts:
        for f in followers:
            if rng.random() < 0.3:
                for k in range(int(rng.integers(1, 4))):
                    when = s + pd.Timedelta(days=int(rng.integers(-80, 85)) + k)
                    rows.append((when, f, None, "B", None, "purchase", 25.0))
    rows.append((ts("2025-04-01"), "u000", None, "B", None, "purchase", 25.0))  # data end
    return {
        # two purchases drawn on one day are one row twice: the contract refuses exact copies
        "events": events_frame(rows).drop_duplicates(ignore_index=True),
        "follows": pd.DataFrame(
            {
                "follower_id": followers,
                "influencer_id": "I",
                "followed_at": ts("2023-01-01"),
                "unfollowed_at": pd.Series([pd.NaT] * 120, dtype="datetime64[us, UTC]"),
            }
        ),
        "influencers": pd.DataFrame(
            {
                "influencer_id": ["I"],
                "follower_count": [120],
                "category": ["food"],
                "price_per_post": [None],
            }
        ),
        "brands": pd.DataFrame({"brand_id": ["B"], "category": ["food"], "avg_price": [None]}),
        "campaigns": pd.DataFrame(
            {
                "campaign_id": [f"c{i}" for i in range(4)],
                "brand_id": "B",
                "influencer_id": "I",
                "start_ts": starts,
                "cost": [None] * 4,
            }
        ),
    }


def test_sparse_world_trains(tmp_path, store):
    data = write_dir(sparse_world(), tmp_path / "sparse")
    out = train(data, "--set", "model.min_child_samples=5")
    assert "version 1" in out


def test_split_by_dates(tmp_path, store):
    data = write_dir(sparse_world(), tmp_path / "sparse")
    out = train(
        data,
        "--set",
        "split.method=date",
        "--set",
        "split.valid_start=2024-05-01",
        "--set",
        "split.test_start=2024-08-01",
        "--set",
        "model.min_child_samples=5",
    )
    assert "version 1" in out
    bad = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--set",
            "split.method=date",
            "--set",
            "split.valid_start=2025-05-01",
            "--set",
            "split.test_start=2025-08-01",
        ],
    )
    assert bad.exit_code == 2 and "empty" in bad.output


def test_sample_fraction_keeps_a_stable_share_of_followers(tiny_world, store):
    from loyalty_model.config import load_config
    from loyalty_model.training import fit_and_evaluate as fit_pipeline

    full = fit_pipeline(load_config(None, [f"data.dir={tiny_world}"]))
    half = fit_pipeline(load_config(None, [f"data.dir={tiny_world}", "data.sample_fraction=0.5"]))
    n_full, n_half = full.sizes["train_rows"], half.sizes["train_rows"]
    assert 0.35 * n_full < n_half < 0.65 * n_full
    kept = set(half.frames["train"].follower_id)
    assert kept < set(full.frames["train"].follower_id)


def promote(*extra):
    return runner.invoke(app, ["promote", "--set", "gate.max_ece=0.5", *extra])


def test_gate_rejects_a_worse_model_and_records_why(tiny_world, store):
    train(tiny_world, *QUICK)  # v1: champion
    train(tiny_world, *QUICK, "--set", "model.n_estimators=1", "--set", "model.learning_rate=0.01")
    result = promote()
    assert result.exit_code == 3, result.output
    assert "KEEP CHAMPION" in result.output and "v1 stays champion" in result.output
    client = MlflowClient(tracking_uri=store)
    assert str(client.get_model_version_by_alias("audience-loyalty", "champion").version) == "1"
    run = client.get_run(client.get_model_version("audience-loyalty", "2").run_id)
    assert run.data.tags["gate.decision"] == "rejected"
    assert "not better" in run.data.tags["gate.reasons"]
    # --force overrides, and says so on the run
    forced = promote("--force")
    assert forced.exit_code == 0 and "FORCED" in forced.output
    run = client.get_run(run.info.run_id)
    assert run.data.tags["gate.forced"] == "true"
    assert str(client.get_model_version_by_alias("audience-loyalty", "champion").version) == "2"


def test_gate_promotes_a_better_model(tiny_world, store):
    train(tiny_world, *QUICK, "--set", "model.n_estimators=1", "--set", "model.learning_rate=0.01")
    train(tiny_world, *QUICK)  # v2, compared with the weak v1 on the same test rows
    result = promote()
    assert result.exit_code == 0, result.output
    assert "PROMOTE" in result.output and "champion is now audience-loyalty v2" in result.output


def test_promote_refuses_a_stale_comparison(tiny_world, store):
    train(tiny_world, *QUICK)  # v1 champion
    train(tiny_world, *QUICK)  # v2 compared with v1
    train(tiny_world, *QUICK)  # v3 compared with v1
    assert promote("--version", "2", "--force").exit_code == 0  # champion is now v2
    result = promote("--version", "3")
    assert result.exit_code == 2 and "compared with champion v1" in result.output
    # a version trained while there was no champion (two first runs at once), said in words
    client = MlflowClient(tracking_uri=store)
    client.set_tag(
        client.get_model_version("audience-loyalty", "3").run_id, "champion_compared", "none"
    )
    result = promote("--version", "3")
    assert result.exit_code == 2 and "compared with no champion at training time" in result.output
    assert "vnone" not in result.output


def test_train_drops_bad_rows_only_when_asked_and_logs_them_with_the_run(
    tiny_world, store, tmp_path
):
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    ev = pd.read_parquet(data / "events.parquet")
    pd.concat([ev, ev.iloc[:5]], ignore_index=True).to_parquet(data / "events.parquet")
    refused = runner.invoke(app, ["train", "--data", str(data)])
    assert refused.exit_code == 2 and "events: exact duplicate rows in 5 rows" in refused.output
    out = train(data, "--on-bad-rows", "drop")
    assert "dropped: 5 row(s): events: exact duplicate row" in out
    client = MlflowClient(tracking_uri=store)
    mv = client.get_model_version_by_alias("audience-loyalty", "champion")
    run = client.get_run(mv.run_id)
    assert run.data.metrics["rows_quarantined"] == 5
    assert run.data.params["data.on_bad_rows"] == "drop"
    q = pd.read_csv(client.download_artifacts(mv.run_id, "quarantine/events.csv"))
    assert len(q) == 5 and set(q.reason) == {"events: exact duplicate row"}
    summary = json.loads(
        Path(client.download_artifacts(mv.run_id, "quarantine/summary.json")).read_text()
    )
    assert summary == {"events": {"events: exact duplicate row": 5}}
