"""The built-in generation engine: continuous batching over many adapters of one base.

One implementation of `openft.serve.backend.ServingBackend` (the vLLM backend is the other;
`open_engine(settings)` picks).

`Engine(settings)` owns one decode thread. `generate()` (async) checks the request
(`serve.checks`), loads what it needs (`serve.loaded`: base weights once per base model, the
LoRA adapter into an LRU cache), renders the prompt, queues it (`serve.scheduler`: bounded, beyond
the running batch plus `serve_max_queue` RateLimited), and yields Delta/Finish items as the
thread produces them, then one Usage. Each pass of the thread, split as vLLM splits its engine:

- scheduling (`serve.scheduler`): admit waiting sequences (their prompts ride in the next step),
  drop cancelled ones;
- execution (`serve.executor`): each runner with sequences runs one step (forward, then every
  row's next token); CPU threads follow the machine's load;
- output processing (`serve.output`): tokens become deltas, stop strings, grammar advances,
  logprobs and finish reasons; finished sequences leave the batch before their callers hear.

Closing the async iterator early cancels the request. Errors (ContextLengthExceeded, RateLimited,
InvalidRequest, NotFound) are raised by the first `__anext__()`, before any item. Knows nothing
about HTTP; the API maps items to OpenAI chunks.
"""

from __future__ import annotations

import asyncio
import threading

import torch

from openft.config import Settings
from openft.errors import InvalidRequest, OpenFTError, ServerError
from openft.serve import output
from openft.serve import tools as tool_formats
from openft.serve.checks import check_length, check_params, encode_prompt
from openft.serve.executor import Executor
from openft.serve.loaded import LoadedModels
from openft.serve.model_runner import ModelRunner
from openft.serve.sampling import make_generator
from openft.serve.scheduler import Scheduler
from openft.serve.sequence import Request, Sequence
from openft.serve.text import Detokenizer, StopMatcher
from openft.serve.types import GenerationRequest, ToolChoice, Usage


