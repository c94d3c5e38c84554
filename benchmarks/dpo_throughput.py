"""DPO throughput, memory and held-out reward accuracy: openft vs TRL's DPOTrainer (its defaults).

Data: preference pairs built from ../shared/data/sentiment/reviews.csv: the prompt is the review
under the sentiment system prompt of benchmarks/train_throughput.py, the preferred answer the
review's label, the non-preferred one the other label. Training uses the first N reviews, the
held-out pairs the next `--held-out` ones (a disjoint part of the file).

Both trainers: base model smollm2-135m-instruct, the same LoRA (r=16, alpha=32, all linear
projections, no dropout), the same pairs in the same order (openft's shuffle for the seed; TRL
reads them with `train_sampling_strategy="sequential"`), batch 8 pairs per optimizer step,
learning rate 2e-4 (linear decay), beta 0.1, one epoch, paired seeds (each trainer seeds torch
before PEFT draws the LoRA initialization). Everything else is each trainer's default: for TRL
its padded [chosen; rejected] batches, reference = the model with the adapter disabled, computed
every step, gradient checkpointing and bf16 autocast as DPOConfig sets them; for openft the
shared-prompt packed rows and the reference log-probabilities computed once before training.
Each trainer runs in its own process (peak RSS is its own) and is timed end to end
(tokenization, model load, reference, training, saving the adapter).

tokens/s = tokens of both sequences of every pair (prompt + chosen, prompt + rejected, each
trainer's own tokenization) / wall seconds. Held-out reward accuracy: each final adapter on the
held-out pairs, one yardstick for both (openft's log-probabilities in fp32): the share of pairs
where beta*(logp_c - ref_c) > beta*(logp_r - ref_r), the reference being the base model.

    HF_HUB_OFFLINE=1 python benchmarks/dpo_throughput.py           # 400 pairs, seeds 42,1,2
    HF_HUB_OFFLINE=1 python benchmarks/dpo_throughput.py --quick   # 16 pairs, one seed, smoke run

Prints one table; the last line is `ratio_vs_trl=<x> memory_vs_trl=<y>`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_line  # benchmarks/machine.py (scripts run from benchmarks/ on sys.path)
from train_throughput import (  # noqa: E402
    BATCH,
    LORA_ALPHA,
    LORA_R,
    LR,
    add_run_args,
    parse_run_args,
    peak_rss_mib,
    read_reviews,
    run_children,
    settings,
    to_chat,
)

BETA = 0.1
MODEL = "smollm2-135m-instruct"


def write_pairs(rows, path: Path) -> Path:
    with open(path, "w") as fh:
        for review, label in rows:
            wrong = "negative" if label == "positive" else "positive"
            fh.write(json.dumps({"input": to_chat(review), "preferred_output": [{"role": "assistant", "content": label}],
                                 "non_preferred_output": [{"role": "assistant", "content": wrong}]}) + "\n")
    return path


def run_openft(data: Path, tmp: Path, seed: int) -> dict:
    import peft  # noqa: F401  (imported before the clock starts, as in run_trl)
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    from openft.data.auto import BASE_LEARNING_RATE
    from openft.train.hooks import RecordingHooks
    from openft.train.loop import train
    from openft.train.spec import TrainSpec

    spec = TrainSpec(base_model=MODEL, train_file=str(data), output_dir=str(tmp / "openft"), objective="dpo",
                     n_epochs=1, batch_size=BATCH, learning_rate_multiplier=LR / BASE_LEARNING_RATE["lora"],
                     beta=BETA, lora_r=LORA_R, lora_alpha=LORA_ALPHA, keep_checkpoints=1, seed=seed)
    hooks = RecordingHooks()
    t0 = time.perf_counter()
    result = train(spec, hooks, settings(tmp))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "tokens": result.trained_tokens, "losses": [m["train_loss"] for m in hooks.metrics],
            "steps": result.total_steps, "adapter": result.model_dir}


def run_trl(data: Path, tmp: Path, seed: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from openft.models import materialize
    from openft.train.data import epoch_order

    base = materialize(settings(tmp), MODEL)
    rows = []
    for line in open(data):
        r = json.loads(line)
        rows.append({"prompt": r["input"]["messages"], "chosen": r["preferred_output"],
                     "rejected": r["non_preferred_output"]})
    rows = [rows[i] for i in epoch_order(len(rows), seed, 0)]  # openft's batches for this seed, in its order
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    args = DPOConfig(output_dir=str(tmp / "trl"), use_cpu=True, per_device_train_batch_size=BATCH, learning_rate=LR,
                     num_train_epochs=1, beta=BETA, logging_steps=1, save_strategy="no", report_to=[], seed=seed,
                     train_sampling_strategy="sequential")
    peft_config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                             task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config)
    ds = trainer.train_dataset
    tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"]))
    trainer.train()
    trainer.save_model(str(tmp / "trl_adapter"))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "tokens": tokens, "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "steps": trainer.state.global_step, "adapter": str(tmp / "trl_adapter")}


def held_out_reward_accuracy(adapter: str, held_out: Path, tmp: Path) -> tuple[float, float]:
    """(reward accuracy, mean reward margin) of a final adapter on the held-out pairs, fp32,
    reference = the base model (the adapter disabled)."""
    import torch
    from transformers import AutoTokenizer

    from openft.models import materialize
    from openft.train import dpo
    from openft.train.model import build_model

    base = materialize(settings(tmp), MODEL)
    pairs = dpo.load_pairs(AutoTokenizer.from_pretrained(base), held_out, None).examples
    model = build_model(base, method="lora", precision="fp32", device=torch.device("cpu"), adapter_dir=adapter)
    cpu = torch.device("cpu")
    policy = dpo.reference_logps(model, pairs, 4096, "fp32", cpu)
    with model.disable_adapter():
        ref = dpo.reference_logps(model, pairs, 4096, "fp32", cpu)
    margins = [BETA * ((pc - rc) - (pr - rr)) for (pc, pr), (rc, rr) in zip(policy, ref)]
    return sum(m > 0 for m in margins) / len(margins), statistics.fmean(margins)


def child(name: str, data: Path, held_out: Path, seed: int, out: Path, threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = run_openft(data, tmp, seed) if name == "openft" else run_trl(data, tmp, seed)
        res["peak_rss_mib"] = peak_rss_mib()  # training's peak, before the held-out scoring
        res["reward_accuracy"], res["reward_margin"] = held_out_reward_accuracy(res.pop("adapter"), held_out, tmp)
    out.write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=400, help="first N reviews as training pairs (default 400)")
    ap.add_argument("--held-out", type=int, default=200, help="the next N reviews as held-out pairs (default 200)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 pairs, 16 held out, the first seed only")
    ap.add_argument("--only", default="openft,trl", help="comma-separated subset")
    add_run_args(ap, "--held-out-file")
    a = parse_run_args(ap)
    if a.child:
        return child(a.child, Path(a.data), Path(a.held_out_file), a.seed, Path(a.out), a.threads)

    limit, n_held = (16, 16) if a.quick else (a.limit, a.held_out)
    seeds = a.seed_list
    names = a.only.split(",")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        reviews = read_reviews()
        data = write_pairs(reviews[:limit], tmp / "train.jsonl")
        held_out = write_pairs(reviews[limit:limit + n_held], tmp / "held_out.jsonl")
        results = run_children(a, names, seeds, data, "--held-out-file", held_out, tmp, f"{limit} pairs")

    def tps(runs):  # all tokens over all wall time
        return sum(r["tokens"] for r in runs) / sum(r["wall_s"] for r in runs)

    def mean(runs, key):
        return statistics.fmean(r[key] for r in runs)

    print(f"\nCPU: {cpu_line()}")
    print(f"{limit} pairs ({n_held} held out), batch {BATCH} pairs, lr {LR}, beta {BETA}, LoRA r={LORA_R} "
          f"alpha={LORA_ALPHA} all-linear, 1 epoch, seeds {','.join(map(str, seeds))}, torch threads: "
          f"{a.threads or 'default'}")
    print(f"| {'trainer':<8}|{'steps':>6} |{'tokens':>8} |{'tokens/s':>9} |{'wall s':>8} |{'peak RSS MiB':>13} |"
          f"{'final loss':>11} |{'held-out reward acc':>20} |{'held-out margin':>16} |")
    print("|" + "|".join("-" * w for w in (9, 7, 9, 10, 9, 14, 12, 21, 17)) + "|")
    for name, runs in results.items():
        print(f"| {name:<8}|{runs[0]['steps']:>6} |{runs[0]['tokens']:>8} |{tps(runs):>9.1f} |{mean(runs, 'wall_s'):>8.1f} |"
              f"{max(r['peak_rss_mib'] for r in runs):>13.0f} |{statistics.fmean(r['losses'][-1] for r in runs):>11.4f} |"
              f"{mean(runs, 'reward_accuracy'):>20.3f} |{mean(runs, 'reward_margin'):>16.4f} |")
    print("tokens/s over all seeds, end to end; peak RSS = the highest of the seeds (training only); final loss =\n"
          "the last step's DPO loss; held-out reward accuracy and margin = every final adapter on the held-out pairs,\n"
          "one yardstick (openft's fp32 log-probabilities, reference = the base model); means over the seeds")
    if "openft" in results and "trl" in results and len(seeds) > 1:
        print("per seed (held-out reward accuracy openft / trl): " + ", ".join(
            f"{s}: {o['reward_accuracy']:.3f} / {t['reward_accuracy']:.3f}"
            for s, o, t in zip(seeds, results["openft"], results["trl"])))
    if "openft" in results and "trl" in results:
        ratio = tps(results["openft"]) / tps(results["trl"])
        mem = max(r["peak_rss_mib"] for r in results["openft"]) / max(r["peak_rss_mib"] for r in results["trl"])
    else:
        ratio = mem = float("nan")
    print(f"ratio_vs_trl={ratio:.2f} memory_vs_trl={mem:.2f}")


if __name__ == "__main__":
    main()
