"""What each chosen token means for its request: the built-in engine's output processing.

`process(runner, seqs, picked, prompt_logits)` takes one executed step (each row's token, the
logprobs asked for) and turns it into the items each caller streams, in order: the echoed prompt
(with its logprobs) on a sequence's first step; then per token, the end-of-sequence check, the
grammar's advance (a matcher in error fails the request), the logprob entry (the end-of-sequence
token's too when the request asks, `eos_logprob`: legacy completions), the detokenized
text run through the stop strings (text that may begin a stop string is held back, and so are
its ids and logprobs), and the finish reason ("stop" for end of sequence or a stop string,
"length" at max_tokens); a request whose last sequence finished gets its Usage. It says which
sequences leave the batch (`StepOutput.finished`); the engine has the scheduler drop them before
`deliver()` hands the items over, so a caller that hears Finish finds the room already free.

`fail(requests, err)` answers requests not yet answered with an error, once. Knows nothing
about queues, sampling, devices or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from openft.errors import OpenFTError
from openft.serve.model_runner import ModelRunner
from openft.serve.sampling import Picked, token_logprob
from openft.serve.sequence import Request, Sequence
from openft.serve.types import Delta, Finish, Usage


@dataclass
class StepOutput:
    finished: list[Sequence] = field(default_factory=list)    # leave the batch before `deliver`
    errors: list[tuple[Request, BaseException]] = field(default_factory=list)
    items: dict[int, tuple[Request, list]] = field(default_factory=dict)   # id(request) -> (request, items)

    def deliver(self) -> None:
        for r, e in self.errors:
            r.push([e])
        for r, items in self.items.values():
            if items:
                r.push(items)


def process(runner: ModelRunner, seqs: list[Sequence], picked: Picked, prompt_logits: dict) -> StepOutput:
    """`seqs` in the order the step ran them (row i is seqs[i])."""
    out = StepOutput()
    for i, s in enumerate(seqs):
        r = s.req
        items = out.items.setdefault(id(r), (r, []))[1]
        p = r.params
        if not s.started:
            s.started = True
            if p.echo:
                items.append(_echo_delta(runner, s, prompt_logits.get(i)))
            if r.max_new == 0:
                _finish(out, s, "length", items)
                continue
        tok = picked.ids[i]
        s.out_ids.append(tok)
        if tok in runner.eos_ids:
            if p.logprobs and p.eos_logprob:    # its entry (not its text) goes out with the held-back tail
                s.pend_ids.append(tok)
                s.pend_lps.append(picked.entry(i, p.top_logprobs, runner.token_bytes))
            _finish(out, s, "stop", items)
            continue
        if s.guide is not None:
            try:
                s.guide.consume(tok)
            except OpenFTError as e:
                out.finished.append(s)
                r.done = r.cancelled = True  # its other choices are dropped at the next step
                out.errors.append((r, e))
                continue
        s.pend_ids.append(tok)
        if p.logprobs:
            s.pend_lps.append(picked.entry(i, p.top_logprobs, runner.token_bytes))
        text, stopped = s.stop.push(s.detok.push(tok))
        if stopped:
            _emit(s, text, items)
            _finish(out, s, "stop", items, flush=False)
        elif len(s.out_ids) >= r.max_new:
            _emit(s, text, items)
            _finish(out, s, "length", items)
        else:
            if text:
                _emit(s, text, items)
            s.feed = [tok]
    for r, items in out.items.values():
        if r.open == 0 and not r.done:
            r.done = True
            items.append(Usage(len(r.prompt_ids), sum(len(s.out_ids) for s in r.seqs)))
    return out


def fail(requests, err: BaseException) -> None:
    """Each request not yet answered gets `err` (its caller's first read raises it), once."""
    for r in requests:
        if not r.done:
            r.done = True
            r.push([err])


def _emit(s: Sequence, text: str, items: list) -> None:
    if text or s.pend_ids:
        items.append(Delta(s.index, text, s.pend_ids, s.pend_lps if s.req.params.logprobs else None))
        s.pend_ids, s.pend_lps = [], []


def _finish(out: StepOutput, s: Sequence, reason: str, items: list, flush: bool = True) -> None:
    if flush:
        tail, stopped = s.stop.push(s.detok.flush())
        if not stopped:
            tail += s.stop.flush()
        else:
            reason = "stop"
        _emit(s, tail, items)
    items.append(Finish(s.index, reason))
    s.req.open -= 1
    out.finished.append(s)


def _echo_delta(runner: ModelRunner, s: Sequence, prompt_logits: torch.Tensor | None) -> Delta:
    ids = s.req.prompt_ids
    text = runner.tokenizer.decode(ids, skip_special_tokens=False)
    lps = None
    if s.req.params.logprobs and prompt_logits is not None:
        pl = prompt_logits.cpu()
        top = s.req.params.top_logprobs
        lps = []
        for j, t in enumerate(ids):
            if j == 0:
                tt, b = runner.token_bytes(t)
                lps.append({"token": tt, "logprob": None, "bytes": b, "top_logprobs": []})
            else:
                lps.append(token_logprob(pl[j - 1], t, top, runner.token_bytes))
    return Delta(s.index, text, list(ids), lps)
