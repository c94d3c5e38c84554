"""`/v1/evals`: OpenAI's Evals API: evals (create, list, retrieve, update, delete), runs (create,
list, retrieve, cancel, delete) and their output items (list, retrieve).

The API checks everything it can at creation (grader types, templates against the item schema,
judge and run models in this project, files) and answers 400 naming the param; it stores the run
`queued` with its items, and the worker (openft.jobs.eval_runs) generates, grades and writes the
output items. result_counts, per_testing_criteria_results and per_model_usage are computed from
the output items when a run is read. A run's status changes (cancel, and the cancel that deleting
a run or its eval implies) are openft.jobs.eval_state's. Knows nothing about generation or grading internals.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import Field

from openft.api.deps import AppState, ProjectDep, StateDep
from openft.api.schemas import Strict, cursor_page, keyset
from openft.errors import InvalidRequest, NotFound, OpenFTError
from openft.eval import datasource, graders
from openft.ids import new_id
from openft.jobs import eval_state
from openft.store.blobs import stored_file
from openft.store.db import eval_output_items, eval_runs, evals, next_seq
from openft.store.resolve import available_models, resolve_model
from openft.vocab import check_metadata

router = APIRouter(prefix="/evals")
RUN_STATUSES = eval_state.STATUSES


class EvalCreate(Strict):
    data_source_config: dict[str, Any]
    testing_criteria: list[Any] = Field(min_length=1)
    name: str | None = Field(None, max_length=512)
    metadata: dict[str, str] | None = None


class EvalUpdate(Strict):
    name: str | None = Field(None, max_length=512)
    metadata: dict[str, str] | None = None


class RunCreate(Strict):
    data_source: dict[str, Any]
    name: str | None = Field(None, max_length=512)
    metadata: dict[str, str] | None = None


@contextlib.contextmanager
def models_listed(state: AppState, project: str):
    """A 400 for a model that does not exist (a run's or a judge's) also names the available ones."""
    try:
        yield
    except InvalidRequest as e:
        if e.code == "model_not_found":
            with state.db.connect() as conn:
                e.message += available_models(state.settings, conn, project)
        raise


def model_checker(state: AppState, project: str):
    def exists(model: str) -> bool:
        try:
            with state.db.connect() as conn:
                resolve_model(state.settings, conn, project, model)
            return True
        except OpenFTError:
            return False
    return exists


def eval_object(row) -> dict:
    return {"object": "eval", "id": row.id, "name": row.name, "created_at": row.created_at,
            "data_source_config": row.data_source_config, "testing_criteria": row.testing_criteria,
            "metadata": row.metadata or {}}


def _get_eval(conn, project: str, eval_id: str):
    row = conn.execute(sa.select(evals).where(evals.c.id == eval_id, evals.c.project_id == project,
                                              evals.c.deleted == sa.false())).first()
    if row is None:
        raise NotFound(f"Eval with id '{eval_id}' not found.", param="eval_id")
    return row


def _get_run(conn, project: str, eval_id: str, run_id: str):
    row = conn.execute(sa.select(eval_runs).where(eval_runs.c.id == run_id, eval_runs.c.eval_id == eval_id,
                                                  eval_runs.c.project_id == project,
                                                  eval_runs.c.deleted == sa.false())).first()
    if row is None:
        raise NotFound(f"Run with id '{run_id}' not found for eval '{eval_id}'.", param="run_id")
    return row


def _page(conn, table, base, cursor_where, after: str | None, limit: int, order: str, what: str):
    cur = None
    if after:
        cur = conn.execute(sa.select(table.c.seq, table.c.id).where(table.c.id == after, cursor_where)).first()
        if cur is None:
            raise NotFound(f"No such {what}: {after}", param="after")
    where, order_by = keyset(table, cur, descending=order == "desc")
    q = base if where is None else base.where(where)
    rows = conn.execute(q.order_by(*order_by).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


# -- evals -------------------------------------------------------------------------------------

@router.post("", status_code=201)
def create_eval(body: EvalCreate, state: StateDep, project: ProjectDep):
    cfg = datasource.eval_config(body.data_source_config)
    check_metadata(body.metadata)
    exists = model_checker(state, project)
    names = set()
    for i, spec in enumerate(body.testing_criteria):
        with models_listed(state, project):
            graders.check_grader(spec, item_schema=datasource.item_schema(cfg), sample_allowed=True,
                                 param=f"testing_criteria[{i}]", allow_python=state.settings.eval_python_grader,
                                 model_exists=exists)
        if spec["name"] in names:
            raise InvalidRequest(f"Two testing criteria are named {spec['name']!r}; names must be unique.",
                                 param=f"testing_criteria[{i}].name")
        names.add(spec["name"])
    eid = new_id("eval_", 32)
    with state.db.begin() as conn:
        conn.execute(evals.insert().values(
            id=eid, project_id=project, seq=next_seq(conn, evals), name=body.name or eid, created_at=int(time.time()),
            data_source_config=cfg, testing_criteria=body.testing_criteria, metadata=body.metadata, deleted=False))
        return eval_object(_get_eval(conn, project, eid))


@router.get("")
def list_evals(state: StateDep, project: ProjectDep, after: str | None = None, limit: int = Query(20, ge=1, le=100),
               order: Literal["asc", "desc"] = "asc", order_by: Literal["created_at", "updated_at"] = "created_at"):
    mine = sa.and_(evals.c.project_id == project, evals.c.deleted == sa.false())
    with state.db.connect() as conn:
        rows, more = _page(conn, evals, sa.select(evals).where(mine), mine, after, limit, order, "eval")
    return cursor_page([eval_object(r) for r in rows], more)


@router.get("/{eval_id}")
def retrieve_eval(eval_id: str, state: StateDep, project: ProjectDep):
    with state.db.connect() as conn:
        return eval_object(_get_eval(conn, project, eval_id))


@router.post("/{eval_id}")
def update_eval(eval_id: str, body: EvalUpdate, state: StateDep,
                project: ProjectDep):
    check_metadata(body.metadata)
    with state.db.begin() as conn:
        _get_eval(conn, project, eval_id)
        values = {k: v for k, v in (("name", body.name), ("metadata", body.metadata)) if v is not None}
        if values:
            conn.execute(evals.update().where(evals.c.id == eval_id).values(**values))
        return eval_object(_get_eval(conn, project, eval_id))


@router.delete("/{eval_id}")
def delete_eval(eval_id: str, state: StateDep, project: ProjectDep):
    with state.db.begin() as conn:
        _get_eval(conn, project, eval_id)
        conn.execute(evals.update().where(evals.c.id == eval_id).values(deleted=True))
        eval_state.delete(conn, list(conn.execute(sa.select(eval_runs.c.id).where(
            eval_runs.c.eval_id == eval_id)).scalars()))
    return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}


# -- runs --------------------------------------------------------------------------------------

def run_counts(conn, run_ids: list[str]) -> dict[str, dict]:
    """{run_id: {"status": {pass: n, ...}, "criteria": {name: [passed, failed]}}} from output items."""
    out: dict[str, dict] = {r: {"status": {}, "criteria": {}} for r in run_ids}
    if not run_ids:
        return out
    for rid, status, n in conn.execute(
            sa.select(eval_output_items.c.run_id, eval_output_items.c.status, sa.func.count())
            .where(eval_output_items.c.run_id.in_(run_ids))
            .group_by(eval_output_items.c.run_id, eval_output_items.c.status)):
        out[rid]["status"][status] = n
    for rid, results in conn.execute(sa.select(eval_output_items.c.run_id, eval_output_items.c.results)
                                     .where(eval_output_items.c.run_id.in_(run_ids),
                                            eval_output_items.c.status != "error")):
        for r in results:
            pf = out[rid]["criteria"].setdefault(r["name"], [0, 0])
            pf[0 if r.get("passed") else 1] += 1
    return out


NO_ERROR = {"code": "", "message": ""}
"""A run's (and a sample's) `error` when there is none: the SDK's EvalAPIError is an object, never null."""


