"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume, events, checkpoints.

The API only writes the job row and its first event, then hands the job to
`openft.jobs.validate.validate_job` in a background thread; the worker does the rest. State
changes are openft.jobs.state's checked transitions (no lost races with the worker); a refused
one answers 400 naming the job's status.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request

from openft.api.deps import AppState, ProjectDep, StateDep
from openft.api.rows import get_job_row
from openft.api.schemas import (
    JobCreate,
    check_classification,
    check_job_options,
    checkpoint_object,
    cursor_page,
    event_object,
    job_object,
    keyset,
)
from openft.errors import InvalidRequest, NotFound
from openft.ids import job_id as new_job_id
from openft.jobs import state as job_state
from openft.jobs.integrations import check_installed
from openft.store.blobs import stored_file
from openft.store.db import checkpoints, files, job_events, jobs, next_seq
from openft.store.events import add_event
from openft.store.resolve import AVAILABLE, resolve_model
from openft.train import rules

log = logging.getLogger("openft.api")
router = APIRouter(prefix="/fine_tuning/jobs")



def _check_file(conn: sa.Connection, project: str, fid: str, param: str) -> None:
    row = conn.execute(sa.select(files.c.purpose).where(files.c.id == fid, files.c.project_id == project)).first()
    if row is None:
        raise InvalidRequest(f"invalid {param} (file not found): {fid}", param=param, code="invalid_" + param)
    if row.purpose != "fine-tune":
        raise InvalidRequest(f"File {fid} has purpose '{row.purpose}'; {param} needs a file uploaded with purpose "
                             "'fine-tune'.", param=param, code="invalid_" + param)


def _valid_path(state: AppState, conn: sa.Connection, fid: str | None):
    if not fid:
        return None
    return stored_file(conn, state.settings.layout, fid).path


def start_validation(settings, db, jid: str) -> threading.Thread:
    """Run the job's file validation in a background thread (the validator moves the job on)."""
    def run():
        from openft.jobs.validate import validate_job, validation_crashed

        try:
            validate_job(settings, db, jid)
        except Exception as e:  # the validator failing must not leave the job stuck
            log.exception("validating job %s failed", jid)
            validation_crashed(db, jid, e)

    t = threading.Thread(target=run, name=f"validate-{jid}", daemon=True)
    t.start()
    return t


def _check_continuable(resolved, method: dict) -> None:
    """Refused now rather than when the job starts (openft.train.rules.check_continuation)."""
    if resolved.kind != "base":
        rules.check_continuation(resolved.id, resolved.base_model, method, full_model=bool(resolved.full_model_path),
                                 what="checkpoint" if resolved.kind == "checkpoint" else "model")


@router.post("")
def create_job(body: JobCreate, state: StateDep, project: ProjectDep):
    settings = state.settings
    method = body.resolved_method()
    with state.db.begin() as conn:
        try:
            resolved = resolve_model(settings, conn, project, body.model)
        except NotFound as e:
            first, _, listing = e.message.partition(AVAILABLE)
            why = "" if "does not exist" in first else f" ({first.rstrip('.')})"
            raise InvalidRequest(f"Model {body.model} is not available for fine-tuning or does not exist{why}."
                                 + (f"{AVAILABLE}{listing}" if listing else ""),
                                 param="model", code="model_not_available") from None
        _check_continuable(resolved, method)
        check_job_options(settings, body, method, resolved.base_model)
        _check_file(conn, project, body.training_file, "training_file")
        if body.validation_file:
            _check_file(conn, project, body.validation_file, "validation_file")
        check_classification(body, method, _valid_path(state, conn, body.validation_file))
        check_installed([i.stored() for i in body.integrations or []])
        jid = new_job_id()
        now = int(time.time())
        conn.execute(jobs.insert().values(
            id=jid, project_id=project, seq=next_seq(conn, jobs), model=body.model, base_model=resolved.base_model,
            init_adapter=resolved.adapter_path, status="validating_files",
            created_at=now, method=method, training_file=body.training_file, validation_file=body.validation_file,
            result_files=[], seed=body.seed if body.seed is not None else secrets.randbelow(2**31 - 1),
            suffix=body.suffix, metadata=body.metadata,
            integrations=[i.stored() for i in body.integrations] if body.integrations else None,
            attempts=0))
        add_event(conn, jid, f"Created fine-tuning job: {jid}")
        row = get_job_row(conn, project, jid)
    start_validation(settings, state.db, jid)
    return job_object(row, settings)


def _metadata_filter(request: Request) -> tuple[bool, dict[str, str] | None]:
    """(filter_null, {k: v}) from `metadata[k]=v` / `metadata=null` query parameters."""
    wanted: dict[str, str] = {}
    null = False
    for key, value in request.query_params.multi_items():
        if key == "metadata":
            if value == "null":
                null = True
            elif value not in ("", "{}"):
                raise InvalidRequest("Filter metadata with metadata[key]=value, or metadata=null.", param="metadata")
        elif key.startswith("metadata[") and key.endswith("]"):
            wanted[key[len("metadata["):-1]] = value
    if null and wanted:
        raise InvalidRequest("Do not combine metadata=null with metadata[key]=value.", param="metadata")
    return null, wanted or None


