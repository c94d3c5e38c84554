"""Eval speed: a whole eval run through the Evals API vs the same items as sequential chat
completions, on the base model and on a fine-tuned adapter.

Held-out items: the first --items reviews of ../shared/data/sentiment/reviews.csv after the
seeded shuffle that benchmarks/sentiment_quality.py uses for its test part (never trained on);
the adapter is fine-tuned (a real job through the API) on --train reviews from the rest. Each
model then answers every held-out review twice, greedy, --max-tokens new tokens at most:
  eval run:    POST /v1/evals/{id}/runs (completions source, a string_check grader), timed from
               the request to `completed` (the worker sends every item to its engine at once; the
               engine batches 64 of them, feeds their common prompt prefix once, and serves a LoRA
               model merged into a copy of the base, made at the warm-up run);
  sequential:  one /v1/chat/completions request after another, the way a script without evals
               would do it.
Both sides run in one server (openft.api.server.ServerThread: API + embedded worker), each
warmed up first (weights and adapter loaded). Prints both times and the speedup side by side,
and the accuracy both ways (they should agree: the same greedy decoding). Target: >= 3x.

    python benchmarks/eval_speed.py            # full: smollm2-135m-instruct, 200 items, adapter on 200 reviews
    python benchmarks/eval_speed.py --quick    # openft-tiny, 8 items, adapter on 16 reviews (proves it works)
    python benchmarks/eval_speed.py --repeats 3            # the figures to report (idle machine)
    python benchmarks/eval_speed.py --base-only --items 64  # a quick before/after comparison
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import read_reviews, to_chat, write_chat_jsonl  # noqa: E402

KEY = "sk-openft-bench-admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_adapter(client, rows, tmp: Path, base: str, epochs: int) -> str:
    f = client.files.create(file=write_chat_jsonl(rows, tmp / "train.jsonl").open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=base, training_file=f.id, suffix="evalbench",
                                         hyperparameters={"n_epochs": epochs, "batch_size": 8})
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(2)
        job = client.fine_tuning.jobs.retrieve(job.id)
    if job.status != "succeeded":
        raise SystemExit(f"fine-tuning failed: {job.error}")
    return job.fine_tuned_model


def eval_run(client, eval_id: str, model: str, items, max_tokens: int) -> tuple[float, float, dict]:
    """(seconds, accuracy, result_counts) of one eval run over `items`."""
    ds = {"type": "completions", "model": model,
          "source": {"type": "file_content", "content": [{"item": {"review": r, "label": lab}} for r, lab in items]},
          "input_messages": {"type": "template", "template": [
              {"role": m["role"], "content": "{{item.review}}" if m["role"] == "user" else m["content"]}
              for m in to_chat("x")["messages"]]},
          "sampling_params": {"max_completion_tokens": max_tokens, "temperature": 0, "seed": 0}}
    t = time.perf_counter()
    run = client.evals.runs.create(eval_id, data_source=ds)
    while run.status not in ("completed", "failed", "canceled"):
        time.sleep(0.05)
        run = client.evals.runs.retrieve(run.id, eval_id=eval_id)
    took = time.perf_counter() - t
    if run.status != "completed":
        raise SystemExit(f"eval run {run.status}: {run.error}")
    rc = run.result_counts
    return took, rc.passed / max(1, rc.total), rc.model_dump()


def sequential(client, model: str, items, max_tokens: int) -> tuple[float, float]:
    t = time.perf_counter()
    correct = 0
    for review, label in items:
        r = client.chat.completions.create(model=model, messages=to_chat(review)["messages"], max_tokens=max_tokens,
                                           temperature=0, seed=0)
        correct += label.lower() in (r.choices[0].message.content or "").lower()
    return time.perf_counter() - t, correct / len(items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2-135m-instruct")
    ap.add_argument("--items", type=int, default=200, help="held-out reviews (default 200)")
    ap.add_argument("--train", type=int, default=200, help="reviews the adapter is fine-tuned on")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=3)
    ap.add_argument("--model-cache", default=os.environ.get("OPENFT_MODEL_CACHE_DIR"))
    ap.add_argument("--quick", action="store_true", help="openft-tiny, 8 items, adapter on 16 reviews")
    ap.add_argument("--base-only", action="store_true", help="skip the fine-tune and the adapter's row")
    ap.add_argument("--repeats", type=int, default=1, help="measure each side this many times (the best counts)")
    a = ap.parse_args()
    if a.quick:
        a.base, a.items, a.train = "openft-tiny", 8, 16
    from openai import OpenAI

    from openft.api.server import ServerThread
    from openft.config import Settings

    rows = read_reviews()
    random.Random(0).shuffle(rows)  # the split of sentiment_quality.py: rows[:200] is its test part
    held_out, rest = rows[:a.items], rows[200:][:a.train]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        kw = {"model_cache_dir": a.model_cache} if a.model_cache else {}
        settings = Settings(data_dir=tmp / "data", api_key=KEY, port=free_port(), worker_poll_seconds=0.1,
                            heartbeat_seconds=1.0, **kw)
        with ServerThread(settings) as server:
            client = OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=600)
            models = [a.base]
            if not a.base_only:
                t = time.perf_counter()
                models.append(train_adapter(client, rest, tmp, a.base, a.epochs))
                print(f"fine-tuned {models[-1]} on {len(rest)} reviews in {time.perf_counter() - t:.0f}s", flush=True)
            ev = client.evals.create(name="sentiment speed", data_source_config={
                "type": "custom", "include_sample_schema": True, "item_schema": {
                    "type": "object", "properties": {"review": {"type": "string"}, "label": {"type": "string"}},
                    "required": ["review", "label"]}},
                testing_criteria=[{"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
                                   "reference": "{{item.label}}", "operation": "ilike"}])
            results = []
            for model in models:
                eval_run(client, ev.id, model, held_out[:2], a.max_tokens)  # warm-up: weights, adapter
                sequential(client, model, held_out[:2], a.max_tokens)
                seq_s, run_s = float("inf"), float("inf")
                for _ in range(a.repeats):  # alternated, so a busy minute hits both sides
                    s, seq_acc = sequential(client, model, held_out, a.max_tokens)
                    r, run_acc, counts = eval_run(client, ev.id, model, held_out, a.max_tokens)
                    seq_s, run_s = min(seq_s, s), min(run_s, r)
                    print(f"{model}: sequential {s:.1f}s, eval run {r:.1f}s", flush=True)
                results.append({"model": model, "items": len(held_out), "eval_run_s": round(run_s, 2),
                                "sequential_s": round(seq_s, 2), "speedup": round(seq_s / run_s, 2),
                                "eval_run_accuracy": round(run_acc, 4), "sequential_accuracy": round(seq_acc, 4),
                                "result_counts": counts})
    print(f"\n{'model':<58} {'items':>5} {'eval run':>9} {'sequential':>11} {'speedup':>8} {'acc run/seq':>12}")
    for r in results:
        print(f"{r['model']:<58} {r['items']:>5} {r['eval_run_s']:>8.1f}s {r['sequential_s']:>10.1f}s "
              f"{r['speedup']:>7.1f}x {r['eval_run_accuracy']:>6.3f}/{r['sequential_accuracy']:.3f}")
    print(json.dumps({"target_speedup": 3.0, "results": results}))


if __name__ == "__main__":
    main()
