"""Quality: does fine-tuning smollm2-135m-instruct on sentiment reviews beat the base model?

Splits ../shared/data/sentiment/reviews.csv (seeded shuffle) into a held-out test part and a
training part, fine-tunes with openft (LoRA r=16), then asks the base model and the fine-tuned
model to classify each held-out review with one word (greedy decoding, 3 new tokens at most;
the first word, lower-cased and stripped of punctuation, must equal the label).

    HF_HUB_OFFLINE=1 python benchmarks/sentiment_quality.py                    # train on 2200, test 200
    HF_HUB_OFFLINE=1 python benchmarks/sentiment_quality.py --train-limit 400  # a quicker subset
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import read_reviews, settings, to_chat, write_chat_jsonl  # noqa: E402


def first_word(text: str) -> str:
    words = text.strip().split()
    return words[0].strip(".,!:;\"'").lower() if words else ""


def accuracy(model, tok, rows, batch: int = 16) -> tuple[float, dict]:
    import torch

    tok.padding_side = "left"
    correct, answers = 0, {}
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        prompts = [tok.apply_chat_template(to_chat(r)["messages"], tokenize=False, add_generation_prompt=True)
                   for r, _ in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
        for (_, label), ids in zip(chunk, out[:, enc["input_ids"].shape[1]:]):
            w = first_word(tok.decode(ids, skip_special_tokens=True))
            answers[w] = answers.get(w, 0) + 1
            correct += w == label
    return correct / len(rows), answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", type=int, default=200, help="held-out reviews (default 200)")
    ap.add_argument("--train-limit", type=int, default=0, help="train on at most N of the rest (0: all)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr-multiplier", type=float, default=0.1, help="of openft's LoRA base rate 2e-3")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openft.models import materialize
    from openft.train.hooks import RecordingHooks
    from openft.train.loop import train
    from openft.train.spec import TrainSpec

    if a.threads:
        torch.set_num_threads(a.threads)
    rows = read_reviews()
    random.Random(0).shuffle(rows)
    test, train_rows = rows[:a.test], rows[a.test:]
    if a.train_limit:
        train_rows = train_rows[:a.train_limit]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        s = settings(tmp)
        base_dir = materialize(s, "smollm2-135m-instruct")
        tok = AutoTokenizer.from_pretrained(base_dir)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
        t = time.time()
        base_acc, base_answers = accuracy(base, tok, test)
        print(f"base model: accuracy {base_acc:.3f} on {len(test)} held-out reviews ({time.time() - t:.0f}s); "
              f"answers {dict(sorted(base_answers.items(), key=lambda kv: -kv[1])[:6])}", flush=True)

        data = write_chat_jsonl(train_rows, tmp / "train.jsonl")
        spec = TrainSpec(base_model="smollm2-135m-instruct", train_file=str(data), output_dir=str(tmp / "run"),
                         n_epochs=a.epochs, batch_size=a.batch_size, learning_rate_multiplier=a.lr_multiplier,
                         keep_checkpoints=1, num_threads=a.threads or None)
        hooks = RecordingHooks()
        t = time.time()
        result = train(spec, hooks, s)
        losses = [m["train_loss"] for m in hooks.metrics]
        print(f"fine-tuned on {len(train_rows)} reviews: {result.total_steps} steps in {time.time() - t:.0f}s, "
              f"loss {losses[0]:.3f} -> {sum(losses[-10:]) / len(losses[-10:]):.3f} (mean of last 10 steps)", flush=True)

        ft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                       result.model_dir).merge_and_unload().eval()
        ft_acc, ft_answers = accuracy(ft, tok, test)
        print(f"fine-tuned model: accuracy {ft_acc:.3f}; answers {dict(sorted(ft_answers.items(), key=lambda kv: -kv[1])[:6])}")
        print(json.dumps({"test": len(test), "train": len(train_rows), "epochs": a.epochs, "batch_size": a.batch_size,
                          "base_accuracy": round(base_acc, 4), "fine_tuned_accuracy": round(ft_acc, 4)}))


if __name__ == "__main__":
    main()