class Engine:
    def __init__(self, settings: Settings, *, dtype: str | None = None, device: str | None = None):
        self.settings = settings
        self.executor = Executor(settings, dtype=dtype, device=device)
        self.device, self.dtype = self.executor.device, self.executor.dtype
        self.models = LoadedModels(settings, self.executor)
        self.adapters = self.models.adapters
        self.scheduler = Scheduler(settings.serve_max_batch, settings.serve_max_queue)
        self.max_batch, self.max_queue = self.scheduler.max_batch, self.scheduler.max_queue
        self._thread: threading.Thread | None = None

    # what tests look into: the loaded runners, the scheduling lock and the waiting queue
    @property
    def _runners(self) -> dict[str, ModelRunner]:
        return self.models.runners

    @property
    def _cv(self) -> threading.Condition:
        return self.scheduler.cv

    @property
    def _waiting(self):
        return self.scheduler.waiting

    # ---- public --------------------------------------------------------------------------
    async def generate(self, req: GenerationRequest):
        if self.scheduler.closed:
            raise ServerError("The generation engine is shut down.")
        p = req.params
        check_params(p)
        if p.n > self.scheduler.limit:
            raise InvalidRequest(f"n={p.n} is more than this server runs at once ({self.scheduler.limit}).",
                                 param="n")
        self.scheduler.check_room(p.n)  # before any work; checked again, atomically, when queuing
        runner = await asyncio.to_thread(self.models.runner_for, req)
        adapter = None
        if req.adapter_path and not req.full_model_path and runner.merged_adapter is None:
            adapter = await asyncio.to_thread(self.models.adapter_for, runner, req)
        prompt_ids = encode_prompt(runner.tokenizer, req)
        max_new = check_length(runner.context_len, prompt_ids, p, "messages" if req.messages is not None else "prompt")
        fmt, guides = await asyncio.to_thread(self._constraints, runner, req)
        calls = tool_formats.ToolStream(fmt, req.tool_choice.parallel) if fmt is not None else None
        loop = asyncio.get_running_loop()
        r = Request(loop, asyncio.Queue(), p, runner, adapter, prompt_ids, max_new)
        skip_special = not (fmt and fmt.special)   # a tool marker that is a special token must reach the parser
        for i in range(p.n):
            r.seqs.append(Sequence(adapter=adapter, feed=list(prompt_ids), want_prompt_logits=p.echo and p.logprobs,
                                   req=r, index=i, gen=make_generator(p.seed, i),
                                   detok=Detokenizer(runner.tokenizer, prompt_ids, skip_special=skip_special),
                                   stop=StopMatcher(list(p.stop or [])), guide=guides[i] if guides else None))
        r.open = p.n
        with self.scheduler.cv:
            self.scheduler.add(r)
            self._start_thread()
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
                self.scheduler.cancel(r)

    def load(self, req: GenerationRequest) -> None:
        """Load what serving `req` needs (its runner: base or full model weights), in the caller's thread."""
        self.models.runner_for(req)

    def loaded(self, req: GenerationRequest) -> bool:
        """Whether `req`'s runner is in memory (a request for it starts without loading weights)."""
        return self.models.has_runner(req)

    def evict(self, adapter_key: str) -> None:
        """A model was deleted: drop its adapter (or full model) from memory; running requests finish."""
        self.models.evict(adapter_key)

    def close(self) -> None:
        self.scheduler.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
        output.fail(self.scheduler.abandoned(), ServerError("The generation engine shut down."))

    def release_memory(self) -> dict:
        """A training job is starting on this device: drop the merged copy and the KV caches of
        runners with no running sequence (they are rebuilt on the next request). Holds the
        scheduling lock, under which the decode thread admits sequences, so a runner found idle
        here cannot gain a sequence before its cache is gone."""
        with self.scheduler.cv:
            freed = self.models.release_idle()
        if self.device == "cuda":
            torch.cuda.empty_cache()
        return {"bytes": freed}

    def stats(self) -> dict:
        return {**self.scheduler.stats(), "models": list(self.models.runners), "adapters": self.adapters.keys(),
                "adapter_loads": self.adapters.loads}

    def merge_adapter(self, base_model: str, adapter_path: str, adapter_key: str) -> None:
        """From now on serve `adapter_key` from a copy of the base with the adapter merged into its
        weights: no per-row LoRA work, so a batch of one adapter costs what a base batch costs (an
        eval run, whose items all use one model, asks for it). One merged copy at a time (it costs
        one more set of weights in memory); `evict(adapter_key)` or the next merge drops it."""
        self.models.merge(base_model, adapter_path, adapter_key)

    # ---- the request's constraints (caller's thread) ----------------------------------------
    def _constraints(self, runner: ModelRunner, req: GenerationRequest) -> tuple:
        """(the tool format whose calls to parse out of the output, or None; one grammar matcher per
        choice, or None). 400 for bad tools and schemas."""
        choice = req.tool_choice or ToolChoice()
        fmt = tool_formats.tool_format(runner.tokenizer.chat_template, req.tools, choice)
        lark, param = tool_formats.answer_grammar(fmt, req.tools, choice, req.params.json_schema,
                                                  lambda text: tool_formats.special_token_id(runner.tokenizer, text))
        if lark is None:
            return fmt, None
        guide = self.models.guide_for(runner)
        grammar = guide.compile(lark, param)
        return fmt, [guide.matcher(grammar) for _ in range(req.params.n)]

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
                for _, runner in self.scheduler.runners():
                    for s in list(runner.seqs):
                        self.scheduler.drop(runner, s)
                        output.fail([s.req], err)

    def _loop_once(self) -> bool:
        if not self.scheduler.schedule():
            return False
        self.executor.tune_threads()
        for key, runner in self.scheduler.runners():
            self.scheduler.drop_cancelled(runner)
            if runner.seqs:
                self._step(runner)
            self.scheduler.retire_if_idle(key, runner)
        return True

    def _step(self, runner: ModelRunner) -> None:
        seqs = list(runner.seqs)
        try:
            picked, prompt_logits = self.executor.execute(runner, seqs, self.models.guides.get(runner.name))
        except Exception as e:  # noqa: BLE001 - a failed step fails its requests, not the engine
            self._fail_step(runner, seqs, e)
            return
        out = output.process(runner, seqs, picked, prompt_logits)
        for s in out.finished:
            self.scheduler.drop(runner, s)
        out.deliver()

    def _fail_step(self, runner: ModelRunner, seqs: list[Sequence], e: Exception) -> None:
        """A step that raised fails the requests of its sequences, and only those; the decode thread
        goes on. Out of device memory: the engine also gives back what it cached (release_memory)."""
        oom = self.executor.is_oom(e)
        if oom:
            err = ServerError(f"The {self.device} device ran out of memory in a decode step of {len(seqs)} "
                              f"sequence(s) of {runner.name}; those requests failed and the engine released its "
                              f"cached memory. Retry, or lower serve_max_batch / max_tokens.")
        else:
            err = e if isinstance(e, OpenFTError) else ServerError(f"Generation failed: {type(e).__name__}: {e}")
        for s in seqs:
            self.scheduler.drop(runner, s)
        if oom:
            self.release_memory()     # before the callers hear: a retry finds the memory given back
        output.fail([s.req for s in seqs], err)
