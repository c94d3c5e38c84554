"""The built-in engine's state of one request and of each of its `n` sequences.

A `Request` is what `Engine.generate` queued: its params, the runner and adapter it runs on,
the prompt's ids, its sequences, and the asyncio queue its caller reads items from (`push` is
safe from the decode thread). A `Sequence` is one choice: a `runner.Slot` (what the model runner
needs: feed, adapter, KV position) plus what the output processor keeps per choice (generated
ids, random stream, detokenizer, stop matcher, grammar matcher, the ids and logprobs not yet sent).

Shared by the scheduler (admission), the executor (sampling) and the output processor; holds no
logic beyond `push`. Knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from openft.serve.constrain import Matcher
from openft.serve.lora import LoraAdapter
from openft.serve.model_runner import ModelRunner, Slot
from openft.serve.text import Detokenizer, StopMatcher
from openft.serve.types import SamplingParams


@dataclass(eq=False)
class Sequence(Slot):
    req: Request | None = None
    index: int = 0                      # the choice's index (0..n-1)
    out_ids: list[int] = field(default_factory=list)
    gen: random.Random | None = None    # its own stream of uniforms (sampling.make_generator)
    detok: Detokenizer | None = None
    stop: StopMatcher | None = None
    pend_ids: list[int] = field(default_factory=list)   # decoded but not yet sent (held by a stop string's prefix)
    pend_lps: list[dict] = field(default_factory=list)
    started: bool = False               # its first step ran (echo sent, max_tokens 0 handled)
    guide: Matcher | None = None        # constrained decoding: this sequence's place in its grammar


@dataclass(eq=False)
class Request:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    params: SamplingParams
    runner: ModelRunner
    adapter: LoraAdapter | None
    prompt_ids: list[int]
    max_new: int
    seqs: list[Sequence] = field(default_factory=list)
    open: int = 0               # sequences not finished yet
    cancelled: bool = False
    done: bool = False

    def push(self, items: list) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, items)
        except RuntimeError:    # the caller's loop is gone: nobody listens any more
            self.cancelled = True
