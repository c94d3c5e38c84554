"""Fixtures for the data toolkit tests: running `openft data` in-process, the reference data."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.data import SHARED_DATA


@pytest.fixture
def run_data(model_cache, monkeypatch):
    """Run `openft data ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from openft.cli.data import data_app

    monkeypatch.setenv("OPENFT_MODEL_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()

    def run(*args: str):
        r = runner.invoke(data_app, [str(a) for a in args])
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        return r.exit_code, r.stdout, r.stderr

    return run


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "sentiment" / "reviews.csv").is_file():
        pytest.skip(f"the reference data is not at {SHARED_DATA}")
    return SHARED_DATA