def run_object(row, counts: dict, criteria: list[dict], request: Request | None = None) -> dict:
    st = counts["status"]
    crit = counts["criteria"]
    usage = [{"model_name": m, "invocation_count": u.get("invocation_count", 0),
              "prompt_tokens": u.get("prompt_tokens", 0), "completion_tokens": u.get("completion_tokens", 0),
              "total_tokens": u.get("prompt_tokens", 0) + u.get("completion_tokens", 0), "cached_tokens": 0}
             for m, u in sorted((row.usage or {}).items())]
    return {"object": "eval.run", "id": row.id, "eval_id": row.eval_id, "name": row.name, "status": row.status,
            "model": row.model, "created_at": row.created_at, "data_source": row.data_source,
            "error": row.error or NO_ERROR,
            "metadata": row.metadata or {},
            "result_counts": {"total": len(row.items), "passed": st.get("pass", 0), "failed": st.get("fail", 0),
                              "errored": st.get("error", 0)},
            "per_testing_criteria_results": [{"testing_criteria": c["name"], "passed": crit.get(c["name"], [0, 0])[0],
                                              "failed": crit.get(c["name"], [0, 0])[1]} for c in criteria],
            "per_model_usage": usage,
            "report_url": report_url(request, row) if request is not None else None}


def report_url(request: Request, row) -> str:
    """The dashboard's page for the run, on the host and port the client called."""
    return f"{str(request.base_url).rstrip('/')}/#/evals/{row.eval_id}/runs/{row.id}"


