"""An adapter served merged into a copy of the base (what an eval run asks for) answers as the
same adapter served as LoRA rows, with no LoRA work per row; evicting the model drops the copy."""

from __future__ import annotations

import asyncio

from openft.serve.types import GenerationRequest, SamplingParams
from tests.support.serving import collect, run

PROMPTS = ["Write a short poem about the sea.", "What is 2 + 2?", "Name three colours."]


def greedy_all(engine, adapter: str) -> list[list[int]]:
    def req(p):
        return GenerationRequest(base_model="openft-tiny", adapter_path=adapter, adapter_key="ft:m", full_model_path=None,
                                 messages=[{"role": "user", "content": p}], prompt=None,
                                 params=SamplingParams(max_tokens=12, temperature=0, logprobs=True))

    async def main():
        return await asyncio.gather(*[collect(engine, req(p)) for p in PROMPTS])

    return [[t for it in items if hasattr(it, "token_ids") for t in it.token_ids] for *_, items in run(main())]


def test_merged_adapter_answers_as_lora_rows_and_eviction_drops_it(engine_factory, adapters):
    engine = engine_factory()
    as_rows = greedy_all(engine, adapters[0])
    base = engine._runners["openft-tiny"]
    assert base.peak_adapters >= 1                                # served as LoRA rows
    engine.merge_adapter("openft-tiny", adapters[0], "ft:m")
    merged = engine._runners["merged:openft-tiny|ft:m"]
    assert merged.merged_adapter == "ft:m"
    assert greedy_all(engine, adapters[0]) == as_rows
    assert merged.steps > 0 and merged.peak_adapters == 0        # the merged copy ran them, with no LoRA rows
    base_steps = base.steps
    engine.evict("ft:m")
    assert "merged:openft-tiny|ft:m" not in engine.stats()["models"]
    assert greedy_all(engine, adapters[0]) == as_rows and base.steps > base_steps   # back to LoRA rows on the base


def test_merging_another_adapter_replaces_the_copy(engine_factory, adapters):
    engine = engine_factory()
    engine.merge_adapter("openft-tiny", adapters[0], "ft:a")
    engine.merge_adapter("openft-tiny", adapters[1], "ft:b")
    models = engine.stats()["models"]
    assert "merged:openft-tiny|ft:b" in models and "merged:openft-tiny|ft:a" not in models
