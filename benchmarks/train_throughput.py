"""Training throughput and loss: openft vs TRL's SFTTrainer (defaults, and its best CPU configuration).

Same base model (smollm2-135m-instruct), same data (the first N sentiment reviews of
../shared/data/sentiment/reviews.csv as chat JSONL), same LoRA (r=16, alpha=32, all linear
projections, no dropout), same batch (8 examples per optimizer step), learning rate 2e-4,
linear decay, one epoch. Each trainer runs in its own process (so peak RSS is its own) and is
timed end to end: tokenization, model load, training and saving the adapter.

Losses are compared pairwise, per seed: for a given seed every trainer starts from the same
LoRA initialization (PEFT's, drawn after seeding torch) and sees the same batches in the same
order (openft's shuffle for that seed; TRL reads it with `train_sampling_strategy="sequential"`),
and trains the same tokens (the one-word answer and `<|im_end|>`: TRL's completion mask would
also train the newline after `<|im_end|>`, so its labels for that token are set to -100). What
is left to differ is each trainer's own arithmetic. Every final adapter is then scored on
held-out reviews with one mask, in fp32.

    HF_HUB_OFFLINE=1 python benchmarks/train_throughput.py            # 400 examples, seeds 42,1,2
    HF_HUB_OFFLINE=1 python benchmarks/train_throughput.py --quick    # 48 examples, one seed, smoke run

Prints one table; the last line is `ratio_vs_trl_default=<x> ratio_vs_trl_best=<y>`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REVIEWS = REPO.parent / "shared" / "data" / "sentiment" / "reviews.csv"
SYSTEM = "Classify the sentiment of the review. Answer with one word: positive or negative."
BATCH, LR, LORA_R, LORA_ALPHA = 8, 2e-4, 16, 32
BASE = "smollm2-135m-instruct"  # the base model of this benchmark; benchmarks/gpu.py passes its own
N_HELD_OUT = 200  # reviews after the training ones, for the held-out loss


def read_reviews(path: Path = REVIEWS) -> list[tuple[str, str]]:
    with open(path, newline="") as fh:
        return [(r["review"], r["sentiment"]) for r in csv.DictReader(fh)]


def to_chat(review: str, label: str | None = None) -> dict:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": review}]
    if label is not None:
        msgs.append({"role": "assistant", "content": label})
    return {"messages": msgs}


def write_chat_jsonl(rows, path: Path) -> Path:
    with open(path, "w") as fh:
        for review, label in rows:
            fh.write(json.dumps(to_chat(review, label)) + "\n")
    return path


def settings(tmp: Path):
    from openft.config import Settings

    return Settings(data_dir=tmp / "data", model_cache_dir=os.environ.get(
        "OPENFT_MODEL_CACHE_DIR", str(REPO / ".cache" / "test-models")))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the side-by-side harness (also benchmarks/dpo_throughput.py) --------------------------------

def add_run_args(ap: argparse.ArgumentParser, held_out_file: str) -> None:
    """The options every side-by-side run takes (seeds, threads) and the hidden ones its child
    processes get; `held_out_file`: the hidden option naming the held-out data."""
    ap.add_argument("--seeds", default="42,1,2", help="comma-separated seeds, one paired run each (default 42,1,2)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for every trainer (0: torch default)")
    for hidden in ("--child", "--data", held_out_file, "--out"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)


def parse_run_args(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """The parsed options (`seed_list`: the seeds to run, the first only with --quick); offline hub."""
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    a.seed_list = [int(x) for x in a.seeds.split(",")][: 1 if a.quick else None]
    return a


def run_children(a: argparse.Namespace, names: list[str], seeds: list[int], data: Path, held_out_file: str,
                 held_out: Path, tmp: Path, what: str, quiet=lambda name: True) -> dict[str, list[dict]]:
    """Each trainer in `names` once per seed, each in its own process (the running script with
    --child); their results, per name in seed order. `quiet(name)`: hide that child's stdout."""
    results: dict[str, list[dict]] = {name: [] for name in names}
    for seed in seeds:
        for name in names:
            out = tmp / f"{name}-{seed}.json"
            print(f"running {name} on {what}, seed {seed} ...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, sys.argv[0], "--child", name, "--data", str(data), held_out_file,
                            str(held_out), "--seed", str(seed), "--out", str(out), "--threads", str(a.threads)],
                           check=True, stdout=subprocess.DEVNULL if quiet(name) else None)
            results[name].append(json.loads(out.read_text()))
    return results