def _run_response(conn, row, ev, request: Request) -> dict:
    return run_object(row, run_counts(conn, [row.id])[row.id], ev.testing_criteria, request)


def _read_file(state: AppState, project: str):
    def read(fid: str) -> str:
        with state.db.connect() as conn:
            found = stored_file(conn, state.settings.layout, fid, project)
        if found is None:
            raise InvalidRequest(f"File {fid} not found.", param="data_source.source.id", code="file_not_found")
        data = found.path.read_bytes()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"File {fid} is not UTF-8 text.", param="data_source.source.id") from None
    return read


@router.post("/{eval_id}/runs", status_code=201)
def create_run(eval_id: str, body: RunCreate, request: Request, state: StateDep,
               project: ProjectDep):
    check_metadata(body.metadata)
    with state.db.connect() as conn:
        ev = _get_eval(conn, project, eval_id)
    graders.check_python_allowed(ev.testing_criteria, state.settings.eval_python_grader)
    with models_listed(state, project):
        spec = datasource.check_run_source(body.data_source, ev.data_source_config,
                                           read_file=_read_file(state, project), model_exists=model_checker(state, project))
    if not spec["items"]:
        raise InvalidRequest("The data source has no items.", param="data_source.source")
    if spec["kind"] == "jsonl" and not datasource.has_sample(ev.data_source_config):
        refs = " ".join(str(c) for c in ev.testing_criteria)
        if "sample." in refs and any(it["sample"] is None for it in spec["items"]):
            raise InvalidRequest("The testing criteria refer to sample.*, but this jsonl data source has items "
                                 "without a sample and no model to generate one.", param="data_source.source")
    rid = new_id("evalrun_", 32)
    with state.db.begin() as conn:
        conn.execute(eval_runs.insert().values(
            id=rid, eval_id=eval_id, project_id=project, seq=next_seq(conn, eval_runs), name=body.name or rid,
            model=spec["model"], status="queued", created_at=int(time.time()), data_source=body.data_source,
            items=spec["items"], metadata=body.metadata, usage={}, deleted=False))
        return _run_response(conn, _get_run(conn, project, eval_id, rid), ev, request)


@router.get("/{eval_id}/runs")
def list_runs(state: StateDep, project: ProjectDep,
              eval_id: str, request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
              order: Literal["asc", "desc"] = "asc", status: Literal[RUN_STATUSES] | None = None):
    with state.db.connect() as conn:
        ev = _get_eval(conn, project, eval_id)
        mine = sa.and_(eval_runs.c.eval_id == eval_id, eval_runs.c.project_id == project,
                       eval_runs.c.deleted == sa.false())
        base = sa.select(eval_runs).where(mine)
        if status:
            base = base.where(eval_runs.c.status == status)
        rows, more = _page(conn, eval_runs, base, mine, after, limit, order, "run")
        counts = run_counts(conn, [r.id for r in rows])
    return cursor_page([run_object(r, counts[r.id], ev.testing_criteria, request) for r in rows], more)


