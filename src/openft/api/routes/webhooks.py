"""`/v1/webhook_endpoints`: OpenAI's webhook endpoints API (`client.webhooks.create / retrieve /
update / list / delete / rotate_secret / test`), `/v1/webhook_event_types`, and an openft
extension, `GET /v1/webhook_endpoints/{id}/deliveries`: every delivery with its attempts.

Endpoints belong to the key's project; another project's id answers 404. The signing secret is
returned only by create and rotate_secret (elsewhere a hint). Event types openft never sends and
URLs on non-public addresses (unless the operator allows them) are refused with a 400 naming
the param. Sending is the worker's (openft.jobs.webhook_delivery); `test` sends one sample
event from here and answers with the endpoint's HTTP status.
"""

from __future__ import annotations

import json
import time
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import Field

from openft.api.deps import AppState, ProjectDep, StateDep
from openft.api.schemas import Strict, cursor_page, keyset
from openft.errors import InvalidRequest, NotFound
from openft.ids import new_id
from openft.store.db import next_seq, webhook_attempts, webhook_deliveries, webhook_endpoints
from openft.webhooks import events, signing, targets

router = APIRouter()
KEEP_OLD_SECRET_SECONDS = 24 * 3600


class EndpointCreate(Strict):
    url: str = Field(max_length=2048)
    event_types: list[str] = Field(min_length=1)
    name: str | None = Field(None, max_length=512)


class EndpointUpdate(Strict):
    url: str | None = Field(None, max_length=2048)
    event_types: list[str] | None = Field(None, min_length=1)
    name: str | None = Field(None, max_length=512)


class RotateSecret(Strict):
    keep_old_secret_active_for_24_hours: bool = False


class TestEvent(Strict):
    event_type: str


def _check_types(types: list[str], param: str = "event_types") -> list[str]:
    for i, t in enumerate(types):
        if t not in events.EVENT_TYPES:
            raise InvalidRequest(f"openft does not send {t!r} events; it sends: {', '.join(events.EVENT_TYPES)}.",
                                 param=f"{param}[{i}]" if param == "event_types" else param)
    return list(dict.fromkeys(types))


def _check_url(state: AppState, url: str) -> str:
    try:
        if state.settings.webhooks_allow_private:
            targets.parse(url)
        else:
            targets.check(url, allow_private=False)
    except targets.TargetRefused as e:
        raise InvalidRequest(str(e), param="url") from None
    return url


def endpoint_object(row, secret: str | None = None) -> dict:
    obj = {"object": "webhook_endpoint", "id": row.id, "name": row.name, "url": row.url,
           "event_types": list(row.event_types), "created_at": row.created_at, "updated_at": row.updated_at,
           "signing_secret_hint": signing.hint(row.secret)}
    if secret is not None:
        obj["signing_secret"] = secret
    return obj


def _get(conn, project: str, endpoint_id: str):
    row = conn.execute(sa.select(webhook_endpoints).where(
        webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.project_id == project,
        webhook_endpoints.c.deleted == sa.false())).first()
    if row is None:
        raise NotFound(f"No such webhook endpoint: {endpoint_id}", param="webhook_endpoint_id")
    return row


@router.get("/webhook_event_types")
def list_event_types(project: ProjectDep):
    return {"object": "list", "data": list(events.EVENT_TYPES)}


@router.post("/webhook_endpoints")
def create_endpoint(body: EndpointCreate, state: StateDep, project: ProjectDep):
    types = _check_types(body.event_types)
    url = _check_url(state, body.url)
    secret, now = signing.new_secret(), int(time.time())
    eid = new_id("wh_")
    with state.db.begin() as conn:
        conn.execute(webhook_endpoints.insert().values(
            id=eid, project_id=project, seq=next_seq(conn, webhook_endpoints), name=body.name or url[:512], url=url,
            event_types=types, secret=secret, created_at=now, updated_at=now, deleted=False))
        return endpoint_object(_get(conn, project, eid), secret)


@router.get("/webhook_endpoints")
def list_endpoints(state: StateDep, project: ProjectDep, after: str | None = None, limit: int = Query(20, ge=1, le=100),
                   order: Literal["asc", "desc"] = "desc"):
    t = webhook_endpoints
    mine = sa.and_(t.c.project_id == project, t.c.deleted == sa.false())
    with state.db.connect() as conn:
        cur = None
        if after:
            cur = conn.execute(sa.select(t.c.seq, t.c.id).where(t.c.id == after, mine)).first()
            if cur is None:
                raise NotFound(f"No such webhook endpoint: {after}", param="after")
        where, order_by = keyset(t, cur, descending=order == "desc")
        q = sa.select(t).where(mine)
        rows = conn.execute((q if where is None else q.where(where)).order_by(*order_by).limit(limit + 1)).all()
    return cursor_page([endpoint_object(r) for r in rows[:limit]], len(rows) > limit)


@router.get("/webhook_endpoints/{endpoint_id}")
def retrieve_endpoint(endpoint_id: str, state: StateDep, project: ProjectDep):
    with state.db.connect() as conn:
        return endpoint_object(_get(conn, project, endpoint_id))


