"""The webhook events openft sends and how one is enqueued.

An event is OpenAI's payload `{"id": "evt_...", "object": "event", "created_at", "type",
"data": {"id": <job or run id>}}` (openai.types.webhooks.*WebhookEvent). `enqueue` writes one
`pending` delivery per endpoint of the project that subscribed to the type, in the caller's
transaction: the status change that causes an event and its deliveries commit together or not
at all, and nothing here waits for the network (the worker's delivery loop sends them).

Knows the webhook tables and the `jobs` / `eval_runs` rows' project; nothing about HTTP.
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from openft.ids import new_id
from openft.store.db import eval_runs, jobs, next_seq, webhook_deliveries, webhook_endpoints

# a terminal status -> the event type it sends (OpenAI spells the job's "cancelled" and the run's "canceled")
JOB_EVENTS = {"succeeded": "fine_tuning.job.succeeded", "failed": "fine_tuning.job.failed",
              "cancelled": "fine_tuning.job.cancelled"}
EVAL_RUN_EVENTS = {"completed": "eval.run.succeeded", "failed": "eval.run.failed", "canceled": "eval.run.canceled"}
EVENT_TYPES = (*JOB_EVENTS.values(), *EVAL_RUN_EVENTS.values())


def event_body(event_id: str, event_type: str, object_id: str, created_at: int) -> str:
    """The JSON body that is signed and sent, exactly as OpenAI's webhook events."""
    return json.dumps({"id": event_id, "object": "event", "created_at": int(created_at), "type": event_type,
                       "data": {"id": object_id}}, separators=(",", ":"))


def enqueue(conn: sa.Connection, project_id: str, event_type: str, object_id: str) -> int:
    """One pending delivery per subscribed endpoint of `project_id`; returns how many."""
    rows = conn.execute(sa.select(webhook_endpoints.c.id, webhook_endpoints.c.event_types).where(
        webhook_endpoints.c.project_id == project_id, webhook_endpoints.c.deleted == sa.false())).all()
    targets = [r.id for r in rows if event_type in (r.event_types or [])]
    if not targets:
        return 0
    now = time.time()
    event_id = new_id("evt_")  # one event; every endpoint gets the same id (its webhook-id header)
    body = event_body(event_id, event_type, object_id, int(now))
    for endpoint_id in targets:
        conn.execute(webhook_deliveries.insert().values(
            id=new_id("whdlv_"), seq=next_seq(conn, webhook_deliveries), endpoint_id=endpoint_id,
            project_id=project_id, event_id=event_id, event_type=event_type, payload=body, created_at=int(now),
            status="pending", attempts=0, next_attempt_at=now))
    return len(targets)


def job_finished(conn: sa.Connection, job_id: str, status: str) -> int:
    """Enqueue the fine_tuning.job.* event of a job that just reached `status` (others: nothing)."""
    if status not in JOB_EVENTS:
        return 0
    project = conn.execute(sa.select(jobs.c.project_id).where(jobs.c.id == job_id)).scalar()
    return enqueue(conn, project, JOB_EVENTS[status], job_id) if project else 0


def eval_run_finished(conn: sa.Connection, run_id: str, status: str) -> int:
    """Enqueue the eval.run.* event of a run that just reached `status` (others: nothing)."""
    if status not in EVAL_RUN_EVENTS:
        return 0
    project = conn.execute(sa.select(eval_runs.c.project_id).where(eval_runs.c.id == run_id)).scalar()
    return enqueue(conn, project, EVAL_RUN_EVENTS[status], run_id) if project else 0
