"""One benchmark for both devices: training (openft vs TRL's two configurations) and serving.

The workload of issue 14: on CUDA, a model of SmolLM2-1.7B's shape (hidden 2048, 24 layers, 32
heads, vocabulary 49,152) with random weights built from a config (speed does not depend on the
values) and SmolLM2's tokenizer; the AR-LSAT and ConjNLI examples of ../shared/data as chat (the
evals format converted by openft.data.convert); LoRA r=16, alpha 32, all linear layers; 8
examples per step; 1 epoch; bf16. On CPU (no CUDA): the real smollm2-135m-instruct on fewer
examples, or with --quick a scaled-down shape of the same vocabulary on a handful.

The 680 examples are shuffled once (seed 0); the first ones are held out (68 on CUDA), never
trained on, and score every trainer's final adapter (openft's mask: assistant message and its
end-of-turn token, fp32); the rest are trained on (612 on CUDA; `--held-out 0` trains on all 680,
the issue's exact workload, with no held-out loss).

Training: each trainer in its own process (train_throughput.py's runners: same LoRA init, same
batches in the same order per seed, same trained tokens; TRL reads the rows in openft's order):
openft (openft.train.loop.train), TRL SFTTrainer with its defaults (activation checkpointing on)
and TRL with padding_free and no activation checkpointing. Printed: tokens/s in the loop, wall s
(load, tokenize, train, save), peak memory (torch.cuda.max_memory_allocated on CUDA, peak RSS
on CPU), final train loss (mean of the last 5 steps) and held-out loss, per seed.

Serving, in a process of its own: a server (openft.api.server.ServerThread, embedded worker)
trains one small job on the base (checkpoint every step) whose first checkpoint and final model
are two different adapters; then the in-process engine (openft.serve.backend.open_engine) and the
HTTP API (official openai SDK, streaming) each serve 1 stream, 32 concurrent requests of 64 new
tokens alternating the two adapters, and the same 32 on the base model (adapter overhead = base
tokens/s over two-adapter tokens/s); next to sequential transformers `generate` on the same
two-adapter requests (the first --seq-requests of them: its rate does not depend on how many).

    python benchmarks/gpu.py            # CUDA: the full workload; CPU: smollm2-135m, 96 + 16 examples
    python benchmarks/gpu.py --quick    # smoke run: CUDA 96 + 16 examples; CPU a small shape, 16 + 8
    python benchmarks/gpu.py --only openft,trl_best --seeds 42,1 --no-serve

Ends with one line: `device=<cuda|cpu> ratio_vs_trl_fast=<x> memory_vs_trl_default=<y>
serve_tok_s_1=<z> serve_tok_s_32=<w>` (openft's loop tokens/s over TRL fast's; openft's peak
memory over TRL default's; HTTP tokens/s of one stream and of 32 concurrent two-adapter requests).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import serve_throughput as st  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
import train_throughput as tt  # noqa: E402
from machine import cpu_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OPENFT_BENCH_DATA", REPO.parent / "shared" / "data"))  # scripts/device_check.sh sets it
SOURCES = [DATA / name / "examples.jsonl" for name in ("ar_lsat", "conjnli")]
TRAINERS = ("openft", "openft_ckpt", "trl_default", "trl_best")
LABEL = {"openft": "openft", "openft_ckpt": "openft, act. ckpt forced", "trl_default": "TRL defaults (act. ckpt)",
         "trl_best": "TRL padding_free, no ckpt"}
KEY = "sk-openft-bench-gpu"
# Shapes built from a config with random weights (SmolLM2's Llama layout and tokenizer)
SHAPES = {
    "smollm2-1.7b-shape": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                               num_key_value_heads=32, max_position_embeddings=8192, rope_theta=130000.0),
    "smollm2-small-shape": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                                num_key_value_heads=4, max_position_embeddings=2048),
}


def cache_dir() -> str:
    return os.environ.get("OPENFT_MODEL_CACHE_DIR", str(REPO / ".cache" / "test-models"))


def tokenizer_dir() -> str:
    """SmolLM2's tokenizer: the folder of openft-tiny (built with the tokenizer of the default
    model, smollm2-135m-instruct); it is in the model cache that scripts/device_check.sh carries."""
    from openft.models import materialize

    return materialize(tt.settings(Path(tempfile.gettempdir())), "openft-tiny")


def build_shape(name: str) -> str:
    """A folder with `name`'s shape, random weights (seed 0, bf16) and SmolLM2's tokenizer; built once,
    in $OPENFT_BENCH_MODELS (default: the model cache)."""
    out = Path(os.environ.get("OPENFT_BENCH_MODELS", cache_dir())) / f"bench-{name}"
    if (out / "model.safetensors.index.json").exists() or (out / "model.safetensors").exists():
        return str(out)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok_dir = tokenizer_dir()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = AutoConfig.from_pretrained(tok_dir)
    shape = dict(SHAPES[name])
    theta = shape.pop("rope_theta", None)
    for k, v in {**shape, "vocab_size": len(tok), "tie_word_embeddings": True}.items():
        setattr(cfg, k, v)
    cfg.head_dim = cfg.hidden_size // cfg.num_attention_heads
    if theta is not None:  # transformers 5 keeps it in rope_parameters, 4.x as an attribute
        if isinstance(getattr(cfg, "rope_parameters", None), dict):
            cfg.rope_parameters["rope_theta"] = theta
        else:
            cfg.rope_theta = theta
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    os.replace(tmp, out)
    return str(out)


def write_data(tmp: Path, n_train: int, n_held: int) -> tuple[Path, Path]:
    """The evals-format sources as chat JSONL, shuffled with seed 0: held-out first, then training."""
    from openft.data.convert import convert_file

    lines = []
    for src in SOURCES:
        convert_file(src, tmp / f"{src.parent.name}.jsonl")
        lines += (tmp / f"{src.parent.name}.jsonl").read_text().splitlines()
    random.Random(0).shuffle(lines)
    held, train = lines[:n_held], lines[n_held:n_held + n_train]
    (tmp / "train.jsonl").write_text("\n".join(train) + "\n")
    (tmp / "held_out.jsonl").write_text("\n".join(held) + "\n")
    return tmp / "train.jsonl", tmp / "held_out.jsonl"


def peak_mib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else tt.peak_rss_mib()


# ---- children ----------------------------------------------------------------------------------

def train_child(name: str, base: str, base_dir: str | None, data: Path, held_out: Path | None, seed: int,
                out: Path) -> None:
    from openft.models import register_local

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if base_dir:
            register_local(tt.settings(tmp), base, base_dir)
        res = (tt.run_openft(data, tmp, seed, base, True if name == "openft_ckpt" else "auto")
               if name.startswith("openft")
               else tt.run_trl(data, tmp, seed, best=name == "trl_best", base=base))
        res["peak_mib"] = peak_mib()
        adapter = res.pop("adapter")
        res["eval_loss"] = tt.held_out_loss(adapter, held_out, tmp, base) if held_out else float("nan")
    out.write_text(json.dumps(res))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_child(base: str, base_dir: str | None, data: Path, out: Path, n_conc: int, max_tokens: int,
                n_seq: int) -> None:
    import torch
    from openai import OpenAI

    from openft.api.server import ServerThread
    from openft.config import Settings
    from openft.models import materialize, register_local
    from openft.serve.backend import open_engine

    cuda = torch.cuda.is_available()
    res: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        s = Settings(data_dir=tmp / "data", model_cache_dir=cache_dir(), api_key=KEY, host="127.0.0.1",
                     port=free_port(), worker_poll_seconds=0.2, serve_max_batch=max(16, n_conc))
        if base_dir:
            s.ensure_dirs()
            register_local(s, base, base_dir)
        with ServerThread(s) as srv:
            client = OpenAI(base_url=srv.base_url, api_key=KEY, max_retries=0, timeout=600)
            t = time.perf_counter()
            a1, a2 = train_two_adapters(client, base, data, tmp)
            res["adapters_s"] = time.perf_counter() - t
            final_dir = st._adapter_dir(s.data_dir, a2)
            adapters = {a1: str(Path(final_dir).parent / "checkpoints" / "step-1"), a2: final_dir}
            two = st.requests_plan(n_conc, [a1, a2])
            plain = st.requests_plan(n_conc, [base])

            engine = open_engine(s)

            def run(plan, conc, toks=max_tokens, engine=engine):
                return asyncio.run(st.run_engine(engine, base, adapters, plan, toks, conc))

            print("in-process engine:", flush=True)
            res["engine"] = measure(run, two, plain)
            engine.close()
            del engine, run
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()

            run = lambda plan, conc, toks=max_tokens: asyncio.run(  # noqa: E731
                st.run_http(srv.base_url, KEY, plan, toks, conc))
            print("HTTP API:", flush=True)
            res["http"] = measure(run, two, plain)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        dtype = torch.bfloat16 if cuda else torch.float32
        seq_dir = materialize(s, base)
        st.run_sequential(seq_dir, adapters, two[:1], 4, dtype, "cuda" if cuda else "cpu")  # warm-up
        stats, wall = st.run_sequential(seq_dir, adapters, two[:n_seq], max_tokens, dtype, "cuda" if cuda else "cpu")
        res["sequential"] = st.summarize(stats, wall)
    out.write_text(json.dumps(res))


def train_two_adapters(client, base: str, data: Path, tmp: Path) -> tuple[str, str]:
    """One fine-tuning job through the API, 12 examples, 2 steps, a checkpoint each step: its first
    checkpoint and its final model are two different adapters. Returns (checkpoint id, model id)."""
    f = tmp / "adapters.jsonl"
    f.write_text("".join(data.read_text().splitlines(keepends=True)[:12]))
    up = client.files.create(file=f.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=up.id, model=base, suffix="bench", seed=7, method={
        "type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 6, "learning_rate_multiplier": 2.0, "checkpoint_every_steps": 1}}})
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    if job.status != "succeeded":
        raise SystemExit(f"the adapters' job {job.id} {job.status}: {job.error}")
    ckpts = {c.step_number: c.fine_tuned_model_checkpoint for c in client.fine_tuning.jobs.checkpoints.list(job.id)}
    return ckpts[min(ckpts)], job.fine_tuned_model


def measure(run, two: list, plain: list) -> dict:
    """Warm up (every batch size that follows), then: 1 stream, N concurrent two-adapter, N base."""
    run(two, len(two), 8)
    run(plain, len(plain), 8)
    run(two[:1], 1, 8)
    out = {}
    for key, plan in (("one", two[:1]), ("two_adapters", two), ("base", plain)):
        stats, wall = run(plan, len(plan))
        out[key] = st.summarize(stats, wall)
        print(f"  {key}: {out[key]['tok_s']:.1f} tokens/s", flush=True)
    return out


# ---- the parent -------------------------------------------------------------------------------

def child_cmd(*args) -> list[str]:
    return [sys.executable, __file__, *map(str, args)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run of a few minutes")
    ap.add_argument("--train", type=int, help="training examples (default: CUDA 612, CPU 96; quick 96 / 16)")
    ap.add_argument("--held-out", type=int, help="held-out examples (default: CUDA 68, CPU 16; quick 16 / 8)")
    ap.add_argument("--seeds", default="42", help="comma-separated seeds, one paired run each (default 42)")
    ap.add_argument("--only", default=",".join(TRAINERS), help="comma-separated subset of " + ",".join(TRAINERS))
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-serve", action="store_true")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--seq-requests", type=int, help="requests the sequential baseline runs (default 8, quick 4)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    for hidden in ("--base", "--base-dir", "--data", "--held-out-file", "--seed", "--out"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child == "build":
        return print(build_shape(a.base))
    if a.child == "serve":
        return serve_child(a.base, a.base_dir, Path(a.data), Path(a.out), a.concurrency, a.max_tokens,
                           a.seq_requests)
    if a.child:
        return train_child(a.child, a.base, a.base_dir, Path(a.data), Path(a.held_out_file) if a.held_out_file
                           else None, int(a.seed), Path(a.out))

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"
    n_train = a.train or (96 if a.quick else 612) if cuda else a.train or (16 if a.quick else 96)
    n_held = a.held_out if a.held_out is not None else (16 if a.quick else 68) if cuda else (8 if a.quick else 16)
    n_seq = a.seq_requests or (4 if a.quick else 8)
    if cuda or a.quick:
        shape = "smollm2-1.7b-shape" if cuda else "smollm2-small-shape"
        base = f"bench-{shape}"
        t = time.perf_counter()
        base_dir = subprocess.run(child_cmd("--child", "build", "--base", shape), check=True, text=True,
                                  stdout=subprocess.PIPE).stdout.strip().splitlines()[-1]
        print(f"model {shape} (random weights) in {base_dir}, ready in {time.perf_counter() - t:.0f} s", flush=True)
    else:
        base, base_dir = "smollm2-135m-instruct", None
    seeds = [int(x) for x in a.seeds.split(",")]
    names = [] if a.no_train else [n for n in a.only.split(",") if n]
    results: dict[str, list[dict]] = {n: [] for n in names}
    serve: dict | None = None
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data, held = write_data(tmp, n_train, n_held)
        extra = ["--base", base] + (["--base-dir", base_dir] if base_dir else [])
        for seed in seeds:
            for name in names:
                out = tmp / f"{name}-{seed}.json"
                print(f"running {name} on {n_train} examples, seed {seed} ...", flush=True)
                subprocess.run(child_cmd("--child", name, "--data", data, "--seed", seed, "--out", out, *extra,
                                         *(["--held-out-file", held] if n_held else [])),
                               check=True, env=env, stdout=None if name.startswith("openft") else subprocess.DEVNULL)
                r = json.loads(out.read_text())
                results[name].append(r)
                print(f"  {name}: {r['tokens'] / r['loop_s']:.1f} tokens/s in the loop, wall {r['wall_s']:.1f} s, "
                      f"peak {r['peak_mib']:.0f} MiB, final loss {tt.final_loss(r):.4f}, held-out {r['eval_loss']:.4f}",
                      flush=True)
        if not a.no_serve:
            out = tmp / "serve.json"
            print(f"serving: {a.concurrency} x {a.max_tokens} tokens ...", flush=True)
            subprocess.run(child_cmd("--child", "serve", "--data", data, "--out", out, "--concurrency", a.concurrency,
                                     "--max-tokens", a.max_tokens, "--seq-requests", n_seq, *extra),
                           check=True, env=env)
            serve = json.loads(out.read_text())
    machine = f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}; " if cuda else ""
    print(f"\n{machine}{cpu_line()}")
    print(f"base {base}; {n_train} training examples, {n_held} held out; batch {tt.BATCH}, lr {tt.LR}, "
          f"LoRA r={tt.LORA_R} alpha={tt.LORA_ALPHA} all-linear, 1 epoch, seeds {a.seeds}")
    print_training(results, seeds, cuda)
    if serve:
        print_serving(serve, a.concurrency, a.max_tokens, n_seq)
    loop_tps = {n: statistics.fmean(r["tokens"] / r["loop_s"] for r in runs) for n, runs in results.items()}
    peak = {n: max(r["peak_mib"] for r in runs) for n, runs in results.items()}
    nan = float("nan")
    fast = loop_tps["openft"] / loop_tps["trl_best"] if {"openft", "trl_best"} <= set(results) else nan
    mem = peak["openft"] / peak["trl_default"] if {"openft", "trl_default"} <= set(results) else nan
    if {"openft_ckpt", "trl_best", "trl_default"} <= set(results):  # the other side of auto's choice
        print(f"with activation checkpointing forced: ratio_vs_trl_fast={loop_tps['openft_ckpt'] / loop_tps['trl_best']:.2f} "
              f"memory_vs_trl_default={peak['openft_ckpt'] / peak['trl_default']:.2f}")
    s1 = serve["http"]["one"]["tok_s"] if serve else nan
    s32 = serve["http"]["two_adapters"]["tok_s"] if serve else nan
    print(f"device={device} ratio_vs_trl_fast={fast:.2f} memory_vs_trl_default={mem:.2f} "
          f"serve_tok_s_1={s1:.1f} serve_tok_s_32={s32:.1f}")


def print_training(results: dict[str, list[dict]], seeds: list[int], cuda: bool) -> None:
    if not results:
        return
    mem = "peak GPU MiB" if cuda else "peak RSS MiB"
    print(f"| {'trainer':<27}| steps | tokens | tokens/s in loop | wall s | loop s | {mem} | final loss | held-out loss |")
    print("|" + "|".join("-" * w for w in (28, 7, 8, 18, 8, 8, 14, 12, 15)) + "|")
    for name, runs in results.items():
        r0 = runs[0]
        def m(f, runs=runs):
            return statistics.fmean(f(r) for r in runs)

        print(f"| {LABEL[name]:<27}|{r0['steps']:>6} |{r0['tokens']:>7} |{m(lambda r: r['tokens'] / r['loop_s']):>17.1f} |"
              f"{m(lambda r: r['wall_s']):>7.1f} |{m(lambda r: r['loop_s']):>7.1f} |{max(r['peak_mib'] for r in runs):>13.0f} |"
              f"{m(tt.final_loss):>11.4f} |{m(lambda r: r['eval_loss']):>14.4f} |")
    for k, r in enumerate(results.get("openft", [])):
        if r.get("setup"):
            print(f"openft seed {seeds[k]}: {r['setup']}")
    print("tokens/s in loop = tokens of the data / training-loop seconds; wall = load + tokenize + train + save;\n"
          "final loss = the trainer's own, mean of its last 5 steps; held-out loss = each final adapter, one mask, fp32")
    if len(results) > 1:
        print("per seed (final loss / held-out loss): " + "; ".join(
            f"seed {seed}: " + ", ".join(f"{n} {tt.final_loss(results[n][k]):.4f} / {results[n][k]['eval_loss']:.4f}"
                                         for n in results) for k, seed in enumerate(seeds)))


def print_serving(serve: dict, conc: int, max_tokens: int, n_seq: int) -> None:
    print(f"\nserving: {conc} concurrent requests x {max_tokens} new tokens alternating two adapters, "
          f"serve_max_batch={max(16, conc)} (adapters trained by one job through the API in {serve['adapters_s']:.0f} s)")
    print("| path | 1 stream tok/s | per-token ms (1) | 32 two-adapter tok/s | 32 base tok/s | adapter overhead | "
          "TTFT p50 (32) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in ("engine", "http"):
        r = serve[path]
        print(f"| {'in-process engine' if path == 'engine' else 'HTTP API (openai SDK)'} | {r['one']['tok_s']:.1f} | "
              f"{r['one']['tpot_p50'] * 1e3:.1f} | {r['two_adapters']['tok_s']:.1f} | {r['base']['tok_s']:.1f} | "
              f"{r['base']['tok_s'] / r['two_adapters']['tok_s']:.2f}x | {r['two_adapters']['ttft_p50']:.2f} s |")
    q = serve["sequential"]
    print(f"| sequential transformers generate ({n_seq} of the two-adapter requests) | {q['tok_s']:.1f} | "
          f"{q['tpot_p50'] * 1e3:.1f} | - | - | - | - |")
    print(f"HTTP 32 concurrent vs sequential generate: {serve['http']['two_adapters']['tok_s'] / q['tok_s']:.1f}x")


if __name__ == "__main__":
    main()
