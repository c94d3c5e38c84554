"""Preference files for the DPO tests: short reviews, the right sentiment preferred."""

import json
import random

GOOD, BAD = ["great", "superb", "lovely", "nice"], ["awful", "bad", "poor", "dreadful"]


def pair(i: int, word: str) -> dict:
    right = "positive" if word in GOOD else "negative"
    wrong = "negative" if right == "positive" else "positive"
    return {"input": {"messages": [{"role": "system", "content": "Classify the review."},
                                   {"role": "user", "content": f"Review {i}: the product was {word}."}]},
            "preferred_output": [{"role": "assistant", "content": right}],
            "non_preferred_output": [{"role": "assistant", "content": wrong}]}


def write_pairs(path, n: int, seed: int = 0, start: int = 0) -> str:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps(pair(start + i, rng.choice(GOOD + BAD))) + "\n")
    return str(path)


def style_pair(a: int, b: int) -> dict:
    """A preference a 2-layer random model can learn: a polite full sentence over a curt reply."""
    return {"input": {"messages": [{"role": "user", "content": f"What is {a} plus {b}?"}]},
            "preferred_output": [{"role": "assistant", "content": f"Thank you for asking! The answer is {a + b}."}],
            "non_preferred_output": [{"role": "assistant", "content": f"{a + b}, obviously."}]}


def write_style_pairs(path, n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps(style_pair(rng.randrange(100), rng.randrange(100))) + "\n")
    return str(path)
