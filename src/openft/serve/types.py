"""The engine's request and output types: what the API hands in and what it gets back.

Plain dataclasses, no validation of HTTP shapes (the API's pydantic schemas do that); the
engine checks only what it alone can know (context length, adapter files, limits).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    max_tokens: int | None = None       # None: up to the model's context length
    temperature: float = 1.0            # 0 = greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None             # same seed -> same text, whatever else is in the batch
    n: int = 1                          # choices, each its own sequence (index 0..n-1)
    logprobs: bool = False
    top_logprobs: int = 0               # alternatives per token (0..20)
    echo: bool = False                  # legacy completions: prompt text (and logprobs) first


@dataclass
class GenerationRequest:
    base_model: str
    adapter_path: str | None = None     # PEFT folder: adapter_config.json + adapter_model.safetensors
    adapter_key: str | None = None      # cache key (the model id); `Engine.evict` takes it
    full_model_path: str | None = None  # a full HF model folder served as its own model
    messages: list[dict] | None = None  # chat: rendered with the model's chat template
    prompt: str | None = None           # legacy completions: raw text
    params: SamplingParams = field(default_factory=SamplingParams)
    tools: list | None = None


@dataclass
class Delta:
    index: int                          # choice index
    text: str
    token_ids: list[int]
    logprobs: list[dict] | None = None  # [{"token","logprob","bytes","top_logprobs":[...]}] as OpenAI's chat


@dataclass
class Finish:
    index: int
    finish_reason: str                  # "stop" | "length"


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
