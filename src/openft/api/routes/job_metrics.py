"""`GET /v1/fine_tuning/jobs/{id}/metrics`: an openft extension (OpenAI has no such route) that
returns a job's per-step metrics as columns, for charts.

The trainer writes one `metrics` event per step (openft.jobs.hooks.DBHooks: `job_events` rows
with `type="metrics"` and the step's numbers in `data`). Reading 10,000 of them through the
events list, 100 at a time, is 100 requests; this route reads them in one query and answers

    {"object": "fine_tuning.job.metrics", "job_id", "steps": [...], "train_loss": [...], ...,
     "total_steps", "cursor", "has_more"}

one list per metric, aligned with `steps` (null where a step has no value, e.g. the full
validation that runs once per epoch). `cursor` is opaque: pass it back as `after` to receive only
the points written since (a live chart polls with it). A step written twice (a job resumed from
an earlier checkpoint repeats steps) keeps its latest values, and `steps` is strictly increasing
within one answer; a client appending a later answer drops its own points from the first
repeated step on.

Per project: another project's job is a 404, like the other job routes. Knows the tables and
the metric names of openft.jobs.hooks; knows nothing about training.
"""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query

from openft.api.deps import AppState, get_project, get_state
from openft.api.routes.fine_tuning import get_job_row
from openft.errors import InvalidRequest
from openft.jobs.hooks import DPO_METRIC_KEYS, METRIC_KEYS
from openft.store.db import job_events

router = APIRouter(prefix="/fine_tuning/jobs")

COLUMNS = tuple(k for k in METRIC_KEYS if k != "step")  # always present, null-filled
OPTIONAL = DPO_METRIC_KEYS                               # present when any point has them


def _cursor(after: str | None) -> int:
    if after in (None, ""):
        return 0
    if not after.isdigit():
        raise InvalidRequest(f"Invalid cursor {after!r}: pass back the `cursor` of an earlier answer.",
                             param="after", code="invalid_cursor")
    return int(after)


def columns(points: list[dict]) -> dict:
    """Per-step dicts (in write order) -> {steps, <metric>: [...]}: one value per step, the last
    written winning, sorted by step."""
    by_step: dict[int, dict] = {}
    for p in points:
        step = p.get("step")
        if step is None:
            continue
        by_step.pop(int(step), None)  # a repeat moves to the end, then the sort below puts it back
        by_step[int(step)] = p
    steps = sorted(by_step)
    out: dict = {"steps": steps}
    extra = [k for k in OPTIONAL if any(k in p for p in by_step.values())]
    for key in (*COLUMNS, *extra):
        out[key] = [by_step[s].get(key) for s in steps]
    return out


@router.get("/{jid}/metrics")
def job_metrics(jid: str, after: str | None = None, limit: int = Query(100_000, ge=1, le=100_000),
                state: AppState = Depends(get_state), project: str = Depends(get_project)):
    since = _cursor(after)
    with state.db.connect() as conn:
        get_job_row(conn, project, jid)
        rows = conn.execute(
            sa.select(job_events.c.seq, job_events.c.data)
            .where(job_events.c.job_id == jid, job_events.c.type == "metrics", job_events.c.seq > since)
            .order_by(job_events.c.seq).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    points = [r.data for r in rows if r.data]
    total = next((p.get("total_steps") for p in reversed(points) if p.get("total_steps") is not None), None)
    return {"object": "fine_tuning.job.metrics", "job_id": jid, **columns(points), "total_steps": total,
            "cursor": str(rows[-1].seq if rows else since), "has_more": more}
