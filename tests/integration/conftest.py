"""Fixtures the integration tests share."""

from __future__ import annotations

import pytest


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A tracking store of the test's own (MLFLOW_TRACKING_URI), with the working directory
    in the temp folder, so that the default artifact root lands there too."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri
