"""What the built-in engine holds in memory to serve requests, and when it lets go of it.

`LoadedModels` keeps one runner per base model (loaded on first use, kept), one per full model
served as itself, at most one copy of a base with an adapter merged into its weights
(`merge`: an eval run's model), the grammar side (`constrain.Guide`) of each runner, and the
LoRA adapters in an LRU (`lora.AdapterCache`, bounded by `serve_max_adapters` and
`serve_max_adapter_bytes`). `evict` forgets a deleted model; `release_idle` gives back the merged
copy and the KV caches of runners no sequence uses (the caller holds the scheduler's lock, so no
runner gains a sequence meanwhile).

Loading happens in the callers' threads (`asyncio.to_thread`), never the decode thread. Knows
nothing about queues, sampling or HTTP; where runners live (device, dtype) is the executor's.
"""

from __future__ import annotations

import threading

from openft.config import Settings
from openft.serve.constrain import Guide
from openft.serve.executor import Executor
from openft.serve.lora import AdapterCache, LoraAdapter, load_adapter, merge_into
from openft.serve.model_runner import ModelRunner
from openft.serve.types import GenerationRequest, SamplingParams


class LoadedModels:
    def __init__(self, settings: Settings, executor: Executor):
        self.settings = settings
        self.executor = executor
        self.adapters = AdapterCache(settings.serve_max_adapters, settings.serve_max_adapter_bytes)
        self.runners: dict[str, ModelRunner] = {}  # "base name" | "full:<path>" | "merged:<base>|<key>" -> runner
        self.guides: dict[str, Guide] = {}     # runner name -> its constrained-decoding side
        self._full_keys: dict[str, str] = {}   # adapter key of a full model -> its runner's name
        self._merged: dict[str, str] = {}      # adapter key -> name of the runner with it merged in (merge)
        self.lock = threading.Lock()

    def runner_for(self, req: GenerationRequest) -> ModelRunner:
        name = f"full:{req.full_model_path}" if req.full_model_path else req.base_model
        with self.lock:
            merged = self._merged.get(req.adapter_key) if req.adapter_path and not req.full_model_path else None
            if merged in self.runners:
                return self.runners[merged]
            runner = self.runners.get(name)
            if runner is None:
                if req.full_model_path:
                    path = req.full_model_path
                else:
                    from openft.models import materialize

                    path = materialize(self.settings, req.base_model)
                runner = self.executor.build(path, name)
                self.runners[name] = runner
            if req.full_model_path and req.adapter_key:
                self._full_keys[req.adapter_key] = name
            return runner

    def has_runner(self, req: GenerationRequest) -> bool:
        return (f"full:{req.full_model_path}" if req.full_model_path else req.base_model) in self.runners

    def adapter_for(self, runner: ModelRunner, req: GenerationRequest) -> LoraAdapter:
        key = f"{runner.name}|{req.adapter_key or req.adapter_path}"
        return self.adapters.get_or_load(key, lambda: load_adapter(
            req.adapter_path, key, runner.linear_names, runner.dtype, runner.device))

    def guide_for(self, runner: ModelRunner) -> Guide:
        with self.lock:
            guide = self.guides.get(runner.name)
            if guide is None:
                guide = Guide(runner.tokenizer, int(runner.cfg.vocab_size), runner.eos_ids)
                self.guides[runner.name] = guide
            return guide

    def merge(self, base_model: str, adapter_path: str, adapter_key: str) -> None:
        """Serve `adapter_key` from now on from a copy of the base with the adapter merged in;
        the previous merged copy goes (see `Engine.merge_adapter`)."""
        if adapter_key in self._merged:
            return
        req = GenerationRequest(base_model=base_model, adapter_path=adapter_path, adapter_key=adapter_key,
                                full_model_path=None, messages=None, prompt=None, params=SamplingParams())
        base = self.runner_for(req)
        adapter = self.adapter_for(base, req)
        name = f"merged:{base.name}|{adapter_key}"
        runner = self.executor.build(base.path, name)
        merge_into(runner.model, adapter)
        runner.merged_adapter = adapter_key
        with self.lock:
            for old in self._merged.values():
                self.runners.pop(old, None)
            self._merged = {adapter_key: name}
            self.runners[name] = runner

    def evict(self, adapter_key: str) -> None:
        """A model was deleted: drop its adapter (or full model) from memory; running requests finish."""
        self.adapters.evict_where(lambda k: k.split("|", 1)[1] == adapter_key)
        merged = self._merged.pop(adapter_key, None)
        if merged is not None:
            with self.lock:
                self.runners.pop(merged, None)   # running sequences keep their runner until they finish
        name = self._full_keys.pop(adapter_key, None)
        if name is not None:
            with self.lock:
                runner = self.runners.get(name)
                if runner is not None and not runner.seqs:
                    del self.runners[name]

    def release_idle(self) -> int:
        """Drop the merged copy and the KV caches of runners with no running sequence (rebuilt on
        the next request); the bytes freed. Call with the scheduler's lock held."""
        freed = 0
        with self.lock:
            for key, name in list(self._merged.items()):
                runner = self.runners.get(name)
                if runner is not None and not runner.seqs:
                    freed += sum(p.numel() * p.element_size() for p in runner.model.parameters())
                    del self.runners[name]
                    del self._merged[key]
            for runner in self.runners.values():
                if not runner.seqs and runner.cache is not None:
                    freed += runner.cache.numel() * runner.cache.element_size()
                    runner.cache = None
        return freed
