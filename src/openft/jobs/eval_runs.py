"""Eval runs in the worker: claim a queued run, generate every item's sample through the serving
engine (all items in flight at once, as many as the engine batches and queues), grade each with
the eval's testing criteria, write one output item per datasource item.

Like jobs, a run is claimed with a lease (`worker_id`, `heartbeat_at`): the heartbeat also
watches the row, so a cancelled or deleted run stops at once (its requests are cancelled in the
engine). A worker that stops puts its run back in the queue; a worker that dies leaves a stale
heartbeat and the next worker takes the run over. Items already written are never redone, so a
run survives a server restart. An item that cannot be evaluated (a missing field, a judge that
fails) becomes an `error` output item and the run goes on. Every status change is
openft.jobs.eval_state's (the lease itself openft.jobs.lease's).

Test-only fault point (openft.faults, inert unless OPENFT_FAULT is set): `eval-item@N`
fires after this worker wrote its N-th output item of a run, before any other item is written
(`eval-item@1:hold` stops a run after its first item, until the test kills the server;
`eval-item:raise` stops this worker there, as a server stop would, and the run goes back to the queue).

Knows the database tables, the serving engine and openft.eval; nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import sqlalchemy as sa

from openft.config import Settings
from openft.errors import OpenFTError, RateLimited
from openft.eval import datasource, graders, templates
from openft.faults import fault_point
from openft.ids import new_id
from openft.jobs import eval_state
from openft.jobs.lease import poll_until_stopped
from openft.store.db import eval_output_items, eval_runs, evals
from openft.store.resolve import resolve_model

log = logging.getLogger("openft.worker.evals")
DEFAULT_MAX_TOKENS = 1024  # a completions run without max_completion_tokens stops here
EVAL_BATCH = 64  # sequences the eval engine runs together unless serve_max_batch is set: more items per decode step


class RunGone(Exception):
    """The run was cancelled, deleted or taken over while this worker ran it."""


class EvalRunExecutor:
    def __init__(self, settings: Settings, db: sa.Engine, worker_id: str, shared_engine=None):
        """shared_engine: a callable giving this process's serving engine (the API's, when the
        worker is embedded in `openft serve`). With the vLLM backend eval runs use it rather than
        start a second vLLM engine, which would claim the same GPU's memory again; the built-in
        engine keeps one of its own (a larger batch than chat's, see eval_engine_settings)."""
        self.settings, self.db, self.worker_id = settings, db, worker_id
        self._serve = None
        self._shared = shared_engine if settings.serve_backend == "vllm" else None
        self._own_serve = self._shared is None
        self._stop = threading.Event()
        self._serve_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._written = 0  # output items this worker wrote of the run it is executing

    # -- the loop ----------------------------------------------------------------------------

    def run_forever(self, stop_event: threading.Event) -> None:
        self._stop = stop_event
        try:
            poll_until_stopped(self.run_once, stop_event, self.settings.worker_poll_seconds, log)
        finally:
            if self._own_serve and self._serve is not None:
                self._serve.close()

    def run_once(self) -> str | None:
        run_id = self.claim()
        if run_id is None:
            return None
        try:
            asyncio.run(self._execute(run_id))
        except RunGone:
            log.info("eval run %s was cancelled or taken over", run_id)
        except StopRequested:
            self._release(run_id)
        except Exception as e:  # the run as a whole failed (its model vanished, the engine broke)
            log.exception("eval run %s failed", run_id)
            err = {"code": getattr(e, "code", None) or "run_error", "message": str(e)[:2000]}
            self._finish(run_id, "failed", err)
        return run_id

    def claim(self) -> str | None:
        """The oldest queued run, or one whose worker's lease expired (its worker died)."""
        with self.db.begin() as conn:
            return eval_state.claim_next(conn, self.worker_id, self.settings.lease_seconds)

    def _heartbeat(self, run_id: str, usage: dict) -> bool:
        with self.db.begin() as conn:
            return eval_state.heartbeat(conn, run_id, self.worker_id, usage)

    def _release(self, run_id: str) -> None:
        with self.db.begin() as conn:
            eval_state.release(conn, run_id, self.worker_id)

    def _finish(self, run_id: str, status: str, error: dict | None = None, usage: dict | None = None) -> None:
        with self.db.begin() as conn:  # its webhook event commits with the status
            eval_state.finish(conn, run_id, self.worker_id, status, error=error, usage=usage)

    def release_memory(self) -> dict | None:
        """The engine's `release_memory()` (a training job is starting), or None if no engine was
        started or the engine is the shared one (its owner releases it)."""
        engine = self._serve
        return engine.release_memory() if engine is not None and self._own_serve else None

    def serve_engine(self):
        with self._serve_lock:
            if self._serve is None:
                if self._shared is not None:
                    self._serve = self._shared()
                else:
                    from openft.serve.backend import open_engine

                    self._serve = open_engine(eval_engine_settings(self.settings))
            return self._serve

    # -- one run -----------------------------------------------------------------------------

    async def _execute(self, run_id: str) -> None:
        with self.db.connect() as conn:
            run = conn.execute(sa.select(eval_runs).where(eval_runs.c.id == run_id)).first()
            ev = conn.execute(sa.select(evals).where(evals.c.id == run.eval_id)).first()
            done = set(conn.execute(sa.select(eval_output_items.c.datasource_item_id)
                                    .where(eval_output_items.c.run_id == run_id)).scalars())
        graders.check_python_allowed(ev.testing_criteria, self.settings.eval_python_grader)  # the run fails
        spec = datasource.generation_spec(run.data_source)
        usage: dict = dict(run.usage or {})
        ctx = _RunContext(self, run, ev, spec, usage)
        pending = [i for i in range(len(run.items)) if i not in done]
        engine = None
        if pending and (spec["kind"] == "completions" or "_model" in json.dumps(ev.testing_criteria)):
            engine = await asyncio.to_thread(self.serve_engine)  # once, before the items ask for it at once
        if engine is not None and spec["kind"] == "completions":
            await ctx.merge_adapter()
        capacity = max(1, getattr(engine, "max_batch", self.settings.serve_max_batch)
                       + getattr(engine, "max_queue", self.settings.serve_max_queue))
        sem = asyncio.Semaphore(capacity)

        self._written = 0

        async def one(i: int) -> None:
            async with sem:
                row = await ctx.evaluate(i, run.items[i])
            await asyncio.to_thread(self._write_item, row)

        tasks = [asyncio.create_task(one(i)) for i in pending]
        watcher = asyncio.create_task(self._watch(run_id, usage, tasks))
        try:
            if tasks:
                await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            pass
        finally:
            watcher.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, watcher, return_exceptions=True)
        if self._stop.is_set():
            raise StopRequested()
        if not await asyncio.to_thread(self._heartbeat, run_id, usage):
            raise RunGone()
        for t in tasks:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()
        self._finish(run_id, "completed", usage=usage)

    async def _watch(self, run_id: str, usage: dict, tasks: list) -> None:
        beat = max(0.2, min(self.settings.heartbeat_seconds, 2.0))
        while True:
            await asyncio.sleep(beat)
            gone = not await asyncio.to_thread(self._heartbeat, run_id, usage)
            if gone or self._stop.is_set():
                for t in tasks:
                    t.cancel()
                return

    def _write_item(self, row: dict) -> None:
        with self._write_lock:  # one at a time (the database takes one writer anyway)
            with self.db.begin() as conn:
                try:
                    conn.execute(eval_output_items.insert().values(**row))
                except sa.exc.IntegrityError:  # written by an earlier attempt of this run
                    return
            self._written += 1
            try:  # test-only, inert by default: `hold` holds every later write; `raise` stops this worker
                fault_point("eval-item", self._written)
            except RuntimeError:  # ... here, as a server stop at this moment would: the run goes back to the queue
                self._stop.set()
                raise StopRequested() from None


