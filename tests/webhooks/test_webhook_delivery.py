"""Webhook deliveries from a live server's worker to a real local receiver, checked with the
official SDK's verifier (`client.webhooks.unwrap`): a job cancelled, failed or succeeded (tiny
model) and an eval run completed send OpenAI's events; a 500 is retried with backoff and every
attempt is listed; attempts are bounded; another project's endpoints get nothing; a delivery
pending when the server stops is sent after it starts again."""

from __future__ import annotations

import json
import time

import openai
import pytest
import sqlalchemy as sa

from openft.store.db import webhook_attempts, webhook_deliveries
from tests.support.data import write_chat_jsonl
from tests.support.receiver import DELIVERING_ENV, Receiver
from tests.support.servers import LiveServer, other_client
from tests.support.wait import wait_until

ALL = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled",
       "eval.run.succeeded", "eval.run.failed", "eval.run.canceled"]


@pytest.fixture(scope="module")
def api(hook_server):
    return hook_server.client()


@pytest.fixture(scope="module")
def train_file(api, tmp_path_factory):
    path = write_chat_jsonl(tmp_path_factory.mktemp("wh") / "train.jsonl", n=12)
    return api.files.create(file=path.open("rb"), purpose="fine-tune").id


def _endpoint(api, receiver, types=ALL):
    return api.webhooks.create(url=receiver.url, event_types=types, name="test receiver")


def _deliveries(api, endpoint_id):
    return api.get(f"/webhook_endpoints/{endpoint_id}/deliveries", cast_to=object)["data"]


def _wait_delivery(api, endpoint_id, status, timeout=60.0):
    return wait_until(lambda: next((d for d in _deliveries(api, endpoint_id) if d["status"] == status), None),
                      timeout, what=f"a {status} delivery of {endpoint_id}")


def test_cancelled_job_event_verifies_with_the_sdk(api, receiver, train_file):
    ep = _endpoint(api, receiver)
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train_file)
    api.fine_tuning.jobs.cancel(job.id)
    [(headers, body)] = receiver.wait(1)
    event = api.webhooks.unwrap(body, headers, secret=ep.signing_secret)
    assert isinstance(event, openai.types.webhooks.FineTuningJobCancelledWebhookEvent)
    assert (event.type, event.object, event.data.id) == ("fine_tuning.job.cancelled", "event", job.id)
    assert event.id.startswith("evt_") and headers["webhook-id"] == event.id
    assert abs(event.created_at - time.time()) < 60
    with pytest.raises(openai.InvalidWebhookSignatureError):
        api.webhooks.unwrap(body, headers, secret=api.webhooks.rotate_secret(ep.id).signing_secret)
    d = _wait_delivery(api, ep.id, "delivered")
    assert d["event"] == json.loads(body) and [a["status_code"] for a in d["attempts"]] == [200]


def test_failed_job_event(api, receiver, tmp_path):
    ep = _endpoint(api, receiver, ["fine_tuning.job.failed"])
    bad = api.files.create(file=write_chat_jsonl(tmp_path / "few.jsonl", n=2).open("rb"), purpose="fine-tune")
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=bad.id)
    [(headers, body)] = receiver.wait(1)
    event = api.webhooks.unwrap(body, headers, secret=ep.signing_secret)
    assert (event.type, event.data.id) == ("fine_tuning.job.failed", job.id)
    assert api.fine_tuning.jobs.retrieve(job.id).status == "failed"


def test_a_500_is_retried_and_every_attempt_is_listed(api, train_file):
    receiver = Receiver(codes=[500, 503])  # attempts 1 and 2 fail, attempt 3 is answered 200
    try:
        ep = _endpoint(api, receiver)
        job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train_file)
        api.fine_tuning.jobs.cancel(job.id)
        requests = receiver.wait(3)
        assert len({h["webhook-id"] for h, _ in requests}) == 1  # one event, sent three times
        for headers, body in requests:
            assert api.webhooks.unwrap(body, headers, secret=ep.signing_secret).data.id == job.id
        d = _wait_delivery(api, ep.id, "delivered")
        assert [(a["attempt"], a["status_code"]) for a in d["attempts"]] == [(1, 500), (2, 503), (3, 200)]
        # signed afresh: each attempt carries the second it was made in (webhook-timestamp counts whole
        # seconds, from when that attempt started to when it arrived), not the first attempt's headers
        for (headers, _), attempt, arrived in zip(requests, d["attempts"], receiver.received_at):
            assert int(attempt["started_at"]) <= int(headers["webhook-timestamp"]) <= arrived, (attempt, headers)
        assert "HTTP 500" in d["attempts"][0]["error"] and d["attempts"][2]["error"] is None
        gaps = [b["started_at"] - a["started_at"] for a, b in zip(d["attempts"], d["attempts"][1:])]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # OPENFT_WEBHOOKS_RETRY_SECONDS=0.2, doubled
    finally:
        receiver.close()


