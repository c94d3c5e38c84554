"""Auth and the error shape: 401s, OpenAI error bodies with `param`, x-request-id, unknown routes,
health, and the generated admin key at first start."""

from __future__ import annotations

import os
import stat

import httpx
import openai
import pytest


def test_health_needs_no_key(api_server):
    r = httpx.get(f"http://127.0.0.1:{api_server.port}/health")
    assert r.status_code == 200 and r.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong-key-123456"},
                                     {"Authorization": "Basic abc"}])
def test_missing_or_wrong_key_is_401_in_openai_shape(api_server, headers):
    r = httpx.get(f"{api_server.base_url}/files", headers=headers)
    assert r.status_code == 401
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert "API key" in err["message"]
    assert r.headers["x-request-id"].startswith("req_")


def test_sdk_raises_authentication_error(api_server):
    with pytest.raises(openai.AuthenticationError) as e:
        api_server.client(api_key="sk-not-a-key").models.list()
    assert e.value.body["code"] == "invalid_api_key"
    assert "sk-not-a-key" not in e.value.body["message"]  # keys are masked


def test_unknown_route_and_method(api_server):
    h = {"Authorization": f"Bearer {api_server.api_key}"}
    r = httpx.get(f"{api_server.base_url}/nope", headers=h)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"
    r = httpx.put(f"{api_server.base_url}/files", headers=h)
    assert r.status_code == 404 and "Invalid URL" in r.json()["error"]["message"]


def test_bad_json_body_is_400(api_server):
    h = {"Authorization": f"Bearer {api_server.api_key}", "Content-Type": "application/json"}
    r = httpx.post(f"{api_server.base_url}/fine_tuning/jobs", headers=h, content=b"{not json")
    assert r.status_code == 400 and "parse the JSON body" in r.json()["error"]["message"]


def test_query_param_errors_name_the_param(api):
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.list(limit=0)
    assert e.value.body["param"] == "limit"
    with pytest.raises(openai.BadRequestError) as e:
        api.files.list(order="sideways")  # type: ignore[arg-type]
    assert e.value.body["param"] == "order"


def test_admin_key_generated_and_saved(tmp_path):
    from openft.config import Settings
    from openft.store.auth import create_key, ensure_admin_key, key_secret, project_for_key
    from openft.store.db import make_engine, migrate

    settings = Settings(data_dir=tmp_path / "d")
    settings.ensure_dirs()
    db = make_engine(settings.resolved_database_url())
    migrate(db)
    key = ensure_admin_key(settings, db)
    assert key and key.startswith("sk-openft-")
    path = tmp_path / "d" / "admin_key"
    assert path.read_text().strip() == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ensure_admin_key(settings, db) is None  # a second start keeps the first key
    secret = key_secret(settings)
    admin = project_for_key(db, key, secret)
    assert admin is not None and project_for_key(db, "sk-other", secret) is None
    pid, other = create_key(db, "team-b", secret=secret)
    assert project_for_key(db, other, secret) == pid != admin
    # a configured key replaces the generated one
    configured = Settings(data_dir=tmp_path / "d", api_key="sk-configured")
    assert ensure_admin_key(configured, db) is None
    assert project_for_key(db, "sk-configured", secret) == admin and project_for_key(db, key, secret) is None
    db.dispose()
