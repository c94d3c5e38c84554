"""The request checks every serving backend makes before it queues anything.

`check_params` (sampling limits), `encode_prompt` (messages through the chat template, tools in
its format or openft's default one as the trainer renders them (openft.data.tool_format), or raw
text, to token ids; token-id prompts checked against the vocabulary) and `check_length` (the
prompt and max_tokens against the context): each raises the OpenAI-shaped error naming the param
(InvalidRequest, ContextLengthExceeded). The
built-in engine (`serve.engine`) and the vLLM backend (`serve.vllm_backend`) both call them, so
the two refuse the same requests with the same messages.

Knows nothing about models beyond a tokenizer and a context length, and nothing about HTTP.
"""

from __future__ import annotations

from openft.data.tool_format import render
from openft.errors import ContextLengthExceeded, InvalidRequest
from openft.serve.types import GenerationRequest, SamplingParams

MAX_N = 128             # choices per request
MAX_TOP_LOGPROBS = 20   # alternatives per token, as OpenAI
MAX_STOPS = 4           # stop sequences, as OpenAI


def check_params(p: SamplingParams) -> None:
    """Every out-of-range sampling parameter in one InvalidRequest; `param` names the first."""
    problems = []
    if p.n < 1 or p.n > MAX_N:
        problems.append(("n", f"n must be between 1 and {MAX_N}, got {p.n}"))
    if p.temperature < 0 or p.temperature > 2:
        problems.append(("temperature", f"temperature must be between 0 and 2, got {p.temperature}"))
    if not 0 < p.top_p <= 1:
        problems.append(("top_p", f"top_p must be in (0, 1], got {p.top_p}"))
    if p.max_tokens is not None and p.max_tokens < (0 if p.echo else 1):
        problems.append(("max_tokens", f"max_tokens must be at least 1, got {p.max_tokens}"))
    if p.top_logprobs < 0 or p.top_logprobs > MAX_TOP_LOGPROBS:
        problems.append(("top_logprobs", f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, "
                                         f"got {p.top_logprobs}"))
    if p.stop and len(p.stop) > MAX_STOPS:
        problems.append(("stop", f"at most {MAX_STOPS} stop sequences, got {len(p.stop)}"))
    if problems:
        raise InvalidRequest("; ".join(m for _, m in problems) + ".", param=problems[0][0])


def encode_prompt(tok, req: GenerationRequest) -> list[int]:
    """The prompt's token ids: chat messages through the model's chat template, raw text, or token
    ids as given (no BOS added: they are the model's input as the client tokenized it)."""
    if req.messages is not None:
        if not tok.chat_template:
            raise InvalidRequest(f"Model {req.base_model} has no chat template; use /v1/completions.", param="model")
        text = render(tok, _flatten(req.messages), req.tools, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    elif isinstance(req.prompt, list):
        ids = check_token_ids(req.prompt, len(tok))
    elif req.prompt is not None:
        ids = tok(req.prompt, add_special_tokens=True)["input_ids"]
    else:
        raise InvalidRequest("A request needs `messages` or `prompt`.", param="messages")
    if not ids:
        raise InvalidRequest("The prompt is empty.", param="prompt")
    return list(ids)


def check_token_ids(ids: list[int], vocab: int) -> list[int]:
    """A token-id prompt whose every id is one of the tokenizer's `vocab` ids; else 400 naming `prompt`."""
    bad = next((t for t in ids if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab), None)
    if bad is not None:
        raise InvalidRequest(f"Token id {bad!r} in the prompt is not in this model's vocabulary (0..{vocab - 1}).",
                             param="prompt")
    return list(ids)


def check_length(limit: int, ids: list[int], p: SamplingParams, where: str) -> int:
    """The new tokens a request may have under a context of `limit`; 400 naming the param if none."""
    n = len(ids)
    if n >= limit:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {limit} tokens. However, your {where} resulted in "
            f"{n} tokens. Please reduce the length of the {where}.", param=where)
    if p.max_tokens is not None and n + p.max_tokens > limit:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{n + p.max_tokens} tokens ({n} in the {where}, {p.max_tokens} in the completion). "
            f"Please reduce the length of the {where} or completion.", param="max_tokens")
    return p.max_tokens if p.max_tokens is not None else limit - n


def _flatten(messages: list[dict]) -> list[dict]:
    """Content given as parts ([{"type": "text", "text": ...}, ...]) joined into one string."""
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            m = {**m, "content": "".join(p.get("text", "") for p in c if isinstance(p, dict))}
        out.append(m)
    return out