class StopRequested(Exception):
    """The worker is stopping: the run goes back to the queue and continues later."""


class _RunContext:
    """What evaluating one item needs: the run, its eval, the engine, resolved models, usage."""

    def __init__(self, ex: EvalRunExecutor, run, ev, spec: dict, usage: dict):
        self.ex, self.run, self.ev, self.spec, self.usage = ex, run, ev, spec, usage
        self.schema = datasource.item_schema(ev.data_source_config)
        self._models: dict = {}

    def _add_usage(self, model: str, used: dict) -> None:
        u = self.usage.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0, "invocation_count": 0})
        u["prompt_tokens"] += used.get("prompt_tokens", 0)
        u["completion_tokens"] += used.get("completion_tokens", 0)
        u["invocation_count"] += 1

    async def _resolve(self, model: str):
        if model not in self._models:
            def run():
                with self.ex.db.connect() as conn:
                    return resolve_model(self.ex.settings, conn, self.run.project_id, model)
            self._models[model] = await asyncio.to_thread(run)
        return self._models[model]

    async def merge_adapter(self) -> None:
        """Every item of a completions run uses one model: a LoRA one is served merged into a copy
        of the base for the run (no per-row LoRA work). A failure here is left to the items."""
        try:
            m = await self._resolve(self.spec["model"])
            if m.adapter_path and not m.full_model_path:
                await asyncio.to_thread(self.ex._serve.merge_adapter, m.base_model, m.adapter_path, m.id)
        except Exception as e:  # noqa: BLE001 - the items then fail or succeed on their own
            log.warning("eval run %s: serving %s unmerged: %s", self.run.id, self.spec["model"], e)

    async def generate(self, model: str, messages: list[dict], sampling: dict) -> tuple[str, str, dict]:
        """(text, finish_reason, usage) of one chat completion through the serving engine."""
        from openft.serve.types import Delta, Finish, GenerationRequest, SamplingParams, Usage

        m = await self._resolve(model)
        params = SamplingParams(max_tokens=sampling.get("max_completion_tokens") or DEFAULT_MAX_TOKENS,
                                temperature=sampling.get("temperature", 1.0), top_p=sampling.get("top_p", 1.0),
                                seed=sampling.get("seed"))
        req = GenerationRequest(base_model=m.base_model, adapter_path=m.adapter_path,
                                adapter_key=m.id if m.kind != "base" else None, full_model_path=m.full_model_path,
                                messages=messages, params=params)
        engine = await asyncio.to_thread(self.ex.serve_engine)
        while True:
            parts, finish, used = [], "stop", {}
            gen = engine.generate(req)
            try:
                async for item in gen:
                    if isinstance(item, Delta):
                        parts.append(item.text)
                    elif isinstance(item, Finish):
                        finish = item.finish_reason
                    elif isinstance(item, Usage):
                        used = {"prompt_tokens": item.prompt_tokens, "completion_tokens": item.completion_tokens}
                return "".join(parts), finish, used
            except RateLimited:  # the engine is shared with chat traffic: wait for room
                await asyncio.sleep(0.5)
            finally:
                await gen.aclose()

    async def judge(self, model: str, messages: list[dict], sampling: dict) -> tuple[str, dict]:
        text, _, used = await self.generate(model, messages, sampling)
        return text, used

    async def evaluate(self, index: int, entry: dict) -> dict:
        item, given = entry["item"], entry.get("sample")
        row = {"id": new_id("outputitem_", 32), "run_id": self.run.id, "eval_id": self.run.eval_id,
               "datasource_item_id": index, "created_at": int(time.time()), "datasource_item": item}
        sample_obj = None
        try:
            problem = datasource.item_problem(item, self.schema)
            if problem:
                raise templates.MissingField(problem)
            if self.spec["kind"] == "completions":
                messages = datasource.input_messages(self.spec, item)
                sampling = self.spec["sampling"]
                text, finish, used = await self.generate(self.spec["model"], messages, sampling)
                self._add_usage(self.spec["model"], used)
                sample_obj = {"input": messages, "output": [{"role": "assistant", "content": text}],
                              "finish_reason": finish, "model": self.spec["model"],
                              "usage": {**used, "total_tokens": sum(used.values()), "cached_tokens": 0},
                              "error": None, "temperature": sampling.get("temperature", 1.0),
                              "max_completion_tokens": sampling.get("max_completion_tokens") or DEFAULT_MAX_TOKENS,
                              "top_p": sampling.get("top_p", 1.0), "seed": sampling.get("seed")}
                tsample = template_sample(text, self.spec["model"], finish)
            else:
                tsample = sample_from_data(given)
                sample_obj = given
            results = [await graders.grade(c, item, tsample, self.judge, self._add_usage)
                       for c in self.ev.testing_criteria]
        except (templates.MissingField, OpenFTError, RuntimeError, ValueError) as e:
            msg = str(e) if not isinstance(e, OpenFTError) else e.message
            code = e.code if isinstance(e, graders.UnreadableAnswer) else "invalid_item"
            sample_obj = {**(sample_obj or {}), "error": {"code": code, "message": msg}}
            return {**row, "status": "error", "results": [], "sample": sample_obj}
        passed = all(r["passed"] for r in results)
        return {**row, "status": "pass" if passed else "fail", "results": results, "sample": sample_obj}


