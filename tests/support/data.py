"""The tests' datasets, each made in one place: short product reviews labelled positive or
negative as chat rows (a list, JSONL bytes or a file), as prompt-completion rows, preference
pairs for DPO, and the reference data folder shared with the benchmarks.

Deterministic: the same `n` and `seed` give the same bytes. Knows the OpenAI file formats only.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
WORDS = ["great", "awful", "fine", "superb", "bad", "lovely", "poor", "nice"]
BAD = ("awful", "bad", "poor")
SYSTEM = "Classify the review as positive or negative."


def chat_rows(n: int = 12, *, seed: int = 0, system: str = SYSTEM) -> list[dict]:
    """n chat examples: a system line, "Review i: the product was <word>.", the label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        w = rng.choice(WORDS)
        rows.append({"messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Review {i}: the product was {w}."},
            {"role": "assistant", "content": "negative" if w in BAD else "positive"}]})
    return rows


def prompt_completion_rows(n: int = 12, *, seed: int = 0) -> list[dict]:
    """The same reviews in the legacy prompt/completion format."""
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(n)]
    return [{"prompt": f"Review {i}: it was {w}. Sentiment:", "completion": " negative" if w in BAD else " positive"}
            for i, w in enumerate(words)]


def jsonl(rows) -> bytes:
    """JSONL bytes: one line per row (a dict is dumped, a str written as it is)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def chat_jsonl(n: int = 12, seed: int = 0) -> bytes:
    return jsonl(chat_rows(n, seed=seed))


def write_jsonl(path: Path, rows, *, raw_lines: list[str] | None = None) -> Path:
    """`rows` (dicts dumped, strings as they are) and then `raw_lines` verbatim, one per line."""
    Path(path).write_bytes(jsonl(rows) + "".join(line + "\n" for line in raw_lines or []).encode())
    return Path(path)


def write_chat_jsonl(path: Path, n: int = 12, *, seed: int = 0) -> Path:
    """A small valid chat dataset (n examples) for job tests."""
    return write_jsonl(path, chat_rows(n, seed=seed))


def upload(client, data: bytes, name: str = "train.jsonl", purpose: str = "fine-tune"):
    return client.files.create(file=(name, io.BytesIO(data)), purpose=purpose)


def chat(i: int, answer: str = "positive") -> dict:
    """One chat example of the data toolkit's tests ("Review number i: it was fine." -> answer)."""
    return {"messages": [{"role": "system", "content": "Classify the review."},
                         {"role": "user", "content": f"Review number {i}: it was fine."},
                         {"role": "assistant", "content": answer}]}


# -- preference pairs (DPO) ------------------------------------------------------------------

GOOD, BAD_PREF = ["great", "superb", "lovely", "nice"], ["awful", "bad", "poor", "dreadful"]


def pair(i: int, word: str) -> dict:
    """A preference row: the review's right sentiment preferred over the wrong one."""
    right = "positive" if word in GOOD else "negative"
    wrong = "negative" if right == "positive" else "positive"
    return {"input": {"messages": [{"role": "system", "content": "Classify the review."},
                                   {"role": "user", "content": f"Review {i}: the product was {word}."}]},
            "preferred_output": [{"role": "assistant", "content": right}],
            "non_preferred_output": [{"role": "assistant", "content": wrong}]}


def pairs(n: int, seed: int = 0, start: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [pair(start + i, rng.choice(GOOD + BAD_PREF)) for i in range(n)]


def write_pairs(path, n: int, seed: int = 0, start: int = 0) -> str:
    write_jsonl(path, pairs(n, seed, start))
    return str(path)


def style_pair(a: int, b: int) -> dict:
    """A preference a 2-layer random model can learn: a polite full sentence over a curt reply."""
    return {"input": {"messages": [{"role": "user", "content": f"What is {a} plus {b}?"}]},
            "preferred_output": [{"role": "assistant", "content": f"Thank you for asking! The answer is {a + b}."}],
            "non_preferred_output": [{"role": "assistant", "content": f"{a + b}, obviously."}]}


def write_style_pairs(path, n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    write_jsonl(path, [style_pair(rng.randrange(100), rng.randrange(100)) for _ in range(n)])
    return str(path)


def pref_jsonl(n: int, seed: int = 0, *, broken: dict | None = None) -> bytes:
    """n preference rows as JSONL; `broken` maps a 1-based line number to a function that spoils it."""
    rng = random.Random(seed)
    lines = [pair(i, rng.choice(["great", "superb", "awful", "bad"])) for i in range(n)]
    for line_no, change in (broken or {}).items():
        lines[line_no - 1] = change(lines[line_no - 1])
    return jsonl(lines)


def dpo_method(**hp) -> dict:
    return {"type": "dpo", "dpo": {"hyperparameters": hp}}
