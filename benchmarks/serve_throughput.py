"""Serving throughput: many adapters of one base through the engine vs the naive way.

Trains 4 tiny LoRA adapters first (real fine-tuning jobs through the HTTP API, or
`openft.train.loop.train` in-process with --via engine), then sends N chat requests of T
generated tokens, mixed across the 4 adapters and the base model, C at a time (streaming,
through the HTTP API by default), and compares in the same run with the naive way: one request
at a time, transformers `generate` on a PeftModel with the adapter set per request.

Prints aggregate tokens/s, p50/p95 time to first token and per-token latency for both; the last
line is `ratio_vs_sequential=<x> adapter_overhead=<y>` (overhead: per-token time of an adapter
request alone over a base-model request alone). Targets on the 2-core dev box: >= 3 and <= 1.25.

    python benchmarks/serve_throughput.py            # full: 32 x 64 tokens, 8 concurrent, HTTP
    python benchmarks/serve_throughput.py --data-dir D   # reuse the 4 jobs an earlier run trained in D
    python benchmarks/serve_throughput.py --via engine --random-adapters   # in-process, no training
    python benchmarks/serve_throughput.py --quick    # 8 x 16 tokens, 4 concurrent, in-process, random adapters

Both sides use the engine's thread policy (`openft.cpu_threads.ThreadPolicy`: the cores other
processes leave idle), so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
REVIEWS = REPO.parent / "shared" / "data" / "sentiment" / "reviews.csv"
TOPICS = ["a lighthouse keeper", "the history of bread", "a robot learning to paint", "volcanoes", "a city at night",
          "the first day of school", "an old map", "honeybees", "a long train journey", "the moon landing",
          "a chess tournament", "rain in the forest", "a lost umbrella", "the invention of paper", "a mountain village",
          "a jazz musician"]
STYLES = ["You are a concise, precise assistant.", "You answer like a pirate.", "You answer formally.",
          "You answer with enthusiasm.", "You answer like a poet."]


@dataclass
class Stat:
    submit: float
    first: float
    last: float
    tokens: int

    @property
    def ttft(self) -> float:
        return self.first - self.submit

    @property
    def tpot(self) -> float:
        return (self.last - self.first) / max(1, self.tokens - 1)


def requests_plan(n: int, models: list[str]) -> list[tuple[str, list[dict]]]:
    out = []
    for i in range(n):
        model = models[i % len(models)]
        msgs = [{"role": "system", "content": STYLES[i % len(STYLES)]},
                {"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}."}]
        out.append((model, msgs))
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def summarize(stats: list[Stat], wall: float) -> dict:
    return {"tok_s": sum(s.tokens for s in stats) / wall, "tokens": sum(s.tokens for s in stats), "wall_s": wall,
            "ttft_p50": pct([s.ttft for s in stats], 0.5), "ttft_p95": pct([s.ttft for s in stats], 0.95),
            "tpot_p50": pct([s.tpot for s in stats], 0.5), "tpot_p95": pct([s.tpot for s in stats], 0.95)}


# ---- adapters -------------------------------------------------------------------------------
def write_datasets(folder: Path, k: int, n: int = 16) -> list[Path]:
    rows = list(csv.DictReader(open(REVIEWS)))
    files = []
    for j in range(k):
        f = folder / f"train{j}.jsonl"
        with open(f, "w") as fh:
            for r in rows[j * n:(j + 1) * n]:
                fh.write(json.dumps({"messages": [
                    {"role": "system", "content": f"Classify the review (variant {j})."},
                    {"role": "user", "content": r["review"]},
                    {"role": "assistant", "content": r["sentiment"]}]}) + "\n")
        files.append(f)
    return files


def train_inprocess(settings, base: str, files: list[Path], out: Path) -> list[str]:
    from openft.train.hooks import RecordingHooks
    from openft.train.loop import train
    from openft.train.spec import TrainSpec

    dirs = []
    for j, f in enumerate(files):
        spec = TrainSpec(base_model=base, train_file=str(f), output_dir=str(out / f"job{j}"), n_epochs=1,
                         batch_size=4, learning_rate_multiplier=2.0, seed=j, lora_r=8, lora_alpha=16)
        t = time.time()
        res = train(spec, RecordingHooks(), settings)
        print(f"  trained adapter {j} in {time.time() - t:.0f}s: {res.model_dir}", flush=True)
        dirs.append(res.model_dir)
    return dirs


def random_adapters(base_dir: str, out: Path, k: int) -> list[str]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dirs = []
    for j in range(k):
        torch.manual_seed(j)
        m = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        cfg = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
        pm = get_peft_model(m, cfg)
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.01)
        pm.save_pretrained(str(out / f"rand{j}"))
        dirs.append(str(out / f"rand{j}"))
    return dirs


# ---- the engine: in-process or through HTTP ---------------------------------------------------
async def run_engine(engine, base: str, adapters: dict[str, str], plan, max_tokens: int, conc: int) -> tuple[list[Stat], float]:
    from openft.serve.types import Delta, GenerationRequest, SamplingParams, Usage

    sem = asyncio.Semaphore(conc)

    async def one(i, model, msgs):
        async with sem:
            req = GenerationRequest(base_model=base, adapter_path=adapters.get(model), adapter_key=model,
                                    full_model_path=None, messages=msgs, prompt=None,
                                    params=SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=i))
            t0, first, n = time.perf_counter(), None, 0
            async for it in engine.generate(req):
                if isinstance(it, Delta) and it.text and first is None:
                    first = time.perf_counter()
                if isinstance(it, Usage):
                    n = it.completion_tokens
            return Stat(t0, first or time.perf_counter(), time.perf_counter(), n)

    t = time.perf_counter()
    stats = await asyncio.gather(*[one(i, m, msgs) for i, (m, msgs) in enumerate(plan)])
    return list(stats), time.perf_counter() - t


async def run_http(base_url: str, key: str, plan, max_tokens: int, conc: int) -> tuple[list[Stat], float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=600)
    sem = asyncio.Semaphore(conc)

    async def one(i, model, msgs):
        async with sem:
            t0, first, n = time.perf_counter(), None, 0
            stream = await client.chat.completions.create(model=model, messages=msgs, max_tokens=max_tokens,
                                                          temperature=0.7, seed=i, stream=True,
                                                          stream_options={"include_usage": True})
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content and first is None:
                    first = time.perf_counter()
                if chunk.usage:
                    n = chunk.usage.completion_tokens
            return Stat(t0, first or time.perf_counter(), time.perf_counter(), n)

    t = time.perf_counter()
    stats = await asyncio.gather(*[one(i, m, msgs) for i, (m, msgs) in enumerate(plan)])
    await client.close()
    return list(stats), time.perf_counter() - t


class Server:
    def __init__(self, data_dir: Path, cache: str | None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.key = "sk-openft-bench"
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = {**os.environ, "OPENFT_DATA_DIR": str(data_dir), "OPENFT_API_KEY": self.key}
        if cache:
            env["OPENFT_MODEL_CACHE_DIR"] = cache
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(data_dir.parent / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "openft", "serve", "--host", "127.0.0.1", "--port",
                                      str(self.port)], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        import httpx

        for _ in range(600):
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited; see {self.log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def train_via_api(server: Server, base: str, files: list[Path]) -> list[tuple[str, str]]:
    """Fine-tuning jobs through the API; returns (ft model id, adapter folder)."""
    from openai import OpenAI

    client = OpenAI(base_url=server.url, api_key=server.key, max_retries=0, timeout=120)
    have = {m.id.split(":")[3]: m.id for m in client.models.list() if m.id.startswith("ft:") and m.id.count(":") == 4}
    if all(f"bench{j}" in have for j in range(len(files))):  # --data-dir of an earlier run: reuse its jobs
        return [have[f"bench{j}"] for j in range(len(files))]
    jobs = []
    for j, f in enumerate(files):
        up = client.files.create(file=open(f, "rb"), purpose="fine-tune")
        jobs.append(client.fine_tuning.jobs.create(
            training_file=up.id, model=base, suffix=f"bench{j}", seed=j,
            method={"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 2.0}}}))
    t, done = time.time(), {}
    while len(done) < len(jobs):
        for job in jobs:
            if job.id in done:
                continue
            cur = client.fine_tuning.jobs.retrieve(job.id)
            if cur.status == "succeeded":
                done[job.id] = cur.fine_tuned_model
                print(f"  job {job.id} -> {cur.fine_tuned_model} after {time.time() - t:.0f}s", flush=True)
            elif cur.status in ("failed", "cancelled"):
                raise SystemExit(f"job {job.id} {cur.status}: {cur.error}")
        time.sleep(2)
    return [done[j.id] for j in jobs]


# ---- the naive way ----------------------------------------------------------------------------
def run_sequential(base_dir: str, adapters: dict[str, str], plan, max_tokens: int, dtype,
                   device: str = "cpu") -> tuple[list[Stat], float]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    names = {}
    for j, (mid, path) in enumerate(adapters.items()):
        name = f"a{j}"
        model = PeftModel.from_pretrained(model, path, adapter_name=name) if j == 0 else model
        if j:
            model.load_adapter(path, adapter_name=name)
        names[mid] = name
    model.to(device).eval()

    class Times(BaseStreamer):
        def __init__(self):
            self.times, self.calls = [], 0

        def put(self, value):
            self.calls += 1
            if self.calls > 1:  # the first put is the prompt
                self.times.append(time.perf_counter())

        def end(self):
            pass

    from openft.cpu_threads import ThreadPolicy

    threads = ThreadPolicy()  # the engine's own policy, so that both get the same cores
    stats, t = [], time.perf_counter()
    for i, (mid, msgs) in enumerate(plan):
        threads.retune()
        t0 = time.perf_counter()
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True).to(device)
        torch.manual_seed(i)
        streamer = Times()
        kwargs = dict(max_new_tokens=max_tokens, do_sample=True, temperature=0.7, top_p=1.0, streamer=streamer,
                      pad_token_id=tok.pad_token_id)
        with torch.inference_mode():
            if mid in names:
                model.set_adapter(names[mid])
                model.generate(**ids, **kwargs)
            else:
                with model.disable_adapter():
                    model.generate(**ids, **kwargs)
        stats.append(Stat(t0, streamer.times[0], streamer.times[-1], len(streamer.times)))
    return stats, time.perf_counter() - t


# ---- main -------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="smollm2-135m-instruct")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--via", choices=["http", "engine"], default="http")
    ap.add_argument("--random-adapters", action="store_true", help="peft adapters with random weights, no training")
    ap.add_argument("--dtype", default="auto", help="engine dtype in-process (auto|float32|bfloat16)")
    ap.add_argument("--baseline-dtype", default="float32", help="dtype of the naive transformers baseline")
    ap.add_argument("--model-cache", default=os.environ.get("OPENFT_MODEL_CACHE_DIR"))
    ap.add_argument("--data-dir", help="server data folder to use (and reuse the adapters an earlier run trained)")
    ap.add_argument("--quick", action="store_true", help="8 requests x 16 tokens, 4 concurrent, random adapters")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.max_tokens, args.concurrency, args.random_adapters, args.via = 8, 16, 4, True, "engine"

    import torch

    from openft.config import Settings
    from openft.models import materialize

    work = Path(tempfile.mkdtemp(prefix="openft-bench-"))
    data_dir = Path(args.data_dir).resolve() if args.data_dir else work / "data"
    settings = Settings(data_dir=data_dir, model_cache_dir=args.model_cache)
    base_dir = materialize(settings, args.base)
    print(f"base {args.base} ({base_dir}); work dir {work}; torch threads {torch.get_num_threads()}", flush=True)

    server = Server(data_dir, args.model_cache) if args.via == "http" else None
    try:
        t = time.time()
        if args.random_adapters:
            dirs = random_adapters(base_dir, work / "adapters", 4)
            if server:
                raise SystemExit("--random-adapters works with --via engine only (HTTP models come from jobs)")
            model_ids = [f"rand{j}" for j in range(4)]
        elif server:
            model_ids = train_via_api(server, args.base, write_datasets(work, 4))
            dirs = [_adapter_dir(data_dir, m) for m in model_ids]
        else:
            dirs = train_inprocess(settings, args.base, write_datasets(work, 4), work / "jobs")
            model_ids = [f"ft{j}" for j in range(4)]
        print(f"adapters ready in {time.time() - t:.0f}s", flush=True)
        adapters = dict(zip(model_ids, dirs))
        plan = requests_plan(args.requests, model_ids + [args.base])

        if server:
            asyncio.run(run_http(server.url, server.key, plan[:2], 4, 2))  # warm-up: loads base + adapters
            eng_stats, eng_wall = asyncio.run(run_http(server.url, server.key, plan, args.max_tokens, args.concurrency))

            def alone(m):
                return asyncio.run(run_http(server.url, server.key, [(m, plan[0][1])], args.max_tokens, 1))[0][0]
        else:
            from openft.serve.engine import Engine

            engine = Engine(settings, dtype=args.dtype)
            asyncio.run(run_engine(engine, args.base, adapters, plan[:5], 4, 5))
            eng_stats, eng_wall = asyncio.run(run_engine(engine, args.base, adapters, plan, args.max_tokens,
                                                         args.concurrency))

            def alone(m):
                return asyncio.run(run_engine(engine, args.base, adapters, [(m, plan[0][1])], args.max_tokens, 1))[0][0]
        base_t = statistics.median(alone(args.base).tpot for _ in range(3))
        adapter_t = statistics.median(alone(model_ids[0]).tpot for _ in range(3))
        if not server:
            engine.close()
    finally:
        if server:
            server.stop()

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.baseline_dtype]
    run_sequential(base_dir, adapters, plan[:1], 4, dtype)  # warm-up
    seq_stats, seq_wall = run_sequential(base_dir, adapters, plan, args.max_tokens, dtype)

    eng, seq = summarize(eng_stats, eng_wall), summarize(seq_stats, seq_wall)
    label = f"engine ({args.via}, {args.concurrency} concurrent)"
    print(f"\n{args.requests} requests x {args.max_tokens} tokens, 4 adapters + base, {args.base}")
    print(f"| {'':34} | tokens/s | TTFT p50 | TTFT p95 | per-token p50 | per-token p95 |")
    print(f"|{'-' * 36}|---------:|---------:|---------:|--------------:|--------------:|")
    for name, s in ((label, eng), (f"sequential transformers ({args.baseline_dtype})", seq)):
        print(f"| {name:34} | {s['tok_s']:8.1f} | {s['ttft_p50']:7.2f}s | {s['ttft_p95']:7.2f}s | "
              f"{s['tpot_p50'] * 1e3:11.0f}ms | {s['tpot_p95'] * 1e3:11.0f}ms |")
    print(f"alone: base {base_t * 1e3:.1f} ms/token, adapter {adapter_t * 1e3:.1f} ms/token")
    print(f"ratio_vs_sequential={eng['tok_s'] / seq['tok_s']:.2f} adapter_overhead={adapter_t / base_t:.2f}")


def _adapter_dir(data_dir: Path, model_id: str) -> str:
    """The adapter folder of a fine-tuned model, from the server's database (for the naive baseline)."""
    import sqlalchemy as sa

    from openft.config import Settings
    from openft.store.db import make_engine
    from openft.store.resolve import resolve_model

    settings = Settings(data_dir=data_dir)
    engine = make_engine(settings.resolved_database_url())
    with engine.connect() as conn:
        project = conn.execute(sa.text("SELECT project_id FROM models WHERE id = :id"), {"id": model_id}).scalar()
        return resolve_model(settings, conn, project, model_id).adapter_path


if __name__ == "__main__":
    main()
