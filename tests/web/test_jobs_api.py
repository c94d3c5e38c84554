"""The two openft extensions the jobs pages stand on, through HTTP against a real server (no
worker: jobs stay `queued` after validation, so what the tests write is all there is):

- `GET /v1/fine_tuning/jobs?status=...` filters the list by status (one or comma-separated),
  with OpenAI's `after`/`limit` paging kept;
- `GET /v1/fine_tuning/jobs/{id}/metrics` returns the job's metrics events as columns, with a
  cursor for "only the new points"; per project.
"""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from tests.support.data import chat_jsonl, upload
from tests.support.servers import API, ServerSpec
from tests.support.wait import wait_job

SERVER = ServerSpec(API, worker=False)


@pytest.fixture(scope="module")
def sdk(server):
    return server.client()


@pytest.fixture(scope="module")
def queued_job(sdk):
    f = upload(sdk, chat_jsonl(12))
    job = sdk.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id)
    return wait_job(sdk, job.id, {"queued"})


def http(server, key=None):
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key or server.api_key}"})


def write_metrics(server, job_id, points):
    """As openft.jobs.hooks.DBHooks writes them: one `metrics` event per step."""
    from openft.store.events import add_event

    db = server.db()
    try:
        with db.begin() as conn:
            for p in points:
                add_event(conn, job_id, f"Step {p['step']}/{p.get('total_steps')}", type="metrics", data=p)
            add_event(conn, job_id, "an ordinary message between metrics")
    finally:
        db.dispose()


def point(step, total=10, **extra):
    return {"step": step, "total_steps": total, "train_loss": 2.0 / step, "train_mean_token_accuracy": step / 10,
            "valid_loss": None, "valid_mean_token_accuracy": None, "full_valid_loss": None,
            "full_valid_mean_token_accuracy": None, **extra}


def test_metrics_as_columns_then_only_new_points(server, queued_job):
    c = http(server)
    empty = c.get(f"/fine_tuning/jobs/{queued_job.id}/metrics").json()
    assert empty["steps"] == [] and empty["train_loss"] == [] and empty["total_steps"] is None
    write_metrics(server, queued_job.id, [point(1), point(2, valid_loss=1.5), point(3, full_valid_loss=1.25)])
    m = c.get(f"/fine_tuning/jobs/{queued_job.id}/metrics").json()
    assert m["object"] == "fine_tuning.job.metrics" and m["job_id"] == queued_job.id
    assert m["steps"] == [1, 2, 3] and m["total_steps"] == 10 and m["has_more"] is False
    assert m["train_loss"] == [2.0, 1.0, 2.0 / 3]
    assert m["train_mean_token_accuracy"] == [0.1, 0.2, 0.3]
    assert m["valid_loss"] == [None, 1.5, None] and m["full_valid_loss"] == [None, None, 1.25]
    assert "train_reward_accuracy" not in m  # DPO columns only for jobs that have them

    write_metrics(server, queued_job.id, [point(4), point(5)])
    new = c.get(f"/fine_tuning/jobs/{queued_job.id}/metrics", params={"after": m["cursor"]}).json()
    assert new["steps"] == [4, 5] and new["train_loss"] == [0.5, 0.4]
    again = c.get(f"/fine_tuning/jobs/{queued_job.id}/metrics", params={"after": new["cursor"]}).json()
    assert again["steps"] == [] and again["cursor"] == new["cursor"]

    page = c.get(f"/fine_tuning/jobs/{queued_job.id}/metrics", params={"limit": 2}).json()
    assert page["steps"] == [1, 2] and page["has_more"] is True
    rest = c.get(f"/fine_tuning/jobs/{queued_job.id}/metrics", params={"after": page["cursor"]}).json()
    assert rest["steps"] == [3, 4, 5] and rest["has_more"] is False


