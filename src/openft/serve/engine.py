"""The built-in generation engine: continuous batching over many adapters of one base.

One implementation of `openft.serve.backend.ServingBackend` (the vLLM backend is the other;
`open_engine(settings)` picks).

`Engine(settings)` owns one decode thread. `generate()` (async) loads what the request needs
(base weights once per base model, the LoRA adapter into an LRU cache), renders and checks the
prompt, queues it (bounded: beyond the running batch plus `serve_max_queue`, RateLimited), and
yields Delta/Finish items as the thread produces them, then one Usage. Between decode steps the
thread admits waiting sequences (their prompts ride in the next step) and drops finished or
cancelled ones at once. Closing the async iterator early cancels the request.

Errors (ContextLengthExceeded, RateLimited, InvalidRequest, NotFound) are raised by the first
`__anext__()`, before any item. Knows nothing about HTTP; the API maps items to OpenAI chunks.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from openft.config import Settings
from openft.errors import ContextLengthExceeded, InvalidRequest, OpenFTError, RateLimited, ServerError
from openft.serve import tools as tool_formats
from openft.serve.constrain import Guide, Matcher
from openft.serve.general import build_runner
from openft.serve.lora import AdapterCache, LoraAdapter, load_adapter, merge_into
from openft.serve.runner import ModelRunner, Slot
from openft.serve.sampling import Picked, make_generator, sample_batch, token_logprob
from openft.serve.text import Detokenizer, StopMatcher, TokenBytes
from openft.serve.types import Delta, Finish, GenerationRequest, SamplingParams, ToolChoice, Usage

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass(eq=False)
class _Seq(Slot):
    req: _Req | None = None
    index: int = 0
    out_ids: list[int] = field(default_factory=list)
    gen: random.Random | None = None  # its own stream of uniforms (sampling.make_generator)
    detok: Detokenizer | None = None
    stop: StopMatcher | None = None
    pend_ids: list[int] = field(default_factory=list)
    pend_lps: list[dict] = field(default_factory=list)
    started: bool = False
    guide: Matcher | None = None        # constrained decoding: this sequence's place in its grammar


@dataclass(eq=False)
class _Req:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    params: SamplingParams
    runner: ModelRunner
    adapter: LoraAdapter | None
    prompt_ids: list[int]
    max_new: int
    seqs: list[_Seq] = field(default_factory=list)
    open: int = 0               # sequences not finished yet
    cancelled: bool = False
    done: bool = False

    def push(self, items: list) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, items)
        except RuntimeError:    # the caller's loop is gone: nobody listens any more
            self.cancelled = True


def _flatten(messages: list[dict]) -> list[dict]:
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):  # [{"type": "text", "text": ...}, ...]
            m = {**m, "content": "".join(p.get("text", "") for p in c if isinstance(p, dict))}
        out.append(m)
    return out


class Engine:
    def __init__(self, settings: Settings, *, dtype: str | None = None, device: str | None = None):
        self.settings = settings
        dev = device or settings.device
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev
        name = dtype or settings.serve_dtype
        if name == "auto":  # bf16 halves the weight traffic of memory-bound decoding (see benchmarks/)
            name = "bfloat16" if self.device == "cuda" or _cpu_has_bf16() else "float32"
        if name not in _DTYPES:
            raise InvalidRequest(f"serve dtype must be one of {sorted(_DTYPES)} or 'auto', not {name!r}.", param="dtype")
        self.dtype = _DTYPES[name]
        self.max_batch = max(1, settings.serve_max_batch)
        self.max_queue = max(0, settings.serve_max_queue)
        self.adapters = AdapterCache(settings.serve_max_adapters, settings.serve_max_adapter_bytes)
        self._runners: dict[str, ModelRunner] = {}
        self._guides: dict[str, Guide] = {}     # runner name -> its constrained-decoding side
        self._full_keys: dict[str, str] = {}
        self._merged: dict[str, str] = {}   # adapter key -> name of the runner with it merged in (merge_adapter)
        self._load_lock = threading.Lock()
        self._cv = threading.Condition()
        self._waiting: deque[_Req] = deque()
        self._outstanding = 0   # sequences admitted or waiting
        self._closed = False
        self._thread: threading.Thread | None = None
        self._live: dict[int, ModelRunner] = {}  # runners with sequences (decode thread only)
        threads = settings.serve_threads  # 0 = adapt to the machine's load
        self._threads_fixed = threads > 0
        self._threads_checked = 0.0
        if threads > 0:
            torch.set_num_threads(threads)

    # ---- public --------------------------------------------------------------------------
    async def generate(self, req: GenerationRequest):
        if self._closed:
            raise ServerError("The generation engine is shut down.")
        p = req.params
        _check_params(p)
        if p.n > self.max_batch + self.max_queue:
            raise InvalidRequest(f"n={p.n} is more than this server runs at once ({self.max_batch + self.max_queue}).",
                                 param="n")
        self._check_room(p.n)  # before any work; checked again, atomically, when queuing
        runner = await asyncio.to_thread(self._runner_for, req)
        adapter = None
        if req.adapter_path and not req.full_model_path and runner.merged_adapter is None:
            adapter = await asyncio.to_thread(self._adapter_for, runner, req)
        prompt_ids = self._encode(runner, req)
        max_new = self._check_length(runner, prompt_ids, p, "messages" if req.messages is not None else "prompt")
        fmt, guides = await asyncio.to_thread(self._constraints, runner, req)
        calls = tool_formats.ToolStream(fmt, req.tool_choice.parallel) if fmt is not None else None
        loop = asyncio.get_running_loop()
        r = _Req(loop, asyncio.Queue(), p, runner, adapter, prompt_ids, max_new)
        for i in range(p.n):
            r.seqs.append(_Seq(adapter=adapter, feed=list(prompt_ids), want_prompt_logits=p.echo and p.logprobs,
                               req=r, index=i, gen=make_generator(p.seed, i),
                               detok=Detokenizer(runner.tokenizer, prompt_ids, skip_special=not (fmt and fmt.special)),
                               stop=StopMatcher(list(p.stop or [])), guide=guides[i] if guides else None))
        r.open = p.n
        with self._cv:
            self._check_room(p.n)
            self._outstanding += p.n
            self._waiting.append(r)
            self._start_thread()
            self._cv.notify()
        try:
            while True:
                items = await r.queue.get()
                for it in items:
                    if isinstance(it, BaseException):
                        raise it
                    for out in (calls.convert(it) if calls is not None else (it,)):
                        yield out
                    if isinstance(it, Usage):
                        return
        finally:
            if not r.done:
                r.cancelled = True
                with self._cv:
                    self._cv.notify()

    def _check_room(self, n: int) -> None:
        if self._outstanding + n > self.max_batch + self.max_queue:
            raise RateLimited(f"The server is busy ({self._outstanding} sequences running or queued, limit "
                              f"{self.max_batch + self.max_queue}); retry shortly.", retry_after=1.0)

    def evict(self, adapter_key: str) -> None:
        """A model was deleted: drop its adapter (or full model) from memory; running requests finish."""
        self.adapters.evict_where(lambda k: k.split("|", 1)[1] == adapter_key)
        merged = self._merged.pop(adapter_key, None)
        if merged is not None:
            with self._load_lock:
                self._runners.pop(merged, None)   # running sequences keep their runner until they finish
        name = self._full_keys.pop(adapter_key, None)
        if name is not None:
            with self._load_lock:
                runner = self._runners.get(name)
                if runner is not None and not runner.seqs:
                    del self._runners[name]

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        err = ServerError("The generation engine shut down.")
        for r in list(self._waiting) + [s.req for rn in list(self._live.values()) for s in rn.seqs]:
            if not r.done:
                r.done = True
                r.push([err])
        self._waiting.clear()

    def release_memory(self) -> dict:
        """A training job is starting on this device: drop the merged copy and the KV caches of
        runners with no running sequence (they are rebuilt on the next request). Holds the
        scheduling lock, under which the decode thread admits sequences, so a runner found idle
        here cannot gain a sequence before its cache is gone."""
        freed = 0
        with self._cv, self._load_lock:
            for key, name in list(self._merged.items()):
                runner = self._runners.get(name)
                if runner is not None and not runner.seqs:
                    freed += sum(p.numel() * p.element_size() for p in runner.model.parameters())
                    del self._runners[name]
                    del self._merged[key]
            for runner in self._runners.values():
                if not runner.seqs and runner.cache is not None:
                    freed += runner.cache.numel() * runner.cache.element_size()
                    runner.cache = None
        if self.device == "cuda":
            torch.cuda.empty_cache()
        return {"bytes": freed}

    def stats(self) -> dict:
        with self._cv:
            return {"running": sum(len(r.seqs) for r in list(self._live.values())),
                    "waiting": sum(len(r.seqs) for r in self._waiting), "outstanding": self._outstanding,
                    "models": list(self._runners), "adapters": self.adapters.keys(), "adapter_loads": self.adapters.loads}

    # ---- loading and checks (caller's thread) ----------------------------------------------
    def merge_adapter(self, base_model: str, adapter_path: str, adapter_key: str) -> None:
        """From now on serve `adapter_key` from a copy of the base with the adapter merged into its
        weights: no per-row LoRA work, so a batch of one adapter costs what a base batch costs (an
        eval run, whose items all use one model, asks for it). One merged copy at a time (it costs
        one more set of weights in memory); `evict(adapter_key)` or the next merge drops it."""
        if adapter_key in self._merged:
            return
        req = GenerationRequest(base_model=base_model, adapter_path=adapter_path, adapter_key=adapter_key,
                                full_model_path=None, messages=None, prompt=None, params=SamplingParams())
        base = self._runner_for(req)
        adapter = self._adapter_for(base, req)
        name = f"merged:{base.name}|{adapter_key}"
        runner = build_runner(base.path, device=self.device, dtype=self.dtype, name=name,
                             cuda_graphs=self.settings.serve_cuda_graphs)
        merge_into(runner.model, adapter)
        runner.token_bytes, runner.merged_adapter = TokenBytes(runner.tokenizer), adapter_key
        with self._load_lock:
            for old in self._merged.values():
                self._runners.pop(old, None)
            self._merged = {adapter_key: name}
            self._runners[name] = runner

    def _runner_for(self, req: GenerationRequest) -> ModelRunner:
        name = f"full:{req.full_model_path}" if req.full_model_path else req.base_model
        with self._load_lock:
            merged = self._merged.get(req.adapter_key) if req.adapter_path and not req.full_model_path else None
            if merged in self._runners:
                return self._runners[merged]
            runner = self._runners.get(name)
            if runner is None:
                if req.full_model_path:
                    path = req.full_model_path
                else:
                    from openft.models import materialize

                    path = materialize(self.settings, req.base_model)
                runner = build_runner(path, device=self.device, dtype=self.dtype, name=name,
                             cuda_graphs=self.settings.serve_cuda_graphs)
                runner.token_bytes = TokenBytes(runner.tokenizer)
                self._runners[name] = runner
            if req.full_model_path and req.adapter_key:
                self._full_keys[req.adapter_key] = name
            return runner

    def _adapter_for(self, runner: ModelRunner, req: GenerationRequest) -> LoraAdapter:
        key = f"{runner.name}|{req.adapter_key or req.adapter_path}"
        return self.adapters.get_or_load(key, lambda: load_adapter(
            req.adapter_path, key, runner.linear_names, runner.dtype, runner.device))

    def _encode(self, runner: ModelRunner, req: GenerationRequest) -> list[int]:
        return encode_prompt(runner.tokenizer, req)

    def _constraints(self, runner: ModelRunner, req: GenerationRequest) -> tuple:
        """(the tool format whose calls to parse out of the output, or None; one grammar matcher per
        choice, or None). 400 for tools the model's template cannot express, bad schemas."""
        choice = req.tool_choice or ToolChoice()
        fmt = tool_formats.tool_format(runner.tokenizer.chat_template, req.tools, choice, req.base_model)
        lark, param = tool_formats.answer_grammar(fmt, req.tools, choice, req.params.json_schema,
                                                  lambda text: tool_formats.special_token_id(runner.tokenizer, text))
        if lark is None:
            return fmt, None
        guide = self._guide_for(runner)
        grammar = guide.compile(lark, param)
        return fmt, [guide.matcher(grammar) for _ in range(req.params.n)]

    def _guide_for(self, runner: ModelRunner) -> Guide:
        with self._load_lock:
            guide = self._guides.get(runner.name)
            if guide is None:
                guide = Guide(runner.tokenizer, int(runner.cfg.vocab_size), runner.eos_ids)
                self._guides[runner.name] = guide
            return guide

    def _check_length(self, runner: ModelRunner, ids: list[int], p: SamplingParams, where: str) -> int:
        return check_length(runner.context_len, ids, p, where)

    # ---- the decode thread -----------------------------------------------------------------
    def _start_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="openft-decode", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                if not self._loop_once():
                    return
            except Exception as e:  # noqa: BLE001 - never leave callers waiting on a dead thread
                err = ServerError(f"Generation failed: {type(e).__name__}: {e}")
                for runner in list(self._live.values()):
                    for s in list(runner.seqs):
                        self._drop(runner, s)
                        if not s.req.done:
                            s.req.done = True
                            s.req.push([err])

    def _loop_once(self) -> bool:
        with self._cv:
            while not self._closed and not self._waiting and not self._live:
                self._cv.wait()
            if self._closed:
                return False
            running = sum(len(r.seqs) for r in self._live.values())
            while self._waiting and (running == 0 or running + len(self._waiting[0].seqs) <= self.max_batch):
                r = self._waiting.popleft()
                if r.cancelled:
                    self._outstanding -= len(r.seqs)
                    continue
                running += len(r.seqs)
                for s in r.seqs:       # under the lock: release_memory sees a runner busy or idle, never between
                    r.runner.add(s)
                self._live[id(r.runner)] = r.runner
        self._tune_threads()
        for key, runner in list(self._live.items()):
            for s in [s for s in runner.seqs if s.req.cancelled]:
                self._drop(runner, s)
            if runner.seqs:
                self._step(runner)
            if not runner.seqs:
                del self._live[key]
        return True

    def _tune_threads(self) -> None:
        """On CPU, every few seconds: as many intra-op threads as there are idle cores. Threads of
        one matmul wait for each other at barriers; when other processes hold the cores, a second
        thread that is not scheduled stalls every op (measured 6x slower at load 6 on 2 cores)."""
        if self.device != "cpu" or self._threads_fixed:
            return
        now = time.monotonic()
        if now - self._threads_checked < 3.0:
            return
        self._threads_checked = now
        n = pick_threads()
        if n != torch.get_num_threads():
            torch.set_num_threads(n)

    def _drop(self, runner: ModelRunner, seq: _Seq) -> None:
        runner.remove(seq)
        with self._cv:
            self._outstanding -= 1

    def _step(self, runner: ModelRunner) -> None:
        seqs = list(runner.seqs)
        try:
            logits, prompt_logits = runner.forward()
            picked = self._pick(runner, seqs, logits)
        except Exception as e:  # noqa: BLE001 - a failed step fails its requests, not the engine
            self._fail_step(runner, seqs, e)
            return
        out: dict[int, tuple[_Req, list]] = {}
        for i, s in enumerate(seqs):
            r = s.req
            items = out.setdefault(id(r), (r, []))[1]
            p = r.params
            if not s.started:
                s.started = True
                if p.echo:
                    items.append(self._echo_delta(runner, s, prompt_logits.get(i)))
                if r.max_new == 0:
                    self._finish(runner, s, "length", items)
                    continue
            tok = picked.ids[i]
            s.out_ids.append(tok)
            if tok in runner.eos_ids:
                self._finish(runner, s, "stop", items)
                continue
            if s.guide is not None:
                try:
                    s.guide.consume(tok)
                except OpenFTError as e:
                    self._drop(runner, s)
                    r.done = r.cancelled = True  # its other choices are dropped at the next step
                    r.push([e])
                    continue
            s.pend_ids.append(tok)
            if p.logprobs:
                s.pend_lps.append(picked.entry(i, p.top_logprobs, runner.token_bytes))
            text, stopped = s.stop.push(s.detok.push(tok))
            if stopped:
                self._emit(s, text, items)
                self._finish(runner, s, "stop", items, flush=False)
            elif len(s.out_ids) >= r.max_new:
                self._emit(s, text, items)
                self._finish(runner, s, "length", items)
            else:
                if text:
                    self._emit(s, text, items)
                s.feed = [tok]
        for r, items in out.values():
            if r.open == 0 and not r.done:
                r.done = True
                items.append(Usage(len(r.prompt_ids), sum(len(s.out_ids) for s in r.seqs)))
            if items:
                r.push(items)

    def _pick(self, runner: ModelRunner, seqs: list[_Seq], logits: torch.Tensor) -> Picked:
        """Every row's next token, chosen on the logits' device in one batch; the ids (and the
        logprobs of rows that report them) come to the host in one copy."""
        temps, top_ps, uniforms, lp_rows = [], [], [], {}
        for i, s in enumerate(seqs):
            p = s.req.params
            sampled = p.temperature > 0 and (s.started or s.req.max_new > 0)
            temps.append(p.temperature if sampled else 0.0)
            top_ps.append(p.top_p)
            uniforms.append(s.gen.random() if sampled else None)  # the sequence's own stream: seeds repeat
            if p.logprobs:
                lp_rows[i] = p.top_logprobs
        lp = Picked.lp_of(logits, lp_rows)  # reported logprobs are the model's, before the grammar's mask
        guided = [(s.guide, i) for i, s in enumerate(seqs) if s.guide is not None]
        if guided:
            idx = torch.tensor([i for _, i in guided], device=logits.device)
            rows = logits.index_select(0, idx).cpu()
            self._guides[runner.name].mask(rows, [(m, k) for k, (m, _) in enumerate(guided)])
            logits = logits.index_copy(0, idx, rows.to(logits.device))
        return Picked(sample_batch(logits, temps, top_ps, uniforms), lp, lp_rows)

    def _fail_step(self, runner: ModelRunner, seqs: list[_Seq], e: Exception) -> None:
        """A step that raised fails the requests of its sequences, and only those; the decode thread
        goes on. Out of device memory: the engine also gives back what it cached (release_memory)."""
        oom = isinstance(e, _OOM) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())
        if oom:
            err = ServerError(f"The {self.device} device ran out of memory in a decode step of {len(seqs)} "
                              f"sequence(s) of {runner.name}; those requests failed and the engine released its "
                              f"cached memory. Retry, or lower serve_max_batch / max_tokens.")
        else:
            err = e if isinstance(e, OpenFTError) else ServerError(f"Generation failed: {type(e).__name__}: {e}")
        for s in seqs:
            self._drop(runner, s)
        if oom:
            self.release_memory()     # before the callers hear: a retry finds the memory given back
        for s in seqs:
            if not s.req.done:
                s.req.done = True
                s.req.push([err])

    def _emit(self, s: _Seq, text: str, items: list) -> None:
        if text or s.pend_ids:
            items.append(Delta(s.index, text, s.pend_ids, s.pend_lps if s.req.params.logprobs else None))
            s.pend_ids, s.pend_lps = [], []

    def _finish(self, runner: ModelRunner, s: _Seq, reason: str, items: list, flush: bool = True) -> None:
        if flush:
            tail, stopped = s.stop.push(s.detok.flush())
            if not stopped:
                tail += s.stop.flush()
            else:
                reason = "stop"
            self._emit(s, tail, items)
        items.append(Finish(s.index, reason))
        s.req.open -= 1
        self._drop(runner, s)

    def _echo_delta(self, runner: ModelRunner, s: _Seq, prompt_logits: torch.Tensor | None) -> Delta:
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