# --- one trainer per process ---------------------------------------------------------------------

def run_openft(data: Path, tmp: Path, seed: int, base: str = BASE, checkpointing: str | bool = "auto") -> dict:
    """openft's trainer on `data`; `checkpointing`: the spec's activation_checkpointing (auto|true|false)."""
    import peft  # noqa: F401  (imported before the clock starts, as in run_trl)
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    from openft.data.auto import BASE_LEARNING_RATE
    from openft.train.hooks import RecordingHooks
    from openft.train.loop import train
    from openft.train.spec import TrainSpec

    spec = TrainSpec(base_model=base, train_file=str(data), output_dir=str(tmp / "openft"),
                     n_epochs=1, batch_size=BATCH, learning_rate_multiplier=LR / BASE_LEARNING_RATE["lora"],
                     lora_r=LORA_R, lora_alpha=LORA_ALPHA, keep_checkpoints=1, seed=seed,
                     activation_checkpointing=checkpointing)

    class Timed(RecordingHooks):
        def on_event(self, message, level="info"):
            super().on_event(message, level)
            if message.startswith("Training "):
                self.loop_start = time.perf_counter()
            if message.startswith("Setup took "):
                self.setup = message

        def on_progress(self, *a):
            super().on_progress(*a)
            self.loop_end = time.perf_counter()

    hooks = Timed()
    t0 = time.perf_counter()
    result = train(spec, hooks, settings(tmp))
    wall = time.perf_counter() - t0
    losses = [m["train_loss"] for m in hooks.metrics]
    return {"wall_s": wall, "loop_s": hooks.loop_end - hooks.loop_start, "tokens": result.trained_tokens,
            "losses": losses, "steps": result.total_steps, "adapter": result.model_dir,
            "setup": getattr(hooks, "setup", "")}


