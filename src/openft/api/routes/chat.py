"""`/v1/chat/completions`: OpenAI's chat request in, the engine's items out as a
`chat.completion` or as `chat.completion.chunk` server-sent events ending in `data: [DONE]`
(the request checks and shapes: openft.api.chat)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from openft.api.chat import ChatRequest, chunk_objects, completion, start
from openft.api.deps import ProjectDep, StateDep
from openft.api.generation import SSE_HEADERS, sse, sse_stream

router = APIRouter()


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, state: StateDep,
                           project: ProjectDep):
    if not body.stream:
        return await completion(body, request, state, project)
    streams, head, n = await start(body, state, project)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    items = streams.items()
    chunks = (sse(c) async for c in chunk_objects(items, head, n, include_usage, bool(body.logprobs)))
    return StreamingResponse(sse_stream(chunks, items, "/v1/chat/completions"),
                             media_type="text/event-stream", headers=SSE_HEADERS)