@router.post("/webhook_endpoints/{endpoint_id}")
def update_endpoint(endpoint_id: str, body: EndpointUpdate, state: StateDep,
                    project: ProjectDep):
    values = {}
    if body.event_types is not None:
        values["event_types"] = _check_types(body.event_types)
    if body.url is not None:
        values["url"] = _check_url(state, body.url)
    if body.name is not None:
        values["name"] = body.name
    with state.db.begin() as conn:
        row = _get(conn, project, endpoint_id)
        if any(getattr(row, k) != v for k, v in values.items()):
            conn.execute(webhook_endpoints.update().where(webhook_endpoints.c.id == endpoint_id)
                         .values(**values, updated_at=int(time.time())))
        return endpoint_object(_get(conn, project, endpoint_id))


@router.delete("/webhook_endpoints/{endpoint_id}")
def delete_endpoint(endpoint_id: str, state: StateDep, project: ProjectDep):
    with state.db.begin() as conn:
        _get(conn, project, endpoint_id)
        conn.execute(webhook_endpoints.update().where(webhook_endpoints.c.id == endpoint_id).values(deleted=True))
    return {"object": "webhook_endpoint.deleted", "id": endpoint_id, "deleted": True}


@router.post("/webhook_endpoints/{endpoint_id}/rotate_secret")
def rotate_secret(state: StateDep, project: ProjectDep, endpoint_id: str, body: RotateSecret | None = None):
    keep = bool(body and body.keep_old_secret_active_for_24_hours)
    secret, now = signing.new_secret(), int(time.time())
    with state.db.begin() as conn:
        row = _get(conn, project, endpoint_id)
        conn.execute(webhook_endpoints.update().where(webhook_endpoints.c.id == endpoint_id).values(
            secret=secret, updated_at=now, previous_secret=row.secret if keep else None,
            previous_secret_until=now + KEEP_OLD_SECRET_SECONDS if keep else None))
        return endpoint_object(_get(conn, project, endpoint_id), secret)


@router.post("/webhook_endpoints/{endpoint_id}/test")
def test_endpoint(endpoint_id: str, body: TestEvent, state: StateDep,
                  project: ProjectDep):
    """One sample event (data.id is a made-up id), signed and sent now; not retried or recorded."""
    _check_types([body.event_type], param="event_type")
    with state.db.connect() as conn:
        row = _get(conn, project, endpoint_id)
    sample_id = ("ftjob-" if body.event_type.startswith("fine_tuning.") else "evalrun_") + "test"
    event_id = new_id("evt_")
    payload = events.event_body(event_id, body.event_type, sample_id, int(time.time())).encode()
    try:
        code = targets.post(row.url, payload, signing.headers([row.secret], event_id, payload),
                            timeout=state.settings.webhooks_timeout_seconds,
                            allow_private=state.settings.webhooks_allow_private)
    except targets.TargetRefused as e:
        raise InvalidRequest(str(e), param="url") from None
    except OSError as e:
        raise InvalidRequest(f"The endpoint {row.url} did not answer: {type(e).__name__}: {e}",
                             param="webhook_endpoint_id", code="webhook_unreachable") from None
    return {"object": "webhook_endpoint.test", "webhook_endpoint_id": endpoint_id, "event_type": body.event_type,
            "status_code": code, "success": 200 <= code < 300}


@router.get("/webhook_endpoints/{endpoint_id}/deliveries")
def list_deliveries(state: StateDep, project: ProjectDep,
                    endpoint_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=100)):
    """openft extension: this endpoint's deliveries, newest first, each with every attempt."""
    t = webhook_deliveries
    with state.db.connect() as conn:
        _get(conn, project, endpoint_id)
        mine = sa.and_(t.c.endpoint_id == endpoint_id, t.c.project_id == project)
        cur = None
        if after:
            cur = conn.execute(sa.select(t.c.seq, t.c.id).where(t.c.id == after, mine)).first()
            if cur is None:
                raise NotFound(f"No such delivery: {after}", param="after")
        where, order_by = keyset(t, cur, descending=True)
        q = sa.select(t).where(mine)
        rows = conn.execute((q if where is None else q.where(where)).order_by(*order_by).limit(limit + 1)).all()
        rows, more = rows[:limit], len(rows) > limit
        tries: dict[str, list] = {r.id: [] for r in rows}
        for a in conn.execute(sa.select(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(list(tries)))
                              .order_by(webhook_attempts.c.seq)):
            tries[a.delivery_id].append({"attempt": a.attempt, "started_at": a.started_at,
                                         "duration_ms": a.duration_ms, "status_code": a.status_code,
                                         "error": a.error})
    data = [{"object": "webhook_endpoint.delivery", "id": r.id, "webhook_endpoint_id": r.endpoint_id,
             "event_id": r.event_id, "event_type": r.event_type, "event": json.loads(r.payload),
             "created_at": r.created_at, "status": r.status, "next_attempt_at": r.next_attempt_at,
             "finished_at": r.finished_at, "attempts": tries[r.id]} for r in rows]
    return cursor_page(data, more)