def test_repeated_steps_keep_the_latest_values(server, sdk):
    f = upload(sdk, chat_jsonl(12))
    job = wait_job(sdk, sdk.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id).id, {"queued"})
    # steps 1..3, then a resume from the checkpoint at step 1 writes 2 and 3 again
    write_metrics(server, job.id, [point(1), point(2), point(3), point(2, train_loss=9.0), point(3, train_loss=8.0)])
    m = http(server).get(f"/fine_tuning/jobs/{job.id}/metrics").json()
    assert m["steps"] == [1, 2, 3] and m["train_loss"] == [2.0, 9.0, 8.0]


def test_metrics_are_per_project_and_errors_have_openai_shape(server, queued_job):
    _, other = server.new_key("other-project")
    r = http(server, other).get(f"/fine_tuning/jobs/{queued_job.id}/metrics")
    assert r.status_code == 404 and r.json()["error"]["param"] == "fine_tuning_job_id"
    r = http(server).get("/fine_tuning/jobs/ftjob-nope/metrics")
    assert r.status_code == 404
    r = http(server).get(f"/fine_tuning/jobs/{queued_job.id}/metrics", params={"after": "x1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"
    assert http(server).get("/fine_tuning/jobs/x/metrics", headers={"Authorization": "Bearer bad"}).status_code == 401


def test_list_filtered_by_status_pages_newest_first(server, sdk, queued_job):
    f = upload(sdk, chat_jsonl(12))
    made = [wait_job(sdk, sdk.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id).id, {"queued"})
            for _ in range(3)]
    sdk.fine_tuning.jobs.cancel(made[1].id)
    c = http(server)
    queued = [j["id"] for j in c.get("/fine_tuning/jobs", params={"status": "queued", "limit": 100}).json()["data"]]
    assert made[1].id not in queued and made[2].id in queued and made[0].id in queued
    assert queued.index(made[2].id) < queued.index(made[0].id)  # newest first
    page = c.get("/fine_tuning/jobs", params={"status": "queued", "limit": 1}).json()
    assert page["has_more"] is True and page["data"][0]["id"] == queued[0]
    nxt = c.get("/fine_tuning/jobs", params={"status": "queued", "limit": 1, "after": page["last_id"]}).json()
    assert nxt["data"][0]["id"] == queued[1]
    cancelled = c.get("/fine_tuning/jobs", params={"status": "cancelled"}).json()["data"]
    assert [j["id"] for j in cancelled] == [made[1].id]
    both = c.get("/fine_tuning/jobs", params={"status": "cancelled,queued", "limit": 100}).json()["data"]
    assert {j["status"] for j in both} == {"queued", "cancelled"} and len(both) == len(queued) + 1
    # through the official SDK too, as an extra query parameter
    via_sdk = sdk.fine_tuning.jobs.list(extra_query={"status": "cancelled"})
    assert [j.id for j in via_sdk.data] == [made[1].id]


def test_unknown_status_is_a_400_naming_the_param(server):
    r = http(server).get("/fine_tuning/jobs", params={"status": "runing"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "status" and "runing" in err["message"] and "running" in err["message"]


def test_metrics_query_reads_only_this_jobs_metrics_events(server, queued_job):
    """The ordinary events between metrics are not points (and the columns line up)."""
    m = http(server).get(f"/fine_tuning/jobs/{queued_job.id}/metrics").json()
    n = len(m["steps"])
    assert all(len(m[k]) == n for k in ("train_loss", "valid_loss", "full_valid_mean_token_accuracy"))
    db = server.db()
    try:
        from openft.store.db import job_events

        with db.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(job_events).where(
                job_events.c.job_id == queued_job.id, job_events.c.type == "metrics")).scalar()
    finally:
        db.dispose()
    assert count == n


def test_a_diverged_loss_is_null_not_invalid_json(server, sdk):
    f = upload(sdk, chat_jsonl(12))
    job = wait_job(sdk, sdk.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id).id, {"queued"})
    write_metrics(server, job.id, [point(1), point(2, train_loss=float("nan")), point(3, train_loss=float("inf"))])
    r = http(server).get(f"/fine_tuning/jobs/{job.id}/metrics")
    assert r.status_code == 200 and "NaN" not in r.text and "Infinity" not in r.text
    assert r.json()["train_loss"] == [2.0, None, None] and r.json()["steps"] == [1, 2, 3]
