"""The app in-process (error handler, request ids, dependency overrides) and the real
`openft serve` command (the shared `live_server` fixture) answering the SDK."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def app(settings):
    from openft.api.app import create_app
    from openft.store.auth import ensure_admin_key
    from openft.store.db import make_engine, migrate

    settings.ensure_dirs()
    db = make_engine(settings.resolved_database_url())
    migrate(db)
    ensure_admin_key(settings, db)
    app = create_app(settings, db=db)
    yield app
    db.dispose()


def test_unexpected_error_is_500_in_openai_shape_with_request_id(app, settings):
    @app.get("/v1/boom")
    def boom():
        raise RuntimeError("kaboom")

    app.router.routes.insert(0, app.router.routes.pop())  # ahead of the dashboard's catch-all mount at /

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/v1/boom")
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["type"] == "server_error" and err["code"] == "internal_error" and "kaboom" not in err["message"]
    assert r.headers["x-request-id"] in err["message"]


def test_request_ids_are_unique_and_overrides_work(app):
    from openft.api.deps import get_project

    app.dependency_overrides[get_project] = lambda: "proj_test"
    with TestClient(app) as client:
        a, b = client.get("/v1/files"), client.get("/v1/files")
    assert a.status_code == 200 and a.json() == {"object": "list", "data": [], "has_more": False,
                                                 "first_id": None, "last_id": None}
    assert a.headers["x-request-id"] != b.headers["x-request-id"]


def test_openft_serve_command(live_server):
    assert httpx.get(f"http://127.0.0.1:{live_server.port}/health").status_code == 200
    client = live_server.client()
    assert "openft-tiny" in [m.id for m in client.models.list()]


def test_openapi_schema_renders(app):
    with TestClient(app) as client:
        r = client.get("/openapi.json")
    assert r.status_code == 200 and "/v1/fine_tuning/jobs" in r.json()["paths"]


def test_server_thread(settings):
    from tests.support.servers import in_process_server

    with in_process_server(settings, worker=False) as srv:
        port = srv.settings.port
        assert [f.id for f in srv.client.files.list()] == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")
