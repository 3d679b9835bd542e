"""Shared fixtures: simulated worlds written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loyalty_model.cli import app


def simulate_to(out: Path, preset: str, seed: int) -> Path:
    result = CliRunner().invoke(
        app, ["simulate", "--preset", preset, "--seed", str(seed), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The `tiny` world, seed 1. Read-only: copy it before changing anything."""
    return simulate_to(tmp_path_factory.mktemp("tiny") / "data", "tiny", 1)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """The `small` world (the demo's), seed 7. Read-only."""
    return simulate_to(tmp_path_factory.mktemp("small") / "data", "small", 7)
