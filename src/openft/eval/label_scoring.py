"""Classifying by label scores, the pure half: which examples and labels, and how scores become a choice.

A fine-tuning job computes OpenAI's legacy `classification/*` results columns at each epoch end:
the trainer (openft.train.label_scores) scores every label of the label set after each validation
prompt with the model (log p(label tokens | prompt), summed over the label's tokens), and
`classification_results` turns those scores into the normalised label distribution, the
prediction (the most probable label) and the metrics. `labels_of_file` reads the label set to
check `classification_n_classes` at job creation. An example is a chat (its last assistant
message is the label) or prompt/completion (the completion is the label).

Knows nothing about models, torch, jobs or HTTP.
"""

from __future__ import annotations

from pathlib import Path

from openft.eval.classification import classification_metrics, label_probabilities, legacy_columns


def split_example(row: dict) -> tuple[list[dict] | str, str] | None:
    """(prompt messages or prompt text, label) of one training-format row; None if it has none."""
    msgs = row.get("messages")
    if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
        content = msgs[-1].get("content")
        if isinstance(content, str):
            return [{"role": m.get("role"), "content": m.get("content") or ""} for m in msgs[:-1]], content.strip()
        return None
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
        return row["prompt"], row["completion"].strip()
    return None


def read_examples(path: str | Path) -> list[tuple[list[dict] | str, str]]:
    from openft.data.reader import iter_records

    out = []
    for _line, _text, row in iter_records(path, name=Path(path).name):
        ex = split_example(row) if isinstance(row, dict) else None
        if ex is not None:
            out.append(ex)
    return out


def labels_of_file(path: str | Path) -> list[str]:
    return label_set(read_examples(path))


def classification_columns(spec) -> tuple[str, ...]:
    """The results-CSV columns a spec asks for (empty unless compute_classification_metrics)."""
    if not getattr(spec, "compute_classification_metrics", False):
        return ()
    betas = sorted({1.0, *(float(b) for b in spec.classification_betas or ())})
    return ("classification/accuracy", "classification/precision", "classification/recall",
            "classification/auroc", "classification/auprc", *(f"classification/f{b!r}" for b in betas))


def label_set(examples: list[tuple[list[dict] | str, str]]) -> list[str]:
    """The labels of `read_examples`' pairs, sorted: the classes a prediction chooses between."""
    return sorted({label for _, label in examples})


def classification_results(truth: list[str], scores: list[dict], labels: list[str], spec) -> dict:
    """The legacy `classification/*` columns from per-example {label: summed log-prob} scores:
    each example's prediction is its most probable label (probabilities normalised over `labels`)."""
    probs = [label_probabilities(s) for s in scores]
    preds = [max(p, key=p.get) for p in probs]
    m = classification_metrics(truth, preds, labels=labels, probs=probs,
                               positive=spec.classification_positive_class,
                               betas=sorted({1.0, *(spec.classification_betas or ())}))
    return legacy_columns(m)
