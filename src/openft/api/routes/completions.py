"""`/v1/completions` (legacy): raw prompts in, `text_completion` objects or SSE chunks out.

One engine request per prompt (a list of prompts gives `len(prompts) * n` choices), each prompt
text or token ids (OpenAI's four forms of `prompt`; lm-evaluation-harness sends token ids), `echo`,
`logprobs` as an integer (0..5) with OpenAI's legacy logprobs shape: one entry per generated token,
the end-of-sequence token included (its text is not), so `token_logprobs[len(prompt):-1]` is the
prompt's continuation as clients slice it. max_tokens defaults to 16. `text_offset` counts from
the prompt's text; a token-id prompt without echo has none here, so it counts from the completion."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from openft.api import generation as gen
from openft.api.deps import ProjectDep, StateDep
from openft.api.schemas import StreamOptions, Strict
from openft.errors import InvalidRequest
from openft.ids import completion_id

router = APIRouter()


class CompletionRequest(Strict):
    model: str = Field(max_length=512)
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    stop: gen.Stop = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    best_of: int | None = Field(None, ge=1, le=20)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    seed: int | None = None


def _prompts(req: CompletionRequest, limit: int) -> list[str | list[int]]:
    """OpenAI's four prompt forms as a list of prompts, each text or token ids: a string, a list
    of strings, a list of token ids (one prompt) or a list of such lists. At most `limit`
    (Settings.serve_max_prompts): each prompt is its own engine request."""
    p = req.prompt
    if isinstance(p, str):
        return [p]
    if not p:
        raise InvalidRequest("prompt must not be empty.", param="prompt")
    prompts = [list(p)] if isinstance(p[0], int) else list(p)
    if len(prompts) > limit:
        raise InvalidRequest(f"At most {limit} prompts per request; got {len(prompts)}.", param="prompt")
    if any(len(x) == 0 for x in prompts if isinstance(x, list)):
        raise InvalidRequest("A token-id prompt must not be empty.", param="prompt")
    return prompts


def _check(req: CompletionRequest) -> None:
    gen.refuse_unsupported_sampling(req)
    if req.suffix:
        raise InvalidRequest("suffix (insertion) is not supported by openft.", param="suffix")
    if req.best_of is not None and req.best_of != (req.n or 1):
        raise InvalidRequest("best_of other than n is not supported by openft.", param="best_of")
    if req.max_tokens == 0 and not req.echo:
        raise InvalidRequest("max_tokens must be at least 1 (0 is allowed only with echo).", param="max_tokens")


class _Offsets:
    """Legacy logprobs: tokens, token_logprobs, top_logprobs ({token: logprob}) and text_offset."""

    def __init__(self, start: int):
        self.pos = start

    def convert(self, entries: list[dict]) -> dict:
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for e in entries:
            out["tokens"].append(e["token"])
            out["token_logprobs"].append(e["logprob"])
            tops = e.get("top_logprobs") or []
            out["top_logprobs"].append({t["token"]: t["logprob"] for t in tops} if tops or e["logprob"] is not None
                                       else None)
            out["text_offset"].append(self.pos)
            self.pos += len(e["token"])
        return out


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request, state: StateDep,
                      project: ProjectDep):
    from openft.serve.types import SamplingParams

    _check(body)
    prompts = _prompts(body, state.settings.serve_max_prompts)
    n = body.n or 1
    stop = gen.stop_list(body.stop, state.settings.serve_max_stop_chars)
    params = SamplingParams(max_tokens=body.max_tokens, temperature=1.0 if body.temperature is None else body.temperature,
                            top_p=1.0 if body.top_p is None else body.top_p, stop=stop, seed=body.seed, n=n,
                            logprobs=body.logprobs is not None, top_logprobs=body.logprobs or 0, echo=bool(body.echo),
                            eos_logprob=True)
    model = await gen.resolve(state, project, body.model)
    streams = await gen.start_streams(state, [gen.generation_request(model, params, prompt=p) for p in prompts])
    head = {"id": completion_id(chat=False), "object": "text_completion", "created": int(time.time()),
            "model": body.model, "system_fingerprint": gen.system_fingerprint(model)}
    starts = [0 if body.echo or not isinstance(p, str) else len(p) for p in prompts]  # token ids: no text here
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(streams, head, n, starts, include_usage, body.logprobs is not None),
                                 media_type="text/event-stream", headers=gen.SSE_HEADERS)
    choices, prompt_tokens, completion_tokens = await gen.collect(request, streams, n)
    out = []
    for i, c in sorted(choices.items()):
        lp = _Offsets(starts[i // n]).convert(c.logprobs) if body.logprobs is not None else None
        out.append({"text": "".join(c.text), "index": i, "logprobs": lp, "finish_reason": c.finish_reason or "stop"})
    return {**head, "choices": out, "usage": gen.usage_object(prompt_tokens, completion_tokens)}


def _stream(streams, head: dict, n: int, starts: list[int], include_usage: bool, logprobs: bool):
    items = streams.items()
    return gen.sse_stream(_chunks(items, head, n, starts, include_usage, logprobs), items, "/v1/completions")


async def _chunks(items, head: dict, n: int, starts: list[int], include_usage: bool, logprobs: bool):
    from openft.serve.types import Delta, Finish, Usage

    offsets: dict[int, _Offsets] = {}
    usage = [0, 0]

    def chunk(choices: list[dict], **extra) -> bytes:
        obj = {**head, "choices": choices, **extra}
        if include_usage and "usage" not in extra:
            obj["usage"] = None
        return gen.sse(obj)

    async for k, item in items:
        if isinstance(item, Delta):
            i = k * n + item.index
            lp = offsets.setdefault(i, _Offsets(starts[k])).convert(item.logprobs or []) if logprobs else None
            yield chunk([{"text": item.text, "index": i, "logprobs": lp, "finish_reason": None}])
        elif isinstance(item, Finish):
            yield chunk([{"text": "", "index": k * n + item.index, "logprobs": None,
                          "finish_reason": item.finish_reason}])
        elif isinstance(item, Usage):
            usage[0] += item.prompt_tokens
            usage[1] += item.completion_tokens
    if include_usage:
        yield chunk([], usage=gen.usage_object(*usage))
