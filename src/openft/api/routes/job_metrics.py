"""`GET /v1/fine_tuning/jobs/{id}/metrics`: an openft extension (OpenAI has no such route) that
returns a job's per-step metrics as columns, for charts.

The trainer writes one `metrics` event per step (openft.jobs.hooks.DBHooks: `job_events` rows
with `type="metrics"` and the step's numbers in `data`). Reading 10,000 of them through the
events list, 100 at a time, is 100 requests; this route reads them in one query and answers

    {"object": "fine_tuning.job.metrics", "job_id", "steps": [...], "train_loss": [...], ...,
     "total_steps", "cursor", "has_more", "charts": [...]}

one list per metric, aligned with `steps` (null where a step has no value, e.g. the full
validation that runs once per epoch). `cursor` is opaque: pass it back as `after` to receive only
the points written since (a live chart polls with it). A step written twice (a job resumed from
an earlier checkpoint repeats steps) keeps its latest values, and `steps` is strictly increasing
within one answer; a client appending a later answer drops its own points from the first
repeated step on. `charts` names the columns and labels them for a chart (see CHARTS): the
dashboard reads the metric names from it rather than keeping a copy.

Per project: another project's job is a 404, like the other job routes. Knows the tables and
the metric names of openft.train.metrics; knows nothing about training.
"""

from __future__ import annotations

import json
import math

import sqlalchemy as sa
from fastapi import APIRouter, Query, Response

from openft.api.deps import ProjectDep, StateDep
from openft.api.rows import get_job_row
from openft.errors import InvalidRequest
from openft.store.db import job_events
from openft.train import metrics as M

router = APIRouter(prefix="/fine_tuning/jobs")

COLUMNS = tuple(k for k in M.METRIC_KEYS if k != "step")  # always present, null-filled
OPTIONAL = M.DPO_METRIC_KEYS + M.SFT_METRIC_KEYS           # present when any point has them

# The charts a client draws (the dashboard's js/chart.js draws these and knows no metric name):
# (name, title, quantity, values are shares in [0, 1], a log scale makes sense, DPO jobs only).
_CHARTS = (("loss", "Loss", "loss", False, True, False),
           ("accuracy", "Token accuracy", "mean_token_accuracy", True, False, False),
           ("reward_margin", "Reward margin (chosen − rejected)", "reward_margin", False, False, True),
           ("reward_accuracy", "Reward accuracy (chosen ranked first)", "reward_accuracy", True, False, True))
CHARTS = [{"name": name, "title": title, "share": share, "log_scale": log, "optional": optional,
           "series": [{"key": M.key(split, quantity), "label": M.label(split, quantity),
                       "per_epoch": split == "full_valid"} for split in M.SPLITS]}
          for name, title, quantity, share, log, optional in _CHARTS]
"""`charts` of every answer: which columns form which chart, with their labels; `per_epoch` series
have one point per epoch (drawn as points, never smoothed)."""


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
    points = [p for p in points if p.get("step") is not None]
    steps = [int(p["step"]) for p in points]
    if any(a >= b for a, b in zip(steps, steps[1:])):  # repeated steps (a resume): keep the latest
        by_step = dict(zip(steps, points))
        steps = sorted(by_step)
        points = [by_step[s] for s in steps]
    out: dict = {"steps": steps}
    extra = [k for k in OPTIONAL if any(k in p for p in points)]
    for key in (*COLUMNS, *extra):
        out[key] = [p.get(key) for p in points]
    return out


def _finite(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None


def json_response(body: dict) -> Response:
    """JSON without FastAPI's per-value encoder (a 10,000-step answer is 70,000 numbers); a
    diverged run's NaN/inf losses become null, which JSON can carry."""
    try:
        text = json.dumps(body, allow_nan=False, separators=(",", ":"))
    except ValueError:
        body = {k: [_finite(v) for v in val] if isinstance(val, list) else val for k, val in body.items()}
        text = json.dumps(body, allow_nan=False, separators=(",", ":"))
    return Response(content=text, media_type="application/json")


@router.get("/{jid}/metrics")
def job_metrics(state: StateDep, project: ProjectDep,
                jid: str, after: str | None = None, limit: int = Query(100_000, ge=1, le=100_000)):
    since = _cursor(after)
    with state.db.connect() as conn:
        get_job_row(conn, project, jid)
        # the stored JSON text, parsed in one go below (10,000 json.loads calls cost twice as much)
        rows = conn.execute(
            sa.select(job_events.c.seq, sa.cast(job_events.c.data, sa.Text).label("text"))
            .where(job_events.c.job_id == jid, job_events.c.type == "metrics", job_events.c.seq > since)
            .order_by(job_events.c.seq).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    points = [p for p in json.loads("[" + ",".join(r.text for r in rows if r.text) + "]") if p]
    total = next((p.get("total_steps") for p in reversed(points) if p.get("total_steps") is not None), None)
    return json_response({"object": "fine_tuning.job.metrics", "job_id": jid, **columns(points), "total_steps": total,
                          "cursor": str(rows[-1].seq if rows else since), "has_more": more, "charts": CHARTS})