@router.get("/{eval_id}/runs/{run_id}")
def retrieve_run(eval_id: str, run_id: str, request: Request, state: StateDep,
                 project: ProjectDep):
    with state.db.connect() as conn:
        ev = _get_eval(conn, project, eval_id)
        return _run_response(conn, _get_run(conn, project, eval_id, run_id), ev, request)


@router.post("/{eval_id}/runs/{run_id}/cancel")
@router.post("/{eval_id}/runs/{run_id}")  # the path OpenAI's published spec gives for cancel
def cancel_run(eval_id: str, run_id: str, request: Request, state: StateDep,
               project: ProjectDep):
    with state.db.begin() as conn:
        ev = _get_eval(conn, project, eval_id)
        row = _get_run(conn, project, eval_id, run_id)
        if not eval_state.cancel(conn, run_id):
            raise InvalidRequest(f"Run {run_id} is {row.status} and cannot be cancelled.", param="run_id")
        return _run_response(conn, _get_run(conn, project, eval_id, run_id), ev, request)


@router.delete("/{eval_id}/runs/{run_id}")
def delete_run(eval_id: str, run_id: str, state: StateDep,
               project: ProjectDep):
    with state.db.begin() as conn:
        _get_eval(conn, project, eval_id)
        _get_run(conn, project, eval_id, run_id)
        eval_state.delete(conn, [run_id])
    return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id}


# -- output items ------------------------------------------------------------------------------

def output_item_object(row) -> dict:
    return {"object": "eval.run.output_item", "id": row.id, "run_id": row.run_id, "eval_id": row.eval_id,
            "created_at": row.created_at, "status": row.status, "datasource_item_id": row.datasource_item_id,
            "datasource_item": row.datasource_item, "results": row.results,
            "sample": {**row.sample, "error": row.sample.get("error") or NO_ERROR} if row.sample else row.sample}


@router.get("/{eval_id}/runs/{run_id}/output_items")
def list_output_items(state: StateDep, project: ProjectDep,
                      eval_id: str, run_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=100),
                      order: Literal["asc", "desc"] = "asc", status: Literal["fail", "pass", "error"] | None = None):
    t = eval_output_items
    with state.db.connect() as conn:
        _get_eval(conn, project, eval_id)
        _get_run(conn, project, eval_id, run_id)
        base = sa.select(t).where(t.c.run_id == run_id)
        if status:
            base = base.where(t.c.status == status)
        cur = None
        if after:
            cur = conn.execute(sa.select(t.c.datasource_item_id).where(t.c.id == after, t.c.run_id == run_id)).scalar()
            if cur is None:
                raise NotFound(f"No such output item: {after}", param="after")
            base = base.where(t.c.datasource_item_id > cur if order == "asc" else t.c.datasource_item_id < cur)
        key = t.c.datasource_item_id.asc() if order == "asc" else t.c.datasource_item_id.desc()
        rows = conn.execute(base.order_by(key).limit(limit + 1)).all()
    return cursor_page([output_item_object(r) for r in rows[:limit]], len(rows) > limit)


@router.get("/{eval_id}/runs/{run_id}/output_items/{item_id}")
def retrieve_output_item(eval_id: str, run_id: str, item_id: str, state: StateDep,
                         project: ProjectDep):
    with state.db.connect() as conn:
        _get_eval(conn, project, eval_id)
        _get_run(conn, project, eval_id, run_id)
        row = conn.execute(sa.select(eval_output_items).where(eval_output_items.c.id == item_id,
                                                              eval_output_items.c.run_id == run_id)).first()
    if row is None:
        raise NotFound(f"Output item with id '{item_id}' not found.", param="output_item_id")
    return output_item_object(row)
