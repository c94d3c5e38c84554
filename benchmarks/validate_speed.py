"""Validation speed and memory: `openft data validate` vs the OpenAI cookbook's checks.

    python benchmarks/validate_speed.py            # 200 MB chat JSONL (the issue's target)
    python benchmarks/validate_speed.py --mb 20    # a quick run

Generates a chat JSONL of the given size in a temporary folder (deleted afterwards; realistic
shape: one of a few fixed system prompts, 1-3 user/assistant turns of English-like text whose
words follow Zipf's law over a 200,000-word vocabulary seeded with the words of ../shared/data),
then, one after the other in fresh processes, on the same file:

1. `python -m openft data validate FILE -m MODEL` (what a user runs; loads the tokenizer);
2. a faithful plain-Python reimplementation of the cookbook's "Data preparation and analysis
   for chat model fine-tuning" notebook: load every line with json.loads, the format error
   checks, then `num_tokens_from_messages` / `num_assistant_tokens_from_messages` token counts
   (one `encode` call per message value, as the notebook does with tiktoken; here with the same
   Hugging Face tokenizer openft uses, because tiktoken's files cannot be downloaded offline),
   the distributions and the epoch/billing estimate.

Wall time includes start-up and tokenizer loading for both. CPU seconds (user + system) are
printed too: on a shared machine they vary less than wall time. Peak RSS is each process's own
maximum resident set (wait4). Last line: `ratio_vs_cookbook=<x> peak_rss_mb=<y>` (x: wall time
ratio; y: openft's peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COOKBOOK = r'''
import json, sys
from collections import defaultdict
import numpy as np
from transformers import AutoTokenizer

data_path, tok_dir = sys.argv[1], sys.argv[2]
encoding = AutoTokenizer.from_pretrained(tok_dir)
def encode(text):
    return encoding.encode(text, add_special_tokens=False)

with open(data_path, "r", encoding="utf-8") as f:
    dataset = [json.loads(line) for line in f]
print("Num examples:", len(dataset))

format_errors = defaultdict(int)
for ex in dataset:
    if not isinstance(ex, dict):
        format_errors["data_type"] += 1
        continue
    messages = ex.get("messages", None)
    if not messages:
        format_errors["missing_messages_list"] += 1
        continue
    for message in messages:
        if "role" not in message or "content" not in message:
            format_errors["message_missing_key"] += 1
        if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
            format_errors["message_unrecognized_key"] += 1
        if message.get("role", None) not in ("system", "user", "assistant", "function"):
            format_errors["unrecognized_role"] += 1
        content = message.get("content", None)
        function_call = message.get("function_call", None)
        if (not content and not function_call) or not isinstance(content, str):
            format_errors["missing_content"] += 1
    if not any(message.get("role", None) == "assistant" for message in messages):
        format_errors["example_missing_assistant_message"] += 1
if format_errors:
    print("Found errors:")
    for k, v in format_errors.items():
        print(f"{k}: {v}")
else:
    print("No errors found")

def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
    num_tokens = 0
    for message in messages:
        num_tokens += tokens_per_message
        for key, value in message.items():
            num_tokens += len(encode(value))
            if key == "name":
                num_tokens += tokens_per_name
    num_tokens += 3
    return num_tokens

def num_assistant_tokens_from_messages(messages):
    num_tokens = 0
    for message in messages:
        if message["role"] == "assistant":
            num_tokens += len(encode(message["content"]))
    return num_tokens

def print_distribution(values, name):
    print(f"\n#### Distribution of {name}:")
    print(f"min / max: {min(values)}, {max(values)}")
    print(f"mean / median: {np.mean(values)}, {np.median(values)}")
    print(f"p5 / p95: {np.quantile(values, 0.1)}, {np.quantile(values, 0.9)}")

n_missing_system = 0
n_missing_user = 0
n_messages = []
convo_lens = []
assistant_message_lens = []
for ex in dataset:
    messages = ex["messages"]
    if not any(message["role"] == "system" for message in messages):
        n_missing_system += 1
    if not any(message["role"] == "user" for message in messages):
        n_missing_user += 1
    n_messages.append(len(messages))
    convo_lens.append(num_tokens_from_messages(messages))
    assistant_message_lens.append(num_assistant_tokens_from_messages(messages))
print("Num examples missing system message:", n_missing_system)
print("Num examples missing user message:", n_missing_user)
print_distribution(n_messages, "num_messages_per_example")
print_distribution(convo_lens, "num_total_tokens_per_example")
print_distribution(assistant_message_lens, "num_assistant_tokens_per_example")
n_too_long = sum(l > 16385 for l in convo_lens)
print(f"\n{n_too_long} examples may be over the 16,385 token limit, they will be truncated during fine-tuning")

MAX_TOKENS_PER_EXAMPLE = 16385
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
n_epochs = TARGET_EPOCHS
n_train_examples = len(dataset)
if n_train_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
    n_epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_train_examples)
elif n_train_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
    n_epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_train_examples)
n_billing_tokens_in_dataset = sum(min(MAX_TOKENS_PER_EXAMPLE, length) for length in convo_lens)
print(f"Dataset has ~{n_billing_tokens_in_dataset} tokens that will be charged for during training")
print(f"By default, you'll train for {n_epochs} epochs on this dataset")
print(f"By default, you'll be charged for ~{n_epochs * n_billing_tokens_in_dataset} tokens")
'''

SYSTEMS = ["You are a helpful assistant that answers customer questions politely and concisely.",
           "Classify the sentiment of the review and explain your reasoning in one or two sentences.",
           "You are a support agent for an online store. Be accurate, friendly and brief.",
           "Answer the question using the context. If the answer is not in the context, say so."]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def vocabulary(rng: random.Random, size: int = 200_000) -> list[str]:
    """Words ranked by frequency: the real words of ../shared/data first (by their counts),
    then made-up words (names, typos, rare terms), so a file of any size has a realistic long
    tail of rare words (a word-count cache gets no unrealistic help)."""
    import re
    from collections import Counter

    def strings(x):
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list):
            for v in x:
                yield from strings(v)

    counts: Counter = Counter()
    texts = [t for f in SHARED_DATA.rglob("*.jsonl") for line in open(f, encoding="utf-8")
             for t in strings(json.loads(line))]
    texts += [line.split(",", 1)[-1] for f in SHARED_DATA.rglob("*.csv") for line in open(f, encoding="utf-8")]
    for t in texts:
        counts.update(re.findall(r"[A-Za-z']+|[0-9]+|[^\sA-Za-z0-9]", t))
    words = [w for w, _ in counts.most_common()] or ["the", "a", "of", "and", "to", "in", "is", "it", "for", "on", "with"]
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    while len(words) < size:
        w = "".join(rng.choice(letters) for _ in range(rng.randint(3, 11)))
        words.append(w.capitalize() if rng.random() < 0.2 else w)
    return words


class TextMaker:
    """English-like text: words drawn with Zipf's law (frequency ~ 1 / rank^1.1)."""

    def __init__(self, rng: random.Random):
        import itertools

        self.rng = rng
        self.words = vocabulary(rng)
        self.cum = list(itertools.accumulate(1.0 / (r + 1) ** 1.1 for r in range(len(self.words))))

    def sentence(self) -> str:
        words = self.rng.choices(self.words, cum_weights=self.cum, k=self.rng.randint(6, 24))
        return " ".join(words).capitalize() + self.rng.choice([".", ".", ".", "!", "?"])

    def text(self, lo: int, hi: int) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(lo, hi)))


