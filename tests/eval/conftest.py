"""Fixtures of the eval tests: the CLI pointed at the module's live server."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cli_env(live_server):
    """OPENFT_BASE_URL / OPENFT_API_KEY name the live server, and no OPENAI_API_KEY leaks in."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OPENAI_API_KEY", raising=False)
        mp.setenv("OPENFT_API_KEY", live_server.api_key)
        mp.setenv("OPENFT_BASE_URL", live_server.base_url)
        yield
