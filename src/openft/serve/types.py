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
    eos_logprob: bool = False           # legacy completions: an end-of-sequence token that ends a choice gets
                                        # its logprob entry (and id) though its text is left out, as OpenAI's and
                                        # vLLM's legacy API: one entry per generated token
    json_schema: dict | None = None     # the output must be JSON matching this schema (constrained decoding;
                                        # response_format json_object is {"type": "object"})


@dataclass(frozen=True)
class ToolChoice:
    """OpenAI's tool_choice and parallel_tool_calls, as the engine applies them to `tools`."""

    mode: str = "auto"                  # none (tools left out of the prompt) | auto | required | function
    name: str | None = None             # mode "function": the one function the answer calls
    parallel: bool = True               # an answer may hold more than one call


@dataclass
class GenerationRequest:
    base_model: str
    adapter_path: str | None = None     # PEFT folder: adapter_config.json + adapter_model.safetensors
    adapter_key: str | None = None      # cache key (the model id); `Engine.evict` takes it
    full_model_path: str | None = None  # a full HF model folder served as its own model
    messages: list[dict] | None = None  # chat: rendered with the model's chat template
    prompt: str | list[int] | None = None  # legacy completions: raw text, or token ids used as they are
    params: SamplingParams = field(default_factory=SamplingParams)
    tools: list | None = None           # OpenAI function tools, rendered by the chat template's tool format
    tool_choice: ToolChoice = field(default_factory=ToolChoice)


@dataclass
class Delta:
    index: int                          # choice index
    text: str
    token_ids: list[int]
    logprobs: list[dict] | None = None  # [{"token","logprob","bytes","top_logprobs":[...]}] as OpenAI's chat


@dataclass
class ToolCallDelta:
    """A piece of one tool call of choice `index`, as OpenAI streams it: the first piece of call
    `call_index` has its id and function name and empty arguments, the next ones only argument text."""

    index: int
    call_index: int
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass
class Finish:
    index: int
    finish_reason: str                  # "stop" | "length" | "tool_calls"


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
