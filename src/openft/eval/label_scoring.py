"""Label log-probabilities from a causal LM, teacher-forced: for each example and each label of
the label set, log p(label tokens | prompt) summed over the label's tokens; then the normalised
label distribution, the prediction (the most probable label) and the classification metrics.

This is how a fine-tuning job computes OpenAI's legacy `classification/*` results columns at each
epoch end (`epoch_classification`), and what `labels_of_file` reads to check
`classification_n_classes` at job creation. An example is a chat (its last assistant message is
the label) or prompt/completion (the completion is the label). Knows torch and the tokenizer,
nothing about jobs or HTTP.
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
    return sorted({label for _, label in read_examples(path)})


def classification_columns(spec) -> tuple[str, ...]:
    """The results-CSV columns a spec asks for (empty unless compute_classification_metrics)."""
    if not getattr(spec, "compute_classification_metrics", False):
        return ()
    betas = sorted({1.0, *(float(b) for b in spec.classification_betas or ())})
    return ("classification/accuracy", "classification/precision", "classification/recall",
            "classification/auroc", "classification/auprc", *(f"classification/f{b!r}" for b in betas))


def score_labels(model, tokenizer, prompts: list, labels: list[str], device, precision: str = "fp32") -> list[dict]:
    """Per prompt, {label: summed log-prob of its tokens after the prompt}. One forward pass per
    prompt over all labels (rows padded on the right)."""
    import torch

    from openft.train.model import autocast

    label_ids = [tokenizer.encode(lab, add_special_tokens=False) or [tokenizer.eos_token_id] for lab in labels]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for prompt in prompts:
                if isinstance(prompt, str):
                    p_ids = tokenizer.encode(prompt)
                else:
                    p_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
                    if hasattr(p_ids, "input_ids"):
                        p_ids = p_ids["input_ids"]
                rows = [list(p_ids) + ids for ids in label_ids]
                width = max(len(r) for r in rows)
                ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
                mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
                with autocast(device, precision):
                    logits = model(input_ids=ids, attention_mask=mask).logits.float()
                logp = torch.log_softmax(logits, dim=-1)
                scores = {}
                for k, lab_ids in enumerate(label_ids):
                    start = len(p_ids)
                    pos = torch.arange(start - 1, start - 1 + len(lab_ids), device=device)
                    tok = torch.tensor(lab_ids, device=device)
                    scores[labels[k]] = float(logp[k, pos, tok].sum())
                out.append(scores)
    finally:
        if was_training:
            model.train()
    return out


def epoch_classification(model, tokenizer, spec, device, precision: str) -> dict:
    """The `classification/*` metrics of the whole validation set (legacy column names)."""
    examples = read_examples(spec.valid_file)
    labels = sorted({lab for _, lab in examples})
    if len(labels) < 2:
        return {}
    scores = score_labels(model, tokenizer, [p for p, _ in examples], labels, device, precision)
    probs = [label_probabilities(s) for s in scores]
    preds = [max(p, key=p.get) for p in probs]
    m = classification_metrics([lab for _, lab in examples], preds, labels=labels, probs=probs,
                               positive=spec.classification_positive_class,
                               betas=sorted({1.0, *(spec.classification_betas or ())}))
    return legacy_columns(m)
