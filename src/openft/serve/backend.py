"""The one small interface every serving backend implements, and the choice between them.

`ServingBackend` is what the API, the eval worker and the benchmarks call: the built-in engine
(`openft.serve.engine.Engine`: our continuous batching over many LoRA adapters) and the vLLM
backend (`openft.serve.vllm_backend.VllmBackend`) are two implementations of it, with no
branches on the backend inside either. `open_engine(settings)` builds the one the settings name
(`serve_backend`: builtin | vllm).

Knows nothing about HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from openft.config import Settings
from openft.errors import InvalidRequest
from openft.serve.types import GenerationRequest

BACKENDS = ("builtin", "vllm")


@runtime_checkable
class ServingBackend(Protocol):
    def generate(self, req: GenerationRequest) -> AsyncIterator:
        """Async iterator of Delta | ToolCallDelta | Finish items, then one Usage. Errors
        (ContextLengthExceeded, RateLimited, InvalidRequest, NotFound) come from the first
        `__anext__()`, before any item; closing the iterator early cancels the request."""
        ...

    def load(self, req: GenerationRequest) -> None:
        """Load what serving `req` needs (base or full model weights) now, in the caller's thread
        (openft.serve.loading runs it in the background)."""
        ...

    def loaded(self, req: GenerationRequest) -> bool:
        """Whether `req`'s model is in memory already."""
        ...

    def merge_adapter(self, base_model: str, adapter_path: str, adapter_key: str) -> None:
        """A hint that `adapter_key` will be asked for alone for a while (an eval run): a backend
        may serve it from merged weights. May do nothing."""
        ...

    def evict(self, adapter_key: str) -> None:
        """The model was deleted: forget its adapter or weights; running requests finish."""
        ...

    def release_memory(self) -> dict:
        """Give back what is cached beyond the running requests (a training job is starting on the
        same device). Returns what was released, e.g. {"bytes": n}."""
        ...

    def stats(self) -> dict:
        ...

    def close(self) -> None:
        ...


def open_engine(settings: Settings, *, backend: str | None = None, **kwargs) -> ServingBackend:
    """The serving backend the settings (or `backend`) name; kwargs go to the built-in engine."""
    backend = backend or settings.serve_backend
    if backend == "builtin":
        from openft.serve.engine import Engine

        return Engine(settings, **kwargs)
    if backend == "vllm":
        from openft.serve.vllm_backend import VllmBackend

        return VllmBackend(settings)
    raise InvalidRequest(f"serve_backend must be one of {', '.join(BACKENDS)}, not {backend!r}.", param="serve_backend")