def template_sample(text: str, model: str, finish: str = "stop") -> dict:
    """What `{{sample.*}}` sees: output_text, output_json (when the text is JSON), choices, model."""
    s = {"output_text": text, "model": model,
         "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]}
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            s["output_json"] = parsed
    except ValueError:
        pass
    return s


def sample_from_data(given) -> dict | None:
    """A jsonl item's own `sample` as templates see it (output_text from its first choice)."""
    if not isinstance(given, dict):
        return None
    if "output_text" in given:
        return template_sample(str(given["output_text"]), given.get("model", ""))
    choices = given.get("choices") or []
    text = ((choices[0] or {}).get("message") or {}).get("content") if choices else None
    return {**template_sample(text or "", given.get("model", "")), **given}


def eval_engine_settings(settings: Settings) -> Settings:
    """The eval engine's settings: EVAL_BATCH sequences at once (a 128-item sentiment run took 10-20%
    less CPU than with the chat default of 16; the KV cache grows with it), unless the operator set
    serve_max_batch, which then bounds the eval engine too."""
    if "serve_max_batch" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"serve_max_batch": max(settings.serve_max_batch, EVAL_BATCH)})


def start_thread(settings: Settings, db: sa.Engine, worker_id: str, stop_event: threading.Event, *,
                 executor: EvalRunExecutor | None = None) -> threading.Thread:
    """The eval-run loop (of `executor`, or a new one) in a daemon thread beside the job loop (a
    training job does not hold up evals); it ends when `stop_event` is set."""
    ex = executor or EvalRunExecutor(settings, db, worker_id)
    t = threading.Thread(target=ex.run_forever, args=(stop_event,), name="openft-eval-runs", daemon=True)
    t.start()
    return t