def _check_params(p: SamplingParams) -> None:
    problems = []
    if p.n < 1 or p.n > 128:
        problems.append(("n", f"n must be between 1 and 128, got {p.n}"))
    if p.temperature < 0 or p.temperature > 2:
        problems.append(("temperature", f"temperature must be between 0 and 2, got {p.temperature}"))
    if not 0 < p.top_p <= 1:
        problems.append(("top_p", f"top_p must be in (0, 1], got {p.top_p}"))
    if p.max_tokens is not None and p.max_tokens < (0 if p.echo else 1):
        problems.append(("max_tokens", f"max_tokens must be at least 1, got {p.max_tokens}"))
    if p.top_logprobs < 0 or p.top_logprobs > 20:
        problems.append(("top_logprobs", f"top_logprobs must be between 0 and 20, got {p.top_logprobs}"))
    if p.stop and len(p.stop) > 4:
        problems.append(("stop", f"at most 4 stop sequences, got {len(p.stop)}"))
    if problems:
        raise InvalidRequest("; ".join(m for _, m in problems) + ".", param=problems[0][0])


def encode_prompt(tok, req: GenerationRequest) -> list[int]:
    """The prompt's token ids: chat messages through the model's chat template, or raw text."""
    if req.messages is not None:
        if not tok.chat_template:
            raise InvalidRequest(f"Model {req.base_model} has no chat template; use /v1/completions.", param="model")
        text = tok.apply_chat_template(_flatten(req.messages), tools=req.tools, add_generation_prompt=True,
                                       tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    elif req.prompt is not None:
        ids = tok(req.prompt, add_special_tokens=True)["input_ids"]
    else:
        raise InvalidRequest("A request needs `messages` or `prompt`.", param="messages")
    if not ids:
        raise InvalidRequest("The prompt is empty.", param="prompt")
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


def pick_threads() -> int:
    """Cores this process may use, less those other processes keep busy (1-minute load average)."""
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:
        return ncpu
    if load <= ncpu + 0.5:
        return ncpu
    return max(1, ncpu - int(load - ncpu + 0.5))


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
