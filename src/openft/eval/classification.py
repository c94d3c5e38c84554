"""Classification metrics, every number from scikit-learn.

`label_probabilities` turns per-label log-probabilities (a multi-token label scores as the sum
of its tokens' log-probabilities) into a distribution over the label set (softmax). Binary AUROC
and AUPRC use the positive label's probability, never 0/1 predictions; precision, recall and F1
for the legacy `classification/*` columns are taken at the 0.5 threshold of that probability, as
OpenAI's legacy results file did. Knows nothing about models or files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def label_probabilities(label_logprobs: Mapping[str, float]) -> dict[str, float]:
    """{label: summed token log-prob} -> {label: probability}, normalised over the label set."""
    if not label_logprobs:
        return {}
    top = max(label_logprobs.values())
    exp = {k: math.exp(v - top) for k, v in label_logprobs.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], *, labels: Sequence[str] | None = None,
                           probs: Sequence[Mapping[str, float]] | None = None, positive: str | None = None,
                           betas: Sequence[float] = (1.0,)) -> dict:
    """Metrics of predicted labels against true ones.

    labels: the label set (default: sorted union of y_true and y_pred). probs: per item, the
    probability of each label (needed for AUROC/AUPRC). positive: the positive class of a binary
    task (default: the second of two sorted labels). Returns a flat dict: accuracy, macro_*,
    weighted_*, per_class {label: {precision, recall, f1, support}}, f<beta> (macro), confusion
    matrix {labels, matrix}, and for binary tasks precision/recall/f1.0/f<beta> of the positive
    class, auroc and auprc (None when only one class is present or probabilities are missing)."""
    from sklearn import metrics as m

    y_true, y_pred = [str(y) for y in y_true], [str(y) for y in y_pred]
    labels = list(labels) if labels is not None else sorted(set(y_true) | set(y_pred))
    out: dict = {"n": len(y_true), "accuracy": float(m.accuracy_score(y_true, y_pred)) if y_true else None}
    if not y_true:
        return out
    p, r, f, s = m.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out["per_class"] = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                        for i, lab in enumerate(labels)}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = m.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(ap), float(ar), float(af)
    out["confusion_matrix"] = {"labels": labels,
                               "matrix": m.confusion_matrix(y_true, y_pred, labels=labels).tolist()}
    binary = len(labels) == 2
    if binary:
        pos = positive if positive is not None else labels[1]
        if pos not in labels:
            raise ValueError(f"positive class {pos!r} is not one of the labels {labels}")
        out["positive_class"] = pos
        score = [float(pr.get(pos, 0.0)) for pr in probs] if probs is not None else None
        # at the 0.5 threshold of the positive label's probability when there are probabilities
        hard = ([pos if sc >= 0.5 else _other(labels, pos) for sc in score] if score is not None else y_pred)
        truth = [1 if y == pos else 0 for y in y_true]
        pred01 = [1 if y == pos else 0 for y in hard]
        out["precision"] = float(m.precision_score(truth, pred01, zero_division=0))
        out["recall"] = float(m.recall_score(truth, pred01, zero_division=0))
        for beta in betas:
            out[f"f{_fmt_beta(beta)}"] = float(m.fbeta_score(truth, pred01, beta=beta, zero_division=0))
        both = 0 < sum(truth) < len(truth)
        out["auroc"] = float(m.roc_auc_score(truth, score)) if score is not None and both else None
        out["auprc"] = float(m.average_precision_score(truth, score)) if score is not None and both else None
    else:
        for beta in betas:
            out[f"f{_fmt_beta(beta)}"] = float(m.fbeta_score(y_true, y_pred, labels=labels, beta=beta,
                                                            average="macro", zero_division=0))
    return out


def _other(labels: Sequence[str], pos: str) -> str:
    return labels[0] if labels[1] == pos else labels[1]


def _fmt_beta(beta: float) -> str:
    """1 -> '1.0', 0.5 -> '0.5' (the legacy column names: classification/f1.0, classification/f0.5)."""
    return repr(float(beta))


def legacy_columns(metrics: Mapping) -> dict[str, float | None]:
    """The legacy results-file columns (`classification/accuracy`, `classification/f1.0`, ...).
    Multiclass tasks give accuracy and weighted precision/recall/F1, as the legacy API did."""
    out = {"classification/accuracy": metrics.get("accuracy")}
    if "auroc" in metrics:
        out["classification/precision"] = metrics.get("precision")
        out["classification/recall"] = metrics.get("recall")
        out["classification/auroc"] = metrics.get("auroc")
        out["classification/auprc"] = metrics.get("auprc")
    else:
        out["classification/precision"] = metrics.get("weighted_precision")
        out["classification/recall"] = metrics.get("weighted_recall")
    for k, v in metrics.items():
        if k.startswith("f") and k[1:2].isdigit():
            out[f"classification/{k}"] = v
    return out