def run_trl(data: Path, tmp: Path, seed: int, best: bool, base: str = BASE) -> dict:
    """TRL's SFTTrainer on `data`; on CUDA (when present) the weights are bf16 in both configurations."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from openft.models import materialize
    from openft.train.data import epoch_order

    base = materialize(settings(tmp), base)
    cuda = torch.cuda.is_available()
    rows = []
    for line in open(data):  # prompt/completion conversational form: TRL trains the completion only
        m = json.loads(line)["messages"]
        rows.append({"prompt": m[:-1], "completion": m[-1:]})
    rows = [rows[i] for i in epoch_order(len(rows), seed, 0)]  # openft's batches for this seed, in its order
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if best or cuda else torch.float32)
    extra = dict(padding_free=True, max_length=None, gradient_checkpointing=False) if best else {}
    args = SFTConfig(output_dir=str(tmp / ("trl_best" if best else "trl_default")), use_cpu=not cuda,
                     per_device_train_batch_size=BATCH, learning_rate=LR, num_train_epochs=1, logging_steps=1,
                     save_strategy="no", report_to=[], seed=seed, train_sampling_strategy="sequential", **extra)
    peft_config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                             task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config)
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")

    def stop_at_end_of_turn(ex):  # the token after <|im_end|> (a newline) is not an answer token
        lab = ex["labels"]
        return {"labels": [-100 if i and ex["input_ids"][i - 1] == end_of_turn else t for i, t in enumerate(lab)]}

    trainer.train_dataset = trainer.train_dataset.map(stop_at_end_of_turn)
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    trainer.train()
    trainer.save_model(str(tmp / "trl_adapter"))
    wall = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    loop_s = [h["train_runtime"] for h in trainer.state.log_history if "train_runtime" in h][0]
    return {"wall_s": wall, "loop_s": loop_s, "tokens": tokens, "losses": losses, "steps": trainer.state.global_step,
            "adapter": str(tmp / "trl_adapter")}


def held_out_loss(adapter: str, held_out: Path, tmp: Path, base: str = BASE) -> float:
    """Mean token loss of a final adapter on the held-out reviews, with openft's mask (the answer
    and its end-of-turn token), in fp32 (on CUDA when present): the same yardstick for every trainer."""
    import torch
    from transformers import AutoTokenizer

    from openft.models import materialize
    from openft.train.data import load_dataset, pack
    from openft.train.model import build_model, evaluate

    base = materialize(settings(tmp), base)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    examples = load_dataset(AutoTokenizer.from_pretrained(base), held_out, None).examples
    model = build_model(base, method="lora", precision="fp32", device=device, adapter_dir=adapter)
    return evaluate(model, pack(examples, 4096), "fp32", device)[0]


def child(name: str, data: Path, held_out: Path, seed: int, out: Path, threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = run_openft(data, tmp, seed) if name == "openft" else run_trl(data, tmp, seed, best=name == "trl_best")
        res["peak_rss_mib"] = peak_rss_mib()
        res["eval_loss"] = held_out_loss(res.pop("adapter"), held_out, tmp)
    out.write_text(json.dumps(res))


# --- the comparison ------------------------------------------------------------------------------

def bf16_matmul_peak(n: int = 2048, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def lora_flops_per_token() -> float:
    """Forward 2N + backward through activations 2N (frozen weights get no gradient), N = the
    non-embedding weights; LoRA's own matmuls (r=16) add ~2% and are left out."""
    from transformers import AutoConfig

    from openft.models import materialize

    with tempfile.TemporaryDirectory() as d:
        cfg = AutoConfig.from_pretrained(materialize(settings(Path(d)), "smollm2-135m-instruct"))
    h, i, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    n = L * (2 * h * h + 2 * h * kv + 3 * h * i)
    return 4.0 * n


