"""Builds the quickstart's example dataset from a CSV of labelled reviews (run once; outputs are committed).

    python examples/make_sentiment_data.py /work/shared/data/sentiment/reviews.csv

Writes examples/data/sentiment_{train,valid}.jsonl (chat format: a fixed system prompt, the review
as the user turn, "positive" or "negative" as the assistant turn) and sentiment_questions.jsonl
(held-back reviews with their expected label, never trained on). Short reviews only, balanced
labels, a fixed seed: the same CSV always gives the same files.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

SYSTEM = "Classify the sentiment of the review. Answer with one word: positive or negative."
N_TRAIN, N_VALID, N_QUESTIONS = 240, 40, 8
MAX_CHARS = 90


def example(review: str, label: str) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": review},
                         {"role": "assistant", "content": label}]}


def main(csv_path: str, out_dir: Path) -> None:
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if 15 <= len(r["review"].strip()) <= MAX_CHARS]
    rng = random.Random(1234)
    by_label = {lab: [r for r in rows if r["sentiment"] == lab] for lab in ("positive", "negative")}
    for group in by_label.values():
        rng.shuffle(group)
    total = N_TRAIN + N_VALID + N_QUESTIONS
    picked = [r for pair in zip(*(g[: total // 2] for g in by_label.values())) for r in pair]  # interleaved
    splits = {"train": picked[:N_TRAIN], "valid": picked[N_TRAIN:N_TRAIN + N_VALID],
              "questions": picked[N_TRAIN + N_VALID:]}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("train", "valid"):
        rows_ = splits[name][:]
        rng.shuffle(rows_)
        with open(out_dir / f"sentiment_{name}.jsonl", "w") as f:
            for r in rows_:
                f.write(json.dumps(example(r["review"].strip(), r["sentiment"])) + "\n")
    with open(out_dir / "sentiment_questions.jsonl", "w") as f:
        for r in splits["questions"]:
            f.write(json.dumps({"system": SYSTEM, "review": r["review"].strip(), "expected": r["sentiment"]}) + "\n")
    print(f"wrote {N_TRAIN} train, {N_VALID} valid, {len(splits['questions'])} questions to {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/make_sentiment_data.py REVIEWS.csv")
    main(sys.argv[1], Path(__file__).resolve().parent / "data")
