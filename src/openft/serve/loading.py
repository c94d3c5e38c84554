"""Model loads in the background, so that nothing waits on one in silence.

`ModelLoads` starts the serving engine and loads a model (its runner: a base model's weights, or a
full model's) in a thread of its own, one per model, and remembers how far each load got. It
is what the server preloads at start (`preload`: OPENFT_PRELOAD_MODELS) and what a generation
request goes through first (`ready_for`): a model that is loaded passes; one that is not starts
loading (if it was not already) and the request either waits for it *asynchronously* (no thread
held; at most `serve_load_wait_s`) or gets `ModelLoading` at once: a 503 with Retry-After whose
message says the stage and the time so far. `view` is the state the API shows on a model object.

Stages, in order: starting the serving engine (importing torch and friends), preparing the
model's files (the packaged GGUF converted to safetensors once, a hub download), loading the
weights. Each is logged with its time. Tests make a load deterministic with `gate`: a load
waits on that event before its first stage.

Knows nothing about HTTP; which engine is used, and how it loads, are the backend's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from openft.config import Settings
from openft.errors import ModelLoading, OpenFTError, ServerError
from openft.serve.types import GenerationRequest

log = logging.getLogger("openft.serve")

STAGES = ("waiting to start", "starting the serving engine", "preparing the model files", "loading the weights")


def load_key(req: GenerationRequest) -> str:
    """What one load makes servable: a base model's runner (its id) or a full model's (its folder)."""
    return f"full:{req.full_model_path}" if req.full_model_path else req.base_model


@dataclass
class Load:
    """One model's load: where it is (`stage` indexes STAGES), how long it has taken, how it ended."""

    model: str
    state: str = "loading"                  # loading | ready | failed
    stage: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    error: OpenFTError | None = None
    done: threading.Event = field(default_factory=threading.Event)
    _waiters: list = field(default_factory=list)     # (loop, future) of requests awaiting it

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def view(self) -> dict:
        out = {"state": self.state, "elapsed_s": round(self.elapsed(), 1)}
        if self.state == "loading":
            out.update(stage=STAGES[self.stage], stage_number=self.stage, stages=len(STAGES) - 1)
        if self.error is not None:
            out["error"] = self.error.message
        return out

    def message(self) -> str:
        where = f"{STAGES[self.stage]}, stage {self.stage} of {len(STAGES) - 1}" if self.stage else STAGES[0]
        return f"The model `{self.model}` is still loading ({where}, {self.elapsed():.0f} s so far)."


class ModelLoads:
    def __init__(self, settings: Settings, engine: Callable[[], object],
                 engine_if_started: Callable[[], object | None] = lambda: None):
        self.settings = settings
        self._engine = engine                    # creates the serving engine on first call (seconds)
        self._engine_if_started = engine_if_started
        self._loads: dict[str, Load] = {}
        self._lock = threading.Lock()
        self.gate: threading.Event | None = None  # tests: a load waits here before its first stage

    # ---- what the API asks -------------------------------------------------------------------
    def view(self, req: GenerationRequest) -> dict:
        """{"state": not_loaded | loading | ready | failed, ...} of the model `req` needs."""
        load = self._loads.get(load_key(req))
        if load is not None:
            return load.view()
        return {"state": "ready" if self._loaded_in_engine(req) else "not_loaded"}

    async def ready_for(self, req: GenerationRequest, wait_s: float | None = None) -> None:
        """Return once the model `req` needs is loaded; otherwise start its load and wait for it
        asynchronously up to `wait_s` (default serve_load_wait_s), then raise ModelLoading (503).
        A load that failed raises its error (once: the next request tries to load again)."""
        key = load_key(req)
        load = self._loads.get(key)
        if load is not None and load.state == "ready":
            return
        if load is None and self._loaded_in_engine(req):    # loaded by someone else (an eval run)
            return
        load = self.start(req)
        wait_s = self.settings.serve_load_wait_s if wait_s is None else wait_s
        if not load.done.is_set() and wait_s > 0:
            await self._wait(load, wait_s)
        if load.state == "ready":
            return
        if load.state == "failed":
            with self._lock:
                if self._loads.get(key) is load:
                    del self._loads[key]
            raise load.error
        raise ModelLoading(load.message() + " Retry after the time in the Retry-After header.",
                           param="model", retry_after=5)

    # ---- starting loads ----------------------------------------------------------------------
    def preload(self, model_ids: Iterable[str]) -> list[Load]:
        """Start loading each of `model_ids` (base model ids) in the background."""
        return [self.start(GenerationRequest(base_model=m)) for m in model_ids]

    def start(self, req: GenerationRequest) -> Load:
        """The load of the model `req` needs, started now unless it runs already (or has finished)."""
        key = load_key(req)
        with self._lock:
            load = self._loads.get(key)
            if load is not None and load.state != "failed":
                return load
            load = self._loads[key] = Load(req.full_model_path or req.base_model)
        threading.Thread(target=self._run, args=(load, req), name=f"openft-load-{key[:40]}", daemon=True).start()
        return load

    def _run(self, load: Load, req: GenerationRequest) -> None:
        stage_started = time.monotonic()

        def stage(n: int) -> None:
            nonlocal stage_started
            now = time.monotonic()
            if load.stage:
                log.info("model %s: %s took %.1f s", load.model, STAGES[load.stage], now - stage_started)
            stage_started, load.stage = now, n
            if n < len(STAGES):
                log.info("model %s: %s (stage %d of %d)", load.model, STAGES[n], n, len(STAGES) - 1)

        try:
            if self.gate is not None:
                self.gate.wait()
            stage(1)
            engine = self._engine()
            stage(2)
            if not req.full_model_path:
                from openft.models import materialize

                materialize(self.settings, req.base_model)
            stage(3)
            engine.load(req)
            stage(len(STAGES))
            load.stage, load.state = len(STAGES) - 1, "ready"
            log.info("model %s is loaded (%.1f s)", load.model, load.elapsed())
        except OpenFTError as e:
            load.error, load.state = e, "failed"
            log.warning("model %s failed to load: %s", load.model, e.message)
        except Exception as e:  # noqa: BLE001 - a failed load is reported to its callers, never lost
            log.exception("model %s failed to load", load.model)
            load.error = ServerError(f"The model `{load.model}` could not be loaded: {type(e).__name__}: {e}")
            load.state = "failed"
        finally:
            load.finished = time.monotonic()
            with self._lock:
                load.done.set()
                waiters, load._waiters = load._waiters, []
            for loop, fut in waiters:
                loop.call_soon_threadsafe(_resolve, fut)

    # ---- helpers -----------------------------------------------------------------------------
    async def _wait(self, load: Load, wait_s: float) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            if load.done.is_set():
                return
            load._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(fut, wait_s)
        except TimeoutError:
            pass

    def _loaded_in_engine(self, req: GenerationRequest) -> bool:
        engine = self._engine_if_started()
        return engine is not None and bool(engine.loaded(req))


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