def test_attempts_are_bounded(api, train_file):
    receiver = Receiver(codes=[500] * 10)
    try:
        ep = _endpoint(api, receiver)
        job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train_file)
        api.fine_tuning.jobs.cancel(job.id)
        d = _wait_delivery(api, ep.id, "failed")
        assert [a["status_code"] for a in d["attempts"]] == [500, 500, 500]  # OPENFT_WEBHOOKS_MAX_ATTEMPTS=3
        assert len(receiver.requests) == 3 and d["next_attempt_at"] is None
    finally:
        receiver.close()


def test_another_projects_endpoints_get_nothing(api, hook_server, receiver, train_file):
    other = other_client(hook_server, "webhook-isolation")
    theirs = other.webhooks.create(url=receiver.url, event_types=ALL, name="theirs")
    mine_receiver = Receiver()
    try:
        mine = _endpoint(api, mine_receiver)
        job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train_file)
        api.fine_tuning.jobs.cancel(job.id)
        assert mine_receiver.events(1)[0]["data"]["id"] == job.id
        _wait_delivery(api, mine.id, "delivered")
        # the deliveries of an event are written with the status change, in one transaction
        assert _deliveries(other, theirs.id) == [] and receiver.requests == []
    finally:
        mine_receiver.close()


def test_eval_run_event(api, receiver):
    ep = _endpoint(api, receiver, ["eval.run.succeeded", "eval.run.failed", "eval.run.canceled"])
    ev = api.evals.create(name="w", data_source_config={
        "type": "custom", "include_sample_schema": True,
        "item_schema": {"type": "object", "properties": {"label": {"type": "string"}}}},
        testing_criteria=[{"type": "string_check", "name": "eq", "input": "{{sample.output_text}}",
                           "reference": "{{item.label}}", "operation": "eq"}])
    run = api.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": [
        {"item": {"label": "yes"}, "sample": {"output_text": "yes"}}]}})
    [(headers, body)] = receiver.wait(1)
    event = api.webhooks.unwrap(body, headers, secret=ep.signing_secret)
    assert isinstance(event, openai.types.webhooks.EvalRunSucceededWebhookEvent) and event.data.id == run.id
    assert api.evals.runs.retrieve(run.id, eval_id=ev.id).status == "completed"


@pytest.mark.slow
def test_succeeded_job_on_the_tiny_model(api, receiver, train_file):
    ep = _endpoint(api, receiver, ["fine_tuning.job.succeeded"])
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train_file,
                                      hyperparameters={"n_epochs": 1, "batch_size": 4})
    [(headers, body)] = receiver.wait(1, timeout=300)
    event = api.webhooks.unwrap(body, headers, secret=ep.signing_secret)
    assert isinstance(event, openai.types.webhooks.FineTuningJobSucceededWebhookEvent) and event.data.id == job.id
    assert api.fine_tuning.jobs.retrieve(job.id).status == "succeeded"


def test_a_pending_delivery_survives_a_restart(tmp_path, model_cache):
    receiver = Receiver(codes=[500])
    env = {**DELIVERING_ENV, "OPENFT_WEBHOOKS_RETRY_SECONDS": "3"}
    server = LiveServer(tmp_path / "data", model_cache, env=env).start()
    try:
        api = server.client()
        ep = _endpoint(api, receiver)
        path = write_chat_jsonl(tmp_path / "t.jsonl", n=12)
        job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=api.files.create(
            file=path.open("rb"), purpose="fine-tune").id)
        api.fine_tuning.jobs.cancel(job.id)
        receiver.wait(1)  # the first attempt got a 500: the next is due 3 s later
        server.stop()
        db = server.db()
        try:  # what the next start inherits: the delivery, still pending, and its first attempt
            with db.connect() as conn:
                pending = conn.execute(sa.select(webhook_deliveries.c.status, webhook_attempts.c.status_code).join(
                    webhook_attempts, webhook_attempts.c.delivery_id == webhook_deliveries.c.id)).all()
        finally:
            db.dispose()
        assert [tuple(r) for r in pending] == [("pending", 500)]
        server.start()
        [_, (headers, body)] = receiver.wait(2)
        assert api.webhooks.unwrap(body, headers, secret=ep.signing_secret).data.id == job.id
        d = _wait_delivery(server.client(), ep.id, "delivered")
        assert [a["status_code"] for a in d["attempts"]] == [500, 200]
    finally:
        server.stop()
        receiver.close()
