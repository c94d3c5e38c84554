"""Run the same items on several models and measure each: `openft eval compare` and
`openft eval forgetting` are thin over this.

An item is a training-format example (chat whose last assistant message is the reference, or
prompt/completion). `predict(client, model, items, ...)` sends every item as a chat completion
through an OpenAI-compatible client (openft or any other server), many at once so the server can
batch them, with logprobs when asked. `detect_kind(refs)` tells labels from free text.
`score(kind, refs, preds)` gives the metrics of one model (classification with label
probabilities from the first answer token's top log-probabilities, or generation metrics).
`disagreements(...)` lists the items where the models' answers differ; `answer_reading(...)` says
how many answers named no label (read from log-probabilities, else wrong). Forgetting uses MMLU
questions bundled in eval/data (MIT licence, see its README). Knows nothing about openft's
server internals: it talks the OpenAI API through the clients it is handed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from openft.eval.classification import classification_metrics
from openft.eval.generation import generation_metrics
from openft.eval.graders import parse_label
from openft.eval.label_scoring import split_example

MMLU = Path(__file__).parent / "data" / "mmlu_subset.jsonl"


@dataclass
class Prediction:
    text: str
    top_logprobs: list[dict] = field(default_factory=list)  # first answer token: [{"token", "logprob"}]
    error: str | None = None


def read_items(path: str | Path) -> list[tuple[list[dict], str]]:
    """(prompt messages, reference) per line; prompt/completion rows become one user message."""
    from openft.data.reader import iter_records

    out = []
    for line, _text, row in iter_records(path, name=str(path)):
        ex = split_example(row) if isinstance(row, dict) else None
        if ex is None:
            raise ValueError(f"{path}:{line}: not a chat example ending in an assistant message, nor "
                             "prompt/completion")
        prompt, ref = ex
        out.append(([{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt, ref))
    return out


def detect_kind(refs: list[str]) -> str:
    """"labels" when the references are few distinct short strings (a classification set), else "text"."""
    distinct = set(refs)
    short = all(len(r.split()) <= 4 for r in refs)
    return "labels" if short and 2 <= len(distinct) <= max(2, min(50, len(refs) // 2)) else "text"


def predict(client, model: str, prompts: list[list[dict]], *, max_tokens: int = 256, logprobs: bool = False,
            concurrency: int = 32, temperature: float = 0.0, on_done=None) -> list[Prediction]:
    """One chat completion per prompt, `concurrency` in flight (the server batches them)."""
    def one(messages: list[dict]) -> Prediction:
        try:
            kw = {"logprobs": True, "top_logprobs": 20} if logprobs else {}
            r = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                               temperature=temperature, **kw)
            choice = r.choices[0]
            tops = []
            if logprobs and choice.logprobs and choice.logprobs.content:
                tops = [{"token": t.token, "logprob": t.logprob} for t in choice.logprobs.content[0].top_logprobs]
            return Prediction(choice.message.content or "", tops)
        except Exception as e:  # noqa: BLE001 - one failed item is reported, the others go on
            return Prediction("", error=f"{type(e).__name__}: {e}"[:300])
        finally:
            if on_done:
                on_done()

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, prompts))


def label_distribution(pred: Prediction, labels: list[str]) -> dict[str, float] | None:
    """The labels' probabilities from the first answer token: each top token that starts a label
    (case-insensitive, spaces ignored) gives that label its probability; normalised over the
    labels. None when no top token starts any label. (Labels that share a first token are told
    apart only by the text; openft's own jobs score whole labels, see label_scoring.)"""
    mass: dict[str, float] = defaultdict(float)
    for t in pred.top_logprobs:
        tok = t["token"].strip().lower()
        if not tok:
            continue
        for lab in labels:
            if lab.lower().startswith(tok):
                mass[lab] += math.exp(t["logprob"])
                break
    total = sum(mass.values())
    if total <= 0:
        return None
    return {lab: mass.get(lab, 0.0) / total for lab in labels}


def label_of(pred: Prediction, labels: list[str]) -> str:
    got = parse_label(pred.text, labels)
    if got is not None:
        return got
    dist = label_distribution(pred, labels)
    return max(dist, key=dist.get) if dist else "(none)"


def score(kind: str, refs: list[str], preds: list[Prediction], *, positive: str | None = None) -> dict:
    if kind == "labels":
        labels = sorted(set(refs))
        hard = [label_of(p, labels) for p in preds]
        dists = [label_distribution(p, labels) for p in preds]
        probs = None
        if len(labels) == 2 and all(d is not None for d in dists):
            probs = dists
        m = classification_metrics(refs, hard, labels=labels, probs=probs, positive=positive)
        m["predictions"] = hard
        return m
    m = generation_metrics([p.text for p in preds], refs)
    m["predictions"] = [p.text for p in preds]
    return m


TABLE_KEYS = {"labels": ("accuracy", "macro_f1", "weighted_f1", "precision", "recall", "f1.0", "auroc", "auprc"),
              "text": ("exact_match", "bleu", "corpus_bleu", "rouge1", "rouge2", "rougeL", "fuzzy")}


def disagreements(predictions: dict[str, list[str]]) -> list[int]:
    """Indexes of the items where the models' (normalised) answers are not all the same."""
    n = len(next(iter(predictions.values()))) if predictions else 0
    return [i for i in range(n) if len({p[i].strip().lower() for p in predictions.values()}) > 1]


def mmlu_items(categories: list[str] | None = None, per_category: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in MMLU.read_text().splitlines() if line.strip()]
    if categories:
        rows = [r for r in rows if r["category"] in categories]
    if per_category:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for r in rows:
            if seen[r["category"]] < per_category:
                seen[r["category"]] += 1
                kept.append(r)
        rows = kept
    return rows


def mmlu_prompt(row: dict) -> list[dict]:
    choices = "\n".join(f"{letter}. {c}" for letter, c in zip("ABCD", row["choices"]))
    return [{"role": "user", "content": f"{row['question']}\n{choices}\nAnswer with the letter (A, B, C or D) "
                                        "of the correct choice only."}]


def answer_reading(preds: list[Prediction], labels: list[str]) -> dict:
    """How `label_of` read the answers: {"n", "failed" (the request failed), "unreadable" (the text
    names no label), "from_logprobs" (of those, read from the first token's top log-probabilities),
    "counted_wrong" (neither: scored as a wrong answer)}."""
    failed = sum(1 for p in preds if p.error)
    unreadable = [p for p in preds if not p.error and parse_label(p.text, labels) is None]
    guessed = sum(1 for p in unreadable if label_distribution(p, labels))
    return {"n": len(preds), "failed": failed, "unreadable": len(unreadable), "from_logprobs": guessed,
            "counted_wrong": len(unreadable) - guessed}


def forgetting_report(rows: list[dict], base: list[Prediction], tuned: list[Prediction]) -> dict:
    """{category: {"n", "base", "tuned", "drop"}} accuracies (drop = base - tuned), plus "all"."""
    out: dict[str, dict] = {}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r["category"]].append(i)
        groups["all"].append(i)
    for cat, idx in groups.items():
        acc = []
        for preds in (base, tuned):
            acc.append(sum(label_of(preds[i], ["A", "B", "C", "D"]) == rows[i]["answer"] for i in idx) / len(idx))
        out[cat] = {"n": len(idx), "base": acc[0], "tuned": acc[1], "drop": acc[0] - acc[1]}
    return out
