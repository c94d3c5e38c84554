"""Training on a busy machine: seconds per optimizer step of one SFT and one DPO job, on the idle
machine and beside a CPU-bound neighbour, with torch's default threads (before) and openft's
thread policy (after: openft.cpu_threads, one thread per core other processes leave idle,
re-decided between steps).

The neighbour is what `openft serve` runs beside its jobs: openft's serving engine, in another
process, keeping `--chats` (8) chats of `--max-tokens` (64) on the same base model in flight
(a new one as each ends) for as long as the busy runs last; the engine adapts its own threads (its
default, OPENFT_SERVE_THREADS=0). Each job runs in its own process (this script with --child),
the trainer's threads set by OPENFT_TRAIN_THREADS: `default` (torch's: one per core) or `auto`.

Jobs (LoRA r=16 alpha=32 all-linear, 1 epoch, the sentiment reviews of
../shared/data/sentiment/reviews.csv as in benchmarks/train_throughput.py and dpo_throughput.py):
SFT `--sft-examples` (120) chats in batches of `--sft-batch` (4), and DPO `--dpo-pairs` (30)
preference pairs in batches of 1 (what "auto" picks for a few hundred pairs). s/step = the mean
wall time of the steps after the first (the first selects kernels and warms the allocator), from
the trainer's progress hooks; the DPO reference pass before training is not a step.

    HF_HUB_OFFLINE=1 python benchmarks/busy_training.py            # full: on the idle machine only
    HF_HUB_OFFLINE=1 python benchmarks/busy_training.py --quick    # 4 steps each, smoke run
    HF_HUB_OFFLINE=1 python benchmarks/busy_training.py --quick --base openft-tiny   # seconds

Prints one table; the last line is `busy_training sft_busy_speedup=<x> dpo_busy_speedup=<y>`
(default s/step over auto s/step, beside the neighbour).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_line  # noqa: E402  (benchmarks/machine.py)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASE = "smollm2-135m-instruct"
POLICIES = ("default", "auto")
LORA_R, LORA_ALPHA = 16, 32


def settings(tmp: Path, **kw):
    from train_throughput import settings as bench_settings

    s = bench_settings(tmp)
    return s.model_copy(update=kw) if kw else s


# --- one job in this process ----------------------------------------------------------------------

def run_job(kind: str, policy: str, data: Path, base: str, batch: int, out: Path) -> None:
    import torch

    from openft.train.hooks import RecordingHooks
    from openft.train.loop import train
    from openft.train.spec import TrainSpec

    class Timed(RecordingHooks):
        def __init__(self):
            super().__init__()
            self.ends: list[float] = []     # perf_counter() at each step's progress report
            self.threads: list[int] = []    # torch's intra-op threads during each step

        def on_metrics(self, metrics):
            super().on_metrics(metrics)
            self.threads.append(torch.get_num_threads())

        def on_progress(self, *a):
            super().on_progress(*a)
            self.ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        spec = TrainSpec(base_model=base, train_file=str(data), output_dir=str(tmp / "job"), n_epochs=1,
                         batch_size=batch, lora_r=LORA_R, lora_alpha=LORA_ALPHA, keep_checkpoints=1, seed=42,
                         objective=kind)
        hooks = Timed()
        t0 = time.perf_counter()
        train(spec, hooks, settings(tmp, train_threads=policy))
        wall = time.perf_counter() - t0
    steps = [b - a for a, b in zip(hooks.ends, hooks.ends[1:])]
    out.write_text(json.dumps({"s_per_step": statistics.fmean(steps) if steps else float("nan"), "steps": len(hooks.ends),
                               "threads": sorted(set(hooks.threads)), "wall_s": wall}))


# --- the neighbour: the serving engine answering chats, in its own process -------------------------

def run_neighbour(base: str, chats: int, max_tokens: int, folder: Path) -> None:
    """Keep `chats` chats in flight (a new one as each ends) until folder/stop exists; after each
    chat, folder/served.json holds the tokens generated so far and when."""
    from serve_throughput import requests_plan

    from openft.serve.engine import Engine
    from openft.serve.types import GenerationRequest, SamplingParams, Usage

    plan = requests_plan(64, [base])
    served = {"tokens": 0}

    async def chat(engine, k: int) -> int:
        req = GenerationRequest(base_model=base, adapter_key=base, messages=plan[k % len(plan)][1],
                                params=SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=k))
        n = 0
        async for it in engine.generate(req):
            if isinstance(it, Usage):
                n = it.completion_tokens
        return n

    async def lane(engine, i: int) -> None:
        k = i
        while not (folder / "stop").exists():
            served["tokens"] += await chat(engine, k)
            k += chats
            tmp = folder / f"served-{i}.tmp"
            tmp.write_text(json.dumps({"tokens": served["tokens"], "at": time.time()}))
            os.replace(tmp, folder / "served.json")

    async def main(engine) -> None:
        await asyncio.gather(*[chat(engine, k) for k in range(2)])  # warm-up: loads the model
        (folder / "ready").touch()
        await asyncio.gather(*[lane(engine, i) for i in range(chats)])

    with tempfile.TemporaryDirectory() as d:
        engine = Engine(settings(Path(d)))
        try:
            asyncio.run(main(engine))
        finally:
            engine.close()


class Neighbour:
    def __init__(self, a: argparse.Namespace, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, sys.argv[0], "--neighbour", str(folder), "--base", a.base,
                                      "--chats", str(a.chats), "--max-tokens", str(a.max_tokens)])
        t = time.time()
        while not (folder / "ready").exists():  # a benchmark may poll: it waits for a model to load
            if self.proc.poll() is not None or time.time() - t > 900:
                raise SystemExit("the neighbour (serving engine) did not start")
            time.sleep(0.5)

    def served(self) -> tuple[int, float]:
        """(tokens generated so far, when); (0, now) before its first round ends."""
        try:
            r = json.loads((self.folder / "served.json").read_text())
            return r["tokens"], r["at"]
        except (OSError, ValueError):
            return 0, time.time()

    def stop(self) -> None:
        (self.folder / "stop").touch()
        try:
            self.proc.wait(300)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- the comparison -------------------------------------------------------------------------------

def job(a: argparse.Namespace, kind: str, policy: str, data: Path, batch: int, tmp: Path,
        neighbour: Neighbour | None) -> dict:
    out = tmp / f"{kind}-{policy}-{'busy' if neighbour else 'idle'}-{time.time_ns()}.json"
    where = "beside the neighbour" if neighbour else "idle"
    print(f"running {kind} ({where}, OPENFT_TRAIN_THREADS={policy}) ...", file=sys.stderr, flush=True)
    before = neighbour.served() if neighbour else None
    env = {**os.environ, "OPENFT_TRAIN_THREADS": policy}
    subprocess.run([sys.executable, sys.argv[0], "--child", kind, "--policy", policy, "--data", str(data),
                    "--batch", str(batch), "--base", a.base, "--out", str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    res = json.loads(out.read_text())
    if neighbour:
        after = neighbour.served()
        res["neighbour_tok_s"] = (after[0] - before[0]) / max(1e-9, after[1] - before[1])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=BASE, help=f"base model of the jobs and the neighbour (default {BASE})")
    ap.add_argument("--sft-examples", type=int, default=120)
    ap.add_argument("--sft-batch", type=int, default=4)
    ap.add_argument("--dpo-pairs", type=int, default=30, help="DPO pairs, one per step")
    ap.add_argument("--chats", type=int, default=8, help="the neighbour's concurrent chats")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per chat answer")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each cell; the median is printed")
    ap.add_argument("--only", default="sft,dpo", help="comma-separated subset of sft,dpo")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 steps per job")
    for hidden in ("--child", "--policy", "--data", "--out", "--neighbour"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return run_job(a.child, a.policy, Path(a.data), a.base, a.batch, Path(a.out))
    if a.neighbour:
        return run_neighbour(a.base, a.chats, a.max_tokens, Path(a.neighbour))
    if a.quick:
        a.sft_examples, a.sft_batch, a.dpo_pairs, a.chats, a.max_tokens = 8, 2, 4, 4, 16

    from dpo_throughput import write_pairs
    from train_throughput import read_reviews, write_chat_jsonl

    kinds = a.only.split(",")
    load_start = os.getloadavg()[0]
    results: dict[tuple[str, str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        reviews = read_reviews()
        data = {"sft": (write_chat_jsonl(reviews[:a.sft_examples], tmp / "sft.jsonl"), a.sft_batch),
                "dpo": (write_pairs(reviews[:a.dpo_pairs], tmp / "dpo.jsonl"), 1)}
        for _ in range(a.repeats):  # idle first, then everything beside one neighbour; policies interleaved
            for kind in kinds:
                for policy in POLICIES:
                    results.setdefault((kind, "idle", policy), []).append(job(a, kind, policy, *data[kind], tmp, None))
        neighbour = Neighbour(a, tmp / "neighbour")
        try:
            for _ in range(a.repeats):
                for kind in kinds:
                    for policy in POLICIES:
                        results.setdefault((kind, "busy", policy), []).append(
                            job(a, kind, policy, *data[kind], tmp, neighbour))
        finally:
            neighbour.stop()

    def med(kind, where, policy, key):
        runs = results[(kind, where, policy)]
        return statistics.median(r[key] for r in runs)

    def threads(kind, where, policy):
        used = sorted({t for r in results[(kind, where, policy)] for t in r["threads"]})
        return ",".join(map(str, used))

    print(f"\nCPU: {cpu_line()}; load average (1 min) {load_start:.1f} at the start (the idle runs need ~0), "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"base {a.base}; SFT {a.sft_examples} examples, batch {a.sft_batch}; DPO {a.dpo_pairs} pairs, batch 1; "
          f"LoRA r={LORA_R} alpha={LORA_ALPHA} all-linear, 1 epoch; neighbour: openft's serving engine in another "
          f"process, {a.chats} concurrent chats x {a.max_tokens} tokens; median of {a.repeats} run(s)")
    print(f"| {'job':<4}| {'machine':<16}| {'before: default s/step':>22} | {'after: auto s/step':>18} | "
          f"{'before/after':>12} | {'threads before / after':>22} | {'neighbour tok/s before / after':>30} |")
    print("|" + "|".join("-" * w for w in (5, 17, 24, 20, 14, 24, 32)) + "|")
    speedups = {}
    for kind in kinds:
        for where in ("idle", "busy"):
            b, f = med(kind, where, "default", "s_per_step"), med(kind, where, "auto", "s_per_step")
            if where == "busy":
                speedups[kind] = b / f
            tok = (f"{med(kind, where, 'default', 'neighbour_tok_s'):.1f} / {med(kind, where, 'auto', 'neighbour_tok_s'):.1f}"
                   if where == "busy" else "-")
            label = "idle" if where == "idle" else "beside neighbour"
            print(f"| {kind:<4}| {label:<16}| {b:>22.3f} | {f:>18.3f} | {b / f:>12.2f} | "
                  f"{threads(kind, where, 'default') + ' / ' + threads(kind, where, 'auto'):>22} | {tok:>30} |")
    print("s/step = mean wall time of the steps after the first, from the trainer's progress hooks (the DPO reference\n"
          "pass is not a step); threads = torch's intra-op threads seen during the steps; neighbour tok/s = tokens the\n"
          "engine generated while the job ran")
    print("busy_training " + " ".join(f"{k}_busy_speedup={v:.2f}" for k, v in speedups.items()))


if __name__ == "__main__":
    main()
