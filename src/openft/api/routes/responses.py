"""`/v1/responses`: OpenAI's Responses API (create, retrieve, delete, cancel, input_items) on top
of the chat route's generation core: a request is translated into a `ChatRequest`
(openft.api.responses_shapes), run by `chat.completion` / `chat.start` + `chat.chunk_objects`, and
the chat completion or its chunks are translated back into a `response` object or Responses
stream events (`response.created` ... `response.completed`, each with its `sequence_number`).

Responses are stored per project unless `store` is false (table `responses`, migration 5) with the
conversation that went into them, so that `previous_response_id` continues it and `input_items`
lists it; another project's id is a 404. A stream whose client goes away is not stored.
Knows nothing about the engine, tool-call formats or constrained decoding.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from openft.api import chat
from openft.api import responses_shapes as shapes
from openft.api.deps import AppState, ProjectDep, StateDep
from openft.api.generation import SSE_HEADERS
from openft.api.schemas import cursor_page
from openft.errors import InvalidRequest, NotFound, OpenFTError, ServerError
from openft.ids import new_id
from openft.store.db import next_seq, responses
from openft.vocab import check_metadata

log = logging.getLogger("openft.api")
router = APIRouter(prefix="/responses")


def _load(state: AppState, project: str, rid: str, *, previous: bool = False):
    with state.db.connect() as conn:
        row = conn.execute(sa.select(responses).where(responses.c.id == rid,
                                                      responses.c.project_id == project)).first()
    if row is None and previous:
        raise NotFound(f"Previous response with id '{rid}' not found.", param="previous_response_id",
                       code="previous_response_not_found")
    if row is None:
        raise NotFound(f"Response with id '{rid}' not found.", param="response_id")
    return row


def _store(state: AppState, project: str, resp: dict, items: list[dict]) -> None:
    with state.db.begin() as conn:
        conn.execute(responses.insert().values(
            id=resp["id"], project_id=project, seq=next_seq(conn, responses), created_at=resp["created_at"],
            model=resp["model"], status=resp["status"], previous_response_id=resp["previous_response_id"],
            input_items=items, body=resp))


def _refuse_query(request: Request, allowed: tuple[str, ...]) -> None:
    """Query parameters openft does not implement (stream, include, starting_after, ...) are a 400."""
    for key, value in request.query_params.multi_items():
        if key not in allowed and not (key == "stream" and value.lower() == "false"):
            raise InvalidRequest(f"Query parameter {key!r} is not supported by openft on this endpoint.", param=key)


@router.post("")
async def create_response(body: shapes.ResponsesRequest, request: Request, state: StateDep,
                          project: ProjectDep):
    shapes.refuse_unsupported(body)
    check_metadata(body.metadata)
    context: list[dict] = []
    if body.previous_response_id:
        prev = await run_in_threadpool(_load, state, project, body.previous_response_id, previous=True)
        context = list(prev.input_items) + list(prev.body["output"])
    items = context + shapes.input_items(body.input)
    chat_body = shapes.chat_request(body, items)
    rid, created = new_id("resp_"), int(time.time())

    async def save(resp: dict) -> None:
        if body.store is not False:
            await run_in_threadpool(_store, state, project, resp, items)

    try:
        if body.stream:
            streams, head, n = await chat.start(chat_body, state, project)
        else:
            completion = await chat.completion(chat_body, request, state, project)
    except OpenFTError as e:
        raise shapes.translate_errors(e)  # noqa: B904 - re-raises e itself, its param renamed
    if body.stream:
        source = streams.items()
        events = stream_events(rid, body, created, chat.chunk_objects(source, head, n, True, body.logprobs), save)
        return StreamingResponse(_closing(events, source), media_type="text/event-stream", headers=SSE_HEADERS)
    (choice,) = completion["choices"]
    logprobs = (choice.get("logprobs") or {}).get("content") if body.logprobs else None
    resp = shapes.response_object(
        rid, body, created, status=shapes.status_of(choice["finish_reason"]),
        output=shapes.output_items(choice["message"], choice["finish_reason"], logprobs),
        usage=shapes.usage(completion["usage"]), completed_at=int(time.time()))
    await save(resp)
    return resp


@router.get("/{response_id}")
def retrieve_response(response_id: str, request: Request, state: StateDep,
                      project: ProjectDep):
    _refuse_query(request, ())
    return _load(state, project, response_id).body


@router.delete("/{response_id}")
def delete_response(response_id: str, state: StateDep, project: ProjectDep):
    _load(state, project, response_id)
    with state.db.begin() as conn:
        conn.execute(responses.delete().where(responses.c.id == response_id, responses.c.project_id == project))
    return {"id": response_id, "object": "response", "deleted": True}


@router.post("/{response_id}/cancel")
def cancel_response(response_id: str, state: StateDep, project: ProjectDep):
    _load(state, project, response_id)
    raise InvalidRequest("Only responses created with background=true can be cancelled, and openft does not run "
                         "background responses.", param="response_id")


@router.get("/{response_id}/input_items")
def list_input_items(state: StateDep, project: ProjectDep, response_id: str, request: Request, after: str | None = None,
                     limit: int = Query(20, ge=1, le=100), order: Literal["asc", "desc"] = "desc"):
    """The conversation that went into the response: the previous response's input items and
    output, then this request's input (oldest first with order=asc)."""
    _refuse_query(request, ("after", "limit", "order"))
    items = list(_load(state, project, response_id).input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [it["id"] for it in items]
        if after not in ids:
            raise NotFound(f"No such input item: {after}", param="after")
        items = items[ids.index(after) + 1:]
    return cursor_page(items[:limit], len(items) > limit)


# -- streaming ---------------------------------------------------------------------------------

def _event(kind: str, seq: int, **fields) -> bytes:
    """One server-sent event as OpenAI sends them: `event: <type>` and the JSON with that type."""
    data = json.dumps({"type": kind, **fields, "sequence_number": seq}, separators=(",", ":"), ensure_ascii=False)
    return f"event: {kind}\ndata: {data}\n\n".encode()


async def stream_events(rid: str, body: shapes.ResponsesRequest, created: int, chunks, save):
    """The chat chunks of one choice as Responses events, in OpenAI's order: created, in_progress;
    per output item added, (content_part.added, output_text.delta..., output_text.done,
    content_part.done) or (function_call_arguments.delta..., .done), done; then completed (or
    incomplete when cut by max_output_tokens; error + failed when generation fails). The final
    response is stored before its event is sent."""
    counter = itertools.count()
    output: list[dict] = []  # finished items; the open one, when any, is output[len(output)]
    state: dict = {"item": None, "call": None, "finish": None, "usage": None}

    def ev(kind: str, **fields) -> bytes:
        return _event(kind, next(counter), **fields)

    def snapshot(status: str, **kw) -> dict:
        return shapes.response_object(rid, body, created, status=status, output=list(output), **kw)

    def open_item(item: dict) -> list[bytes]:
        state["item"] = item
        i = len(output)
        added = {**item, "content": []} if item["type"] == "message" else item
        events = [ev("response.output_item.added", output_index=i, item=added)]
        if item["type"] == "message":
            events.append(ev("response.content_part.added", item_id=item["id"], output_index=i, content_index=0,
                             part={**item["content"][0], "text": ""}))
        return events

    def close_item(status: str) -> list[bytes]:
        item, state["item"], state["call"] = state["item"], None, None
        if item is None:
            return []
        i, item["status"] = len(output), status
        if item["type"] == "message":
            part = item["content"][0]
            events = [ev("response.output_text.done", item_id=item["id"], output_index=i, content_index=0,
                         text=part["text"], logprobs=part["logprobs"]),
                      ev("response.content_part.done", item_id=item["id"], output_index=i, content_index=0, part=part)]
        else:
            events = [ev("response.function_call_arguments.done", item_id=item["id"], output_index=i,
                         arguments=item["arguments"])]
        output.append(item)
        return events + [ev("response.output_item.done", output_index=i, item=item)]

    def on_choice(ch: dict) -> list[bytes]:
        events: list[bytes] = []
        delta = ch.get("delta") or {}
        lp = (ch.get("logprobs") or {}).get("content") or []
        if delta.get("content") or lp:
            if state["item"] is None or state["item"]["type"] != "message":
                events += close_item("completed")
                events += open_item(shapes.message_item("assistant", [""], "in_progress"))
            item = state["item"]
            item["content"][0]["text"] += delta.get("content") or ""
            item["content"][0]["logprobs"].extend(lp)
            events.append(ev("response.output_text.delta", item_id=item["id"], output_index=len(output),
                             content_index=0, delta=delta.get("content") or "", logprobs=lp))
        for tc in delta.get("tool_calls") or []:
            fn = tc.get("function") or {}
            if state["call"] != tc.get("index"):
                events += close_item("completed")
                events += open_item(shapes.function_call_item(tc.get("id") or new_id("call_"), fn.get("name") or "",
                                                              "", "in_progress"))
                state["call"] = tc.get("index")
            if fn.get("arguments"):
                state["item"]["arguments"] += fn["arguments"]
                events.append(ev("response.function_call_arguments.delta", item_id=state["item"]["id"],
                                 output_index=len(output), delta=fn["arguments"]))
        if ch.get("finish_reason"):
            state["finish"] = ch["finish_reason"]
        return events

    start = snapshot("in_progress")
    yield ev("response.created", response=start)
    yield ev("response.in_progress", response=start)
    try:
        async for chunk in chunks:
            if chunk.get("usage"):
                state["usage"] = chunk["usage"]
            for ch in chunk["choices"]:
                for e in on_choice(ch):
                    yield e
        status = shapes.status_of(state["finish"])
        if state["item"] is None and not output:  # nothing generated: still one (empty) message
            for e in open_item(shapes.message_item("assistant", [""], "in_progress")):
                yield e
        for e in close_item(status):
            yield e
        final = snapshot(status, usage=shapes.usage(state["usage"]), completed_at=int(time.time()))
        await save(final)
        yield ev("response.completed" if status == "completed" else "response.incomplete", response=final)
    except Exception as e:  # headers are gone: report in-band, as OpenAI does
        err = e if isinstance(e, OpenFTError) else ServerError(f"Generation failed: {e}")
        log.warning("response %s failed mid-stream: %s", rid, err.message)
        yield ev("error", code=err.code, message=err.message, param=err.param)
        code = "rate_limit_exceeded" if err.status == 429 else "server_error"  # ResponseError's codes
        failed = snapshot("failed", error={"code": code, "message": err.message})
        await save(failed)
        yield ev("response.failed", response=failed)


async def _closing(events, source):
    """Send the events; whatever happens (a client that goes away included), close the chat
    chunks' source so that the engine request is cancelled."""
    try:
        async for e in events:
            yield e
    except BaseException:
        log.info("client disconnected from /v1/responses mid-stream; generation cancelled")
        raise
    finally:
        await events.aclose()
        await source.aclose()
