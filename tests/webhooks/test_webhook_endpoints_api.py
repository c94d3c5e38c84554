"""The webhook endpoints API (OpenAI's /v1/webhook_endpoints) through the official SDK against a
live server with the default rules: create (the secret once), retrieve, list, update, rotate,
delete; event types openft never sends and non-public targets are 400s naming the param; one
project never sees another's endpoints."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from tests.support.servers import other_client

PUBLIC = "https://93.184.215.14/hooks/openft"  # a public IP literal: no DNS needed


@pytest.fixture(scope="module")
def api(strict_server):
    return strict_server.client()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/hook", "http://localhost/hook", "http://10.1.2.3/hook", "http://192.168.0.10/",
    "http://169.254.169.254/latest/meta-data", "http://[::1]:9000/", "http://[::ffff:10.0.0.1]/",
    "http://100.64.0.1/", "http://0.0.0.0/", "http://[fe80::1]/",
])
def test_non_public_targets_are_refused(api, url):
    with pytest.raises(openai.BadRequestError) as e:
        api.webhooks.create(url=url, event_types=["fine_tuning.job.succeeded"], name="x")
    assert e.value.body["param"] == "url"
    assert "OPENFT_WEBHOOKS_ALLOW_PRIVATE" in e.value.body["message"]


@pytest.mark.parametrize("url", ["ftp://93.184.215.14/x", "https://user:pw@93.184.215.14/", "not a url",
                                 "https://no-such-host.invalid/hook"])
def test_malformed_or_unresolvable_urls_are_refused(api, url):
    with pytest.raises(openai.BadRequestError) as e:
        api.webhooks.create(url=url, event_types=["fine_tuning.job.succeeded"], name="x")
    assert e.value.body["param"] == "url"


def test_event_types_openft_never_sends_are_refused(api):
    with pytest.raises(openai.BadRequestError) as e:
        api.webhooks.create(url=PUBLIC, event_types=["fine_tuning.job.failed", "batch.completed"], name="x")
    assert e.value.body["param"] == "event_types[1]" and "batch.completed" in e.value.body["message"]
    assert api.webhooks.event_types.list().data == [
        "fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled",
        "eval.run.succeeded", "eval.run.failed", "eval.run.canceled"]


def test_create_retrieve_list_update_rotate_delete(api, strict_server):
    ep = api.webhooks.create(url=PUBLIC, event_types=["fine_tuning.job.succeeded"], name="ci")
    assert ep.id.startswith("wh_") and ep.object == "webhook_endpoint" and ep.url == PUBLIC
    assert ep.signing_secret.startswith("whsec_") and len(base64.b64decode(ep.signing_secret[6:])) == 32
    assert ep.signing_secret_hint == "whsec_****" + ep.signing_secret[-4:]

    raw = httpx.get(f"{strict_server.base_url}/webhook_endpoints/{ep.id}",
                    headers={"authorization": f"Bearer {strict_server.api_key}"}).json()
    assert "signing_secret" not in raw and raw["event_types"] == ["fine_tuning.job.succeeded"]
    assert ep.id in [e.id for e in api.webhooks.list()]

    updated = api.webhooks.update(ep.id, event_types=["fine_tuning.job.failed", "eval.run.failed"])
    assert updated.event_types == ["fine_tuning.job.failed", "eval.run.failed"] and updated.name == "ci"
    with pytest.raises(openai.BadRequestError) as e:
        api.webhooks.update(ep.id, url="http://127.0.0.1/")
    assert e.value.body["param"] == "url"

    rotated = api.webhooks.rotate_secret(ep.id)
    assert rotated.signing_secret.startswith("whsec_") and rotated.signing_secret != ep.signing_secret

    gone = api.webhooks.delete(ep.id)
    assert (gone.id, gone.deleted, gone.object) == (ep.id, True, "webhook_endpoint.deleted")
    with pytest.raises(openai.NotFoundError):
        api.webhooks.retrieve(ep.id)
    assert ep.id not in [e.id for e in api.webhooks.list()]


def test_one_project_never_sees_another_projects_endpoints(api, strict_server):
    mine = api.webhooks.create(url=PUBLIC, event_types=["fine_tuning.job.succeeded"], name="mine")
    other = other_client(strict_server, "webhooks-other")
    theirs = other.webhooks.create(url=PUBLIC, event_types=["fine_tuning.job.succeeded"], name="theirs")
    assert [e.id for e in other.webhooks.list()] == [theirs.id]
    assert theirs.id not in [e.id for e in api.webhooks.list()]
    for call in (lambda: other.webhooks.retrieve(mine.id), lambda: other.webhooks.delete(mine.id),
                 lambda: other.webhooks.update(mine.id, name="x"), lambda: other.webhooks.rotate_secret(mine.id),
                 lambda: other.get(f"/webhook_endpoints/{mine.id}/deliveries", cast_to=object)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert api.webhooks.retrieve(mine.id).name == "mine"
