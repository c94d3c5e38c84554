"""API test fixtures: a real server process (`python -m openft.api.server`: uvicorn on a free
port, temporary data folder) driven by the official `openai` SDK, plus a second project's key."""

from __future__ import annotations

import pytest

from tests.support.servers import API, ServerSpec, running


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, model_cache):
    """A server without the embedded worker: jobs stay where the API and the validator put them."""
    spec = ServerSpec(API, worker=False, env={"OPENFT_MAX_UPLOAD_BYTES": "200000"})
    with running(spec.server(tmp_path_factory.mktemp("api") / "data", model_cache)) as server:
        yield server


@pytest.fixture(scope="module")
def api(api_server):
    return api_server.client()


@pytest.fixture(scope="module")
def other_api(api_server):
    """A client holding a key of another project."""
    return api_server.client(api_key=api_server.new_key("other-project")[1])
