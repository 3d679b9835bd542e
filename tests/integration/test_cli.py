"""The CLI end to end, as a user runs it: the installed console script and typer's runner."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import typer
from typer.testing import CliRunner

from loyalty_model.cli import app

runner = CliRunner()
SCRIPT = Path(sys.executable).parent / "loyalty-model"


def test_console_script_simulates_and_validates(tmp_path):
    out = tmp_path / "world"
    sim = subprocess.run(
        [SCRIPT, "simulate", "--preset", "tiny", "--seed", "3", "--out", out],
        capture_output=True,
        text=True,
        check=False,
    )
    assert sim.returncode == 0, sim.stderr
    assert "oracle ROC-AUC" in sim.stdout and "loyal rate per exposed follower" in sim.stdout
    for name in ("events", "follows", "influencers", "brands", "campaigns", "ground_truth"):
        assert (out / f"{name}.parquet").is_file()
    val = subprocess.run(
        [SCRIPT, "validate", "--data", out], capture_output=True, text=True, check=False
    )
    assert val.returncode == 0, val.stderr
    assert "satisfies the data contract" in val.stdout


def test_simulate_purchase_only_writes_a_valid_transaction_log(tmp_path):
    out = tmp_path / "retail"
    result = runner.invoke(
        app, ["simulate", "--preset", "tiny", "--seed", "3", "--purchase-only", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "purchase-only" in result.output and "loyal rate per customer" in result.output
    assert "people sampled" not in result.output
    events = pd.read_parquet(out / "events.parquet")
    assert set(events["event_type"]) == {"purchase"}
    assert pd.read_parquet(out / "influencers.parquet")["influencer_id"].tolist() == ["retail"]
    assert runner.invoke(app, ["validate", "--data", str(out)]).exit_code == 0


def test_validate_reports_problems_and_exits_2(tiny_world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    ev = pd.read_parquet(data / "events.parquet")
    ev.loc[ev.index[:3], "event_type"] = "poke"
    ev.to_parquet(data / "events.parquet", index=False)
    (data / "brands.parquet").unlink()
    result = runner.invoke(app, ["validate", "--data", str(data)])
    assert result.exit_code == 2
    assert "events.event_type: not one of" in result.output and "'poke'" in result.output
    assert "brands: table not found" in result.output
    assert "2 problem(s)" in result.output


def test_validate_with_drop_lists_the_rows_it_would_drop_and_fails_on_whole_tables(
    tiny_world, tmp_path
):
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    ev = pd.read_parquet(data / "events.parquet")
    ev.loc[ev.index[:3], "event_type"] = "poke"
    ev.to_parquet(data / "events.parquet", index=False)
    result = runner.invoke(app, ["validate", "--data", str(data), "--on-bad-rows", "drop"])
    assert result.exit_code == 0, result.output
    assert "would drop: events.event_type: not one of" in result.output
    assert "satisfies the data contract once those rows are dropped" in result.output
    (data / "brands.parquet").unlink()
    result = runner.invoke(app, ["validate", "--data", str(data), "--on-bad-rows", "drop"])
    assert result.exit_code == 2 and "1 problem(s)" in result.output
    assert "✗ brands: table not found" in result.output


def test_validate_missing_directory(tmp_path):
    result = runner.invoke(app, ["validate", "--data", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "data directory not found" in result.output


def test_simulate_unknown_preset_writes_nothing(tmp_path):
    result = runner.invoke(app, ["simulate", "--preset", "huge", "--out", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "unknown preset 'huge'" in result.output
    assert not (tmp_path / "w").exists()


def test_every_command_and_option_has_help():
    group = typer.main.get_command(app)
    assert group.commands, "no commands registered"
    for name, command in group.commands.items():
        assert command.help, f"command {name} has no help"
        for param in command.params:
            assert getattr(param, "help", None), f"{name} {param.name} has no help text"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "loyalty-model" in result.output
