"""API test fixtures: a real server process (`python -m openft.api.server`: uvicorn on a free
port, temporary data folder) driven by the official `openai` SDK, plus a second project's key."""

from __future__ import annotations

import pytest

from tests.conftest import LiveServer


class ApiServer(LiveServer):
    """`openft.api.server.run` in a subprocess, independent of the CLI."""

    argv = ("-m", "openft.api.server")


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, model_cache):
    """A server without the embedded worker: jobs stay where the API and the validator put them."""
    server = ApiServer(tmp_path_factory.mktemp("api") / "data", model_cache,
                       env={"OPENFT_EMBEDDED_WORKER": "false", "OPENFT_MAX_UPLOAD_BYTES": "200000"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(api_server):
    return api_server.client()


@pytest.fixture(scope="module")
def other_api(api_server):
    """A client holding a key of another project."""
    return api_server.client(api_key=api_server.new_key("other-project")[1])