def _status_filter(status: str | None) -> list[str] | None:
    """openft extension `status=running` or `status=queued,running` (OpenAI has no such filter)."""
    if not status:
        return None
    wanted = [s.strip() for s in status.split(",") if s.strip()]
    if bad := [s for s in wanted if s not in job_state.STATUSES]:
        raise InvalidRequest(f"Unknown job status {bad[0]!r}; one or more (comma-separated) of: "
                             f"{', '.join(job_state.STATUSES)}.", param="status", code="invalid_status")
    return wanted


@router.get("")
def list_jobs(state: StateDep, project: ProjectDep,
              request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
              status: str | None = None):
    null, wanted = _metadata_filter(request)
    statuses = _status_filter(status)
    with state.db.connect() as conn:
        q = sa.select(jobs).where(jobs.c.project_id == project)
        if statuses:
            q = q.where(jobs.c.status.in_(statuses))
        cur = None
        if after:
            cur = conn.execute(sa.select(jobs.c.seq, jobs.c.id)
                               .where(jobs.c.id == after, jobs.c.project_id == project)).first()
            if cur is None:
                raise NotFound(f"Could not find fine-tune: {after}", param="after")
        where, order = keyset(jobs, cur)
        if where is not None:
            q = q.where(where)
        q = q.order_by(*order)
        if not null and not wanted:
            rows = conn.execute(q.limit(limit + 1)).all()
        else:
            rows = []
            for r in conn.execute(q):
                md = r.metadata
                if (null and not md) or (wanted and md and all(md.get(k) == v for k, v in wanted.items())):
                    rows.append(r)
                    if len(rows) > limit:
                        break
    return cursor_page([job_object(r, state.settings) for r in rows[:limit]], len(rows) > limit)


@router.get("/{jid}")
def retrieve_job(jid: str, state: StateDep, project: ProjectDep):
    with state.db.connect() as conn:
        return job_object(get_job_row(conn, project, jid), state.settings)


_PAST = {"cancel": "cancelled", "pause": "paused", "resume": "resumed"}


def _transition(state: AppState, project: str, jid: str, verb: str, change) -> dict:
    """Apply `change(conn)` (an openft.jobs.state transition); when it is refused, 400 naming the
    job's status (never 409: the SDK would retry it)."""
    with state.db.begin() as conn:
        get_job_row(conn, project, jid)
        if not change(conn):
            row = get_job_row(conn, project, jid)
            raise InvalidRequest(f"Cannot {verb} job {jid}: its status is '{row.status}' (only a job that is "
                                 f"{', '.join(job_state.CAN[verb])} can be {_PAST[verb]}).",
                                 param="fine_tuning_job_id", code="invalid_job_status")
        return job_object(get_job_row(conn, project, jid), state.settings)


@router.post("/{jid}/cancel")
def cancel_job(jid: str, state: StateDep, project: ProjectDep):
    return _transition(state, project, jid, "cancel", lambda conn: job_state.cancel(conn, jid))


@router.post("/{jid}/pause")
def pause_job(jid: str, state: StateDep, project: ProjectDep):
    with state.db.connect() as conn:
        row = get_job_row(conn, project, jid)
    if row.status == "paused" or (row.status == "running" and row.requested_action == "pause"):
        return job_object(row, state.settings)
    if row.status == "running":
        return _transition(state, project, jid, "pause", lambda conn: job_state.request_pause(conn, jid))
    return _transition(state, project, jid, "pause", lambda conn: job_state.pause(conn, jid))


@router.post("/{jid}/resume")
def resume_job(jid: str, state: StateDep, project: ProjectDep):
    with state.db.connect() as conn:
        row = get_job_row(conn, project, jid)
    if row.status == "running" and row.requested_action == "pause":  # not paused yet: take the request back
        return _transition(state, project, jid, "resume", lambda conn: job_state.withdraw_pause(conn, jid))
    return _transition(state, project, jid, "resume", lambda conn: job_state.resume(conn, jid))


def _job_children_page(state: AppState, project: str, jid: str, table: sa.Table, after: str | None,
                       limit: int, what: str, *where) -> tuple[list, bool]:
    """Newest-first cursor page of a job's events or checkpoints: rows after the `after` id."""
    with state.db.connect() as conn:
        get_job_row(conn, project, jid)
        q = sa.select(table).where(table.c.job_id == jid, *where)
        if after:
            cur = conn.execute(sa.select(table.c.seq).where(table.c.id == after, table.c.job_id == jid)).scalar()
            if cur is None:
                raise NotFound(f"No such {what} for job {jid}: {after}", param="after")
            q = q.where(table.c.seq < cur)
        rows = conn.execute(q.order_by(table.c.seq.desc()).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


@router.get("/{jid}/events")
def list_events(state: StateDep, project: ProjectDep,
                jid: str, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
    rows, more = _job_children_page(state, project, jid, job_events, after, limit, "event")
    return cursor_page([event_object(r) for r in rows], more)


@router.get("/{jid}/checkpoints")
def list_checkpoints(state: StateDep, project: ProjectDep,
                     jid: str, after: str | None = None, limit: int = Query(10, ge=1, le=100)):
    rows, more = _job_children_page(state, project, jid, checkpoints, after, limit, "checkpoint",
                                    checkpoints.c.deleted == sa.false())
    return cursor_page([checkpoint_object(r) for r in rows], more)
