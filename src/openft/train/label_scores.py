"""Label scores from a causal LM, teacher-forced: the model-running half of classification metrics.

`epoch_classification` is what a fine-tuning job with `compute_classification_metrics` runs at
each epoch end: for each validation example and each label of the label set, log p(label tokens
| prompt) summed over the label's tokens (`score_labels`, one forward pass per prompt over all
labels), handed to openft.eval.label_scoring, which picks the predictions and computes OpenAI's
legacy `classification/*` columns.

Knows torch, the model and the tokenizer; knows nothing about jobs, HTTP or how scores become metrics.
"""

from __future__ import annotations

from openft.eval.label_scoring import classification_results, label_set, read_examples
from openft.train.model import autocast


def score_labels(model, tokenizer, prompts: list, labels: list[str], device, precision: str = "fp32") -> list[dict]:
    """Per prompt, {label: summed log-prob of its tokens after the prompt}. One forward pass per
    prompt over all labels (rows padded on the right)."""
    import torch

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
    labels = label_set(examples)
    if len(labels) < 2:
        return {}
    scores = score_labels(model, tokenizer, [p for p, _ in examples], labels, device, precision)
    return classification_results([lab for _, lab in examples], scores, labels, spec)