def final_loss(r: dict) -> float:
    """A run's final training loss: the mean of its last 5 steps' losses (one step is 8 examples)."""
    return statistics.fmean(r["losses"][-5:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=400, help="first N reviews (default 400)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 48 examples, the first seed only")
    ap.add_argument("--only", default="openft,trl_default,trl_best", help="comma-separated subset")
    add_run_args(ap, "--held-out")
    a = parse_run_args(ap)
    if a.child:
        return child(a.child, Path(a.data), Path(a.held_out), a.seed, Path(a.out), a.threads)

    limit = 48 if a.quick else a.limit
    seeds = a.seed_list
    names = a.only.split(",")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        reviews = read_reviews()
        data = write_chat_jsonl(reviews[:limit], tmp / "train.jsonl")
        held_out = write_chat_jsonl(reviews[limit:limit + N_HELD_OUT], tmp / "held_out.jsonl")
        results = run_children(a, names, seeds, data, "--held-out", held_out, tmp, f"{limit} examples",
                               quiet=lambda name: name != "openft")
    peak = bf16_matmul_peak()
    fpt = lora_flops_per_token()

    def tps(runs):  # all tokens over all wall time
        return sum(r["tokens"] for r in runs) / sum(r["wall_s"] for r in runs)

    def mean(runs, f):
        return statistics.fmean(f(r) for r in runs)

    ref = results.get("openft")
    print(f"\n{limit} examples, batch {BATCH}, lr {LR}, LoRA r={LORA_R} alpha={LORA_ALPHA} all-linear, 1 epoch, "
          f"seeds {','.join(map(str, seeds))}, torch threads: {a.threads or 'default'} of {os.cpu_count()} CPUs")
    print(f"| {'trainer':<12}|{'steps':>6} |{'tokens':>8} |{'tokens/s':>9} |{'wall s':>8} |{'loop s':>8} |"
          f"{'peak RSS MiB':>13} |{'final loss':>11} |{'held-out loss':>14} |{'openft x':>9} |")
    print("|" + "|".join("-" * w for w in (13, 7, 9, 10, 9, 9, 14, 12, 15, 10)) + "|")
    for name, runs in results.items():
        r0 = runs[0]
        ratio = f"{tps(ref) / tps(runs):.2f}" if ref else "-"
        print(f"| {name:<12}|{r0['steps']:>6} |{r0['tokens']:>8} |{tps(runs):>9.1f} |{mean(runs, lambda r: r['wall_s']):>8.1f} |"
              f"{mean(runs, lambda r: r['loop_s']):>8.1f} |{max(r['peak_rss_mib'] for r in runs):>13.0f} |"
              f"{mean(runs, final_loss):>11.4f} |{mean(runs, lambda r: r['eval_loss']):>14.4f} |{ratio:>9} |")
    print("tokens/s = tokens of the data / wall s (end to end: tokenize, load, train, save), over all seeds; loop s =\n"
          "training loop only; peak RSS = the highest of the seeds; final loss = the trainer's own train loss, mean of its\n"
          f"last 5 steps (same batches, same trained tokens for every trainer); held-out loss = every final adapter on\n"
          f"{N_HELD_OUT} held-out reviews, one mask, fp32; both losses are means over the seeds")
    if len(names) > 1:
        print("\nper seed (final loss / held-out loss):")
        print("| seed |" + "|".join(f" {n:>21} " for n in names) + "|")
        print("|------|" + "|".join("-" * 23 for _ in names) + "|")
        for k, seed in enumerate(seeds):
            print(f"| {seed:>4} |" + "|".join(f" {final_loss(results[n][k]):>10.4f} / {results[n][k]['eval_loss']:.4f} "
                                             for n in names) + "|")
    if ref:
        for name in names[1:]:
            runs = results[name]
            step_gap = statistics.fmean(abs(x - y) / y for o, t in zip(ref, runs) for x, y in zip(o["losses"], t["losses"]))
            fin = [final_loss(o) / final_loss(t) - 1 for o, t in zip(ref, runs)]
            held = [o["eval_loss"] / t["eval_loss"] - 1 for o, t in zip(ref, runs)]
            print(f"openft vs {name}: final loss {100 * (mean(ref, final_loss) / mean(runs, final_loss) - 1):+.1f}% "
                  f"(per seed {', '.join(f'{100 * x:+.1f}%' for x in fin)}), held-out loss "
                  f"{100 * (mean(ref, lambda r: r['eval_loss']) / mean(runs, lambda r: r['eval_loss']) - 1):+.1f}% "
                  f"(per seed {', '.join(f'{100 * x:+.1f}%' for x in held)}); per-step loss differs by "
                  f"{100 * step_gap:.1f}% on average")
        achieved = tps(ref) * fpt
        print(f"openft achieved {achieved / 1e9:.0f} GFLOP/s (4 x {fpt / 4 / 1e6:.0f}M non-embedding weights per token, "
              f"end to end) = {100 * achieved / peak:.1f}% of the measured bf16 matmul peak {peak / 1e9:.0f} GFLOP/s")
    rd = tps(ref) / tps(results["trl_default"]) if ref and "trl_default" in results else float("nan")
    rb = tps(ref) / tps(results["trl_best"]) if ref and "trl_best" in results else float("nan")
    print(f"ratio_vs_trl_default={rd:.2f} ratio_vs_trl_best={rb:.2f}")


if __name__ == "__main__":
    main()