def generate(path: Path, mb: float, seed: int = 0) -> int:
    rng = random.Random(seed)
    tm = TextMaker(rng)
    target = int(mb * 1_000_000)
    size = n = 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            msgs = [{"role": "system", "content": rng.choice(SYSTEMS)}]
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                msgs.append({"role": "user", "content": tm.text(1, 6)})
                msgs.append({"role": "assistant", "content": tm.text(1, 8)})
            line = json.dumps({"messages": msgs}) + "\n"
            f.write(line)
            size += len(line)
            n += 1
    return n


def timed(cmd: list[str], env: dict) -> tuple[float, float, int, str, float]:
    """(wall seconds, peak RSS MB, exit code, stdout, CPU seconds) of a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = p.stdout.read().decode("utf-8", "replace")
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_maxrss / 1024, p.returncode, out, ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=200.0, help="size of the generated JSONL, in MB")
    ap.add_argument("--model", default="openft-tiny", help="base model whose tokenizer both sides use "
                    "(openft-tiny has SmolLM2's real tokenizer)")
    ap.add_argument("--model-cache", default=str(Path(__file__).resolve().parents[1] / ".cache" / "test-models"))
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    args = ap.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENFT_MODEL_CACHE_DIR": args.model_cache}
    from openft.config import Settings
    from openft.models import materialize

    tok_dir = materialize(Settings(model_cache_dir=args.model_cache), args.model)
    tmp = Path(tempfile.mkdtemp(prefix="openft-validate-bench-"))
    try:
        path = tmp / "train.jsonl"
        t0 = time.perf_counter()
        n = generate(path, args.mb)
        size_mb = path.stat().st_size / 1e6
        print(f"generated {path.name}: {size_mb:.1f} MB, {n:,} examples in {time.perf_counter() - t0:.1f} s")
        ours = timed([sys.executable, "-m", "openft", "data", "validate", str(path),
                      "-m", args.model, "--min-examples", "1"], env)
        script = tmp / "cookbook.py"
        script.write_text(COOKBOOK)
        book = timed([sys.executable, str(script), str(path), tok_dir], env)
        for name, (_, _, rc, out, _) in (("openft data validate", ours), ("cookbook checks", book)):
            if rc != 0:
                print(f"{name} exited {rc}:\n{out[-3000:]}")
                sys.exit(1)
        print(f"\n{'':<24}{'wall s':>10}{'CPU s':>10}{'MB/s':>10}{'examples/s':>14}{'peak RSS MB':>14}")
        for name, (wall, rss, _, _, cpu) in (("openft data validate", ours), ("cookbook (HF tokenizer)", book)):
            print(f"{name:<24}{wall:>10.1f}{cpu:>10.1f}{size_mb / wall:>10.1f}{n / wall:>14,.0f}{rss:>14.0f}")
        print("\nopenft's report (head):\n" + "\n".join(ours[3].splitlines()[:3]))
        print("cookbook's output (tail):\n" + "\n".join(book[3].splitlines()[-3:]))
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine makes "
              "wall times noisy; CPU seconds are steadier)")
        print(f"cpu_ratio_vs_cookbook={book[4] / ours[4]:.2f}")
        print(f"ratio_vs_cookbook={book[0] / ours[0]:.2f} peak_rss_mb={ours[1]:.0f}")
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
