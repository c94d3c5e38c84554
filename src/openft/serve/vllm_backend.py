"""The serving interface (`openft.serve.backend.ServingBackend`) implemented with vLLM.

Selected by `serve_backend = "vllm"` (settings; `open_engine` builds it). One vLLM
`AsyncLLMEngine` per base model with `enable_lora=True`; each adapter becomes a `LoRARequest`
(stable integer id per adapter key), so vLLM batches many adapters of one base as the built-in
engine does. vLLM's cumulative outputs are turned into Delta/Finish/Usage items. The prompt is
rendered with the same chat template as the built-in engine.

Not exercised by the test suite (no GPU, no vllm there); imported only when selected.
Knows nothing about HTTP.
"""

from __future__ import annotations

import itertools
import threading
import uuid

from openft.config import Settings
from openft.errors import ContextLengthExceeded, InvalidRequest, RateLimited
from openft.serve.types import Delta, Finish, GenerationRequest, Usage


class VllmBackend:
    def __init__(self, settings: Settings):
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise InvalidRequest("serve_backend='vllm' needs the vllm package (pip install vllm) on a GPU machine.",
                                 param="serve_backend") from e
        self.settings = settings
        self._engines: dict[str, tuple[object, object]] = {}   # model path -> (AsyncLLMEngine, tokenizer)
        self._lora_ids: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._outstanding = 0

    def _engine_for(self, req: GenerationRequest):
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        if req.full_model_path:
            path = req.full_model_path
        else:
            from openft.models import materialize

            path = materialize(self.settings, req.base_model)
        with self._lock:
            if path not in self._engines:
                args = AsyncEngineArgs(model=path, enable_lora=not req.full_model_path,
                                       max_loras=max(1, self.settings.serve_max_adapters), max_lora_rank=64,
                                       max_num_seqs=self.settings.serve_max_batch)
                self._engines[path] = (AsyncLLMEngine.from_engine_args(args), AutoTokenizer.from_pretrained(path))
            return self._engines[path]

    def _lora(self, req: GenerationRequest):
        if not req.adapter_path or req.full_model_path:
            return None
        from vllm.lora.request import LoRARequest

        key = req.adapter_key or req.adapter_path
        with self._lock:
            if key not in self._lora_ids:
                self._lora_ids[key] = next(self._ids)
        return LoRARequest(key, self._lora_ids[key], req.adapter_path)

    async def generate(self, req: GenerationRequest):
        import asyncio

        from vllm import SamplingParams as VllmParams

        if req.params.json_schema is not None or (req.tools and req.tool_choice.mode != "none"):
            raise InvalidRequest("tools and response_format need the built-in engine (serve_backend builtin).",
                                 param="tools" if req.tools else "response_format")
        engine, tok = await asyncio.to_thread(self._engine_for, req)
        if req.messages is not None:
            text = tok.apply_chat_template(req.messages, tools=req.tools, add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(req.prompt or "", add_special_tokens=True)["input_ids"]
        p = req.params
        limit = getattr(tok, "model_max_length", None) or 0
        model_cfg = await engine.get_model_config()
        limit = model_cfg.max_model_len or limit
        if len(ids) >= limit or (p.max_tokens and len(ids) + p.max_tokens > limit):
            raise ContextLengthExceeded(f"This model's maximum context length is {limit} tokens; the request needs "
                                        f"{len(ids) + (p.max_tokens or 0)}.", param="max_tokens")
        if self._outstanding + p.n > self.settings.serve_max_batch + self.settings.serve_max_queue:
            raise RateLimited("The server is busy; retry shortly.", retry_after=1.0)
        sp = VllmParams(n=p.n, temperature=p.temperature, top_p=p.top_p, seed=p.seed, stop=list(p.stop or []),
                        max_tokens=p.max_tokens if p.max_tokens is not None else limit - len(ids),
                        logprobs=(p.top_logprobs or 0) if p.logprobs else None,
                        prompt_logprobs=(p.top_logprobs or 0) if (p.echo and p.logprobs) else None)
        request_id = uuid.uuid4().hex
        seen_text, seen_tok, done = [0] * p.n, [0] * p.n, [False] * p.n
        self._outstanding += p.n
        finished = False
        try:
            if p.echo:
                for i in range(p.n):
                    yield Delta(i, tok.decode(ids), list(ids), None)
            last = None
            async for out in engine.generate({"prompt_token_ids": ids}, sp, request_id, lora_request=self._lora(req)):
                last = out
                for c in out.outputs:
                    i = c.index
                    new_text, new_ids = c.text[seen_text[i]:], list(c.token_ids[seen_tok[i]:])
                    lps = None
                    if p.logprobs and c.logprobs:
                        lps = [_lp(tok, t, c.logprobs[seen_tok[i] + k], p.top_logprobs) for k, t in enumerate(new_ids)]
                    seen_text[i], seen_tok[i] = len(c.text), len(c.token_ids)
                    if new_text or new_ids:
                        yield Delta(i, new_text, new_ids, lps)
                    if c.finish_reason and not done[i]:
                        done[i] = True
                        yield Finish(i, "length" if c.finish_reason == "length" else "stop")
            completion = sum(len(c.token_ids) for c in last.outputs) if last else 0
            finished = True
            yield Usage(len(ids), completion)
        finally:
            self._outstanding -= p.n
            if not finished:
                await engine.abort(request_id)

    def merge_adapter(self, base_model: str, adapter_path: str, adapter_key: str) -> None:
        """vLLM batches LoRA rows itself; nothing to prepare."""

    def release_memory(self) -> dict:
        """vLLM keeps its preallocated KV cache; nothing is given back."""
        return {"bytes": 0}

    def stats(self) -> dict:
        return {"backend": "vllm", "outstanding": self._outstanding, "models": list(self._engines),
                "adapters": list(self._lora_ids)}

    def evict(self, adapter_key: str) -> None:
        lora_id = self._lora_ids.pop(adapter_key, None)
        if lora_id is None:
            return
        import asyncio

        for engine, _ in self._engines.values():
            remove = getattr(engine, "remove_lora", None)
            if remove is not None:
                result = remove(lora_id)
                if asyncio.iscoroutine(result):
                    try:
                        asyncio.get_running_loop().create_task(result)
                    except RuntimeError:
                        asyncio.run(result)

    def close(self) -> None:
        for engine, _ in self._engines.values():
            shutdown = getattr(engine, "shutdown_background_loop", None) or getattr(engine, "shutdown", None)
            if shutdown is not None:
                shutdown()
        self._engines.clear()


def _lp(tok, token_id: int, entry: dict, top: int) -> dict:
    """vLLM's {token_id: Logprob} (top k plus the chosen one) -> OpenAI's chat logprob entry."""
    def one(t, logprob):
        s = tok.decode([t])
        return {"token": s, "logprob": logprob, "bytes": list(s.encode())}

    chosen = entry.get(token_id)
    ranked = sorted(entry.items(), key=lambda kv: -kv[1].logprob)[:top]
    return {**one(token_id, float(chosen.logprob) if chosen is not None else None),
            "top_logprobs": [one(t, float(lp.logprob)) for t, lp in ranked]}
