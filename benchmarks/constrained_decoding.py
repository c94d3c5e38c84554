"""Constrained decoding cost: the engine's tokens/s with and without a constraint.

Sends the same N chat requests (C at a time, in-process through `Engine.generate`) five ways:
unconstrained, `response_format` json_object and json_schema (llguidance masks, see
openft.serve.constrain), with the tools in the prompt unconstrained (tool_choice none) and under
tool_choice auto (free text in which an opened
call must be valid; the model is the base with the tests' Hermes tool template, its weights
symlinked), in alternating rounds so that a change of machine load hits all alike, and prints
aggregate tokens/s, per-token latency (p50) and time to first token (p50) side by side, with the
CPU model, its vector flags and torch's thread count. The last two lines are `slowdown_json_object=<x>
slowdown_json_schema=<y> slowdown_tools_auto=<z>` (unconstrained tokens/s over constrained; tools_auto over
tools_free, the same prompt unconstrained), then the same ratios of per-token latency; the
target is <= 1.3.

The schema asks for one long string and a list of short records, so constrained answers run to
max_tokens like free ones do and both sides decode about the same number of tokens.

    python benchmarks/constrained_decoding.py            # smollm2-135m-instruct, 16 x 96 tokens, 8 concurrent, 3 rounds
    python benchmarks/constrained_decoding.py --quick    # openft-tiny, 4 x 16 tokens, 4 concurrent, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from machine import cpu_line  # benchmarks/machine.py (scripts run from benchmarks/ on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCHEMA = {"type": "object", "properties": {
    "story": {"type": "string"},
    "characters": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}, "role": {"enum": ["hero", "villain", "friend"]}},
        "required": ["name", "age", "role"], "additionalProperties": False}}},
    "required": ["story", "characters"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TEMPLATE = Path(__file__).resolve().parents[1] / "tests" / "api" / "hermes_template.jinja"
TOPICS = ["a lighthouse keeper", "a robot learning to paint", "volcanoes", "a city at night", "an old map",
          "honeybees", "a long train journey", "the moon landing", "a chess tournament", "rain in the forest"]


def tool_model(settings, base: str, folder: Path) -> str:
    """`base` with a Hermes tool template, registered as a local model (weights symlinked)."""
    from openft.models import materialize, register_local

    src = Path(materialize(settings, base))
    folder.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "chat_template.jinja":
            (folder / f.name).symlink_to(f)
    (folder / "chat_template.jinja").write_text(TEMPLATE.read_text())
    config = json.loads((src / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    register_local(settings, base + "-tools", folder)
    return base + "-tools"


async def run(engine, base: str, n: int, max_tokens: int, conc: int, schema, tools=None, choice: str = "auto") -> dict:
    from openft.serve.types import Delta, GenerationRequest, SamplingParams, ToolChoice, Usage

    sem = asyncio.Semaphore(conc)

    async def one(i: int):
        msgs = [{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]} as JSON with the "
                                            f"story and its characters."}]
        async with sem:
            req = GenerationRequest(base_model=base, messages=msgs, tools=tools, tool_choice=ToolChoice(mode=choice),
                                    params=SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=i,
                                                          json_schema=schema))
            t0, first, tokens = time.perf_counter(), None, 0
            async for it in engine.generate(req):
                if isinstance(it, Delta) and it.token_ids and first is None:
                    first = time.perf_counter()
                elif isinstance(it, Usage):
                    tokens = it.completion_tokens
            end = time.perf_counter()
            first = first or end
            return first - t0, (end - first) / max(1, tokens - 1), tokens

    t = time.perf_counter()
    stats = await asyncio.gather(*[one(i) for i in range(n)])
    wall = time.perf_counter() - t
    tokens = sum(s[2] for s in stats)
    return {"tok_s": tokens / wall, "tokens": tokens, "ttft": statistics.median(s[0] for s in stats),
            "tpot": statistics.median(s[1] for s in stats)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="smollm2-135m-instruct")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="auto", help="engine dtype (auto|float32|bfloat16)")
    ap.add_argument("--model-cache", default=os.environ.get("OPENFT_MODEL_CACHE_DIR"))
    ap.add_argument("--quick", action="store_true", help="openft-tiny, 4 requests x 16 tokens, 4 concurrent, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.base, args.requests, args.max_tokens, args.concurrency, args.rounds = "openft-tiny", 4, 16, 4, 1

    import torch

    from openft.config import Settings
    from openft.serve.engine import Engine

    work = Path(tempfile.mkdtemp(prefix="openft-bench-"))
    settings = Settings(data_dir=work / "data", model_cache_dir=args.model_cache)
    engine = Engine(settings, dtype=args.dtype)
    with_tools = tool_model(settings, args.base, work / "tool-model")
    # tools_free: the same tool-template model and the same tools in the prompt, tool_choice "none" (the
    # engine renders them but neither constrains nor parses): the like-for-like baseline of tools_auto,
    # whose prompt is longer than the others' by the tools' description.
    modes = {"unconstrained": (args.base, None, None, "auto"), "json_object": (args.base, {"type": "object"}, None, "auto"),
             "json_schema": (args.base, SCHEMA, None, "auto"), "tools_free": (with_tools, None, TOOLS, "none"),
             "tools_auto": (with_tools, None, TOOLS, "auto")}
    results: dict[str, list[dict]] = {m: [] for m in modes}
    try:
        for model, schema, tools, choice in modes.values():  # warm-up: loads the model, builds the grammar tokenizer
            asyncio.run(run(engine, model, 2, 4, 2, schema, tools, choice))
        for _ in range(args.rounds):
            for mode, (model, schema, tools, choice) in modes.items():
                results[mode].append(asyncio.run(run(engine, model, args.requests, args.max_tokens,
                                                     args.concurrency, schema, tools, choice)))
    finally:
        engine.close()

    print(f"\n{args.base}, {args.requests} requests x {args.max_tokens} tokens, {args.concurrency} concurrent, "
          f"{args.rounds} round(s), engine dtype {engine.dtype}, torch threads {torch.get_num_threads()}")
    print(f"CPU: {cpu_line()}")
    print(f"| {'':14} | tokens/s | tokens | TTFT p50 | per-token p50 |")
    print(f"|{'-' * 16}|---------:|-------:|---------:|--------------:|")
    best, tpot = {}, {}
    for mode, rs in results.items():
        tok_s = statistics.median(r["tok_s"] for r in rs)
        best[mode], tpot[mode] = tok_s, statistics.median(r["tpot"] for r in rs)
        print(f"| {mode:14} | {tok_s:8.1f} | {statistics.median(r['tokens'] for r in rs):6.0f} | "
              f"{statistics.median(r['ttft'] for r in rs):7.2f}s | "
              f"{statistics.median(r['tpot'] for r in rs) * 1e3:11.1f}ms |")
    # Aggregate tokens/s also falls when answers are shorter (json_object answers stop when the object
    # closes, so the batch drains early); the per-token latency ratio is the constraint's own cost.
    base_of = {"json_object": "unconstrained", "json_schema": "unconstrained", "tools_auto": "tools_free"}
    print(" ".join(f"slowdown_{m}={best[b] / best[m]:.2f}" for m, b in base_of.items()))
    print(" ".join(f"per_token_slowdown_{m}={tpot[m] / tpot[b]:.2f}" for m, b in base_of.items()))


if __name__ == "__main__":
    main()
