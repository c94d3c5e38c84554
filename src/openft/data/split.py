"""Train/validation split (stratified by label, duplicates removed) and leakage checks.

`split_file` reads the file twice and keeps only a few integers per example in memory: pass one
computes a key and a label per line, the split is decided on those, pass two copies lines. Each
example is compared by its normalized content (roles, contents lower-cased with whitespace
collapsed), so re-serialized or re-spaced copies count as the same example.

`overlap(a, b)` is the leakage report for any two files: examples of B identical to one in A,
and examples of B whose prompt (everything before the final answer) appears in A.

Knows nothing about tokenizers or the CLI; bad lines raise `DataError` with their location.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from openft.data import formats as F
from openft.data.reader import iter_records
from openft.errors import DataError, InvalidRequest


def _norm(text) -> str:
    return " ".join(str(text or "").lower().split())


def _digest(parts: list[str]) -> bytes:
    return hashlib.blake2b("\x1e".join(parts).encode("utf-8"), digest_size=12).digest()


def example_keys(rec: dict) -> tuple[bytes, bytes, str | None]:
    """(example key, prompt key, answer) of one record in any format."""
    fmt = F.detect(rec)
    if fmt is None:
        raise ValueError("unrecognized record")
    if fmt == F.PROMPT_COMPLETION:
        prompt, answer = [_norm(rec.get("prompt"))], rec.get("completion")
    else:
        msgs = F.to_chat(rec, fmt)["messages"]
        prompt = [f"{m.get('role')}:{_norm(F.content_text(m.get('content')))}" for m in msgs[:-1]]
        answer = F.content_text(msgs[-1].get("content")) if msgs[-1].get("role") == "assistant" else None
        if answer is None:
            prompt.append(json.dumps(msgs[-1], sort_keys=True))
    return _digest(prompt + [_norm(answer)]), _digest(prompt), answer


def _scan(path: Path):
    """(line, text, record) for each non-empty line; DataError on the first bad one."""
    for line, text, rec in iter_records(path):
        if F.detect(rec) is None:
            raise DataError("not a chat, prompt/completion, preference or evals example", file=str(path),
                            line=line, code="unknown_format")
        yield line, text, rec


@dataclass
class SplitResult:
    train_file: str
    valid_file: str
    n_read: int = 0
    n_train: int = 0
    n_valid: int = 0
    n_duplicates: int = 0
    stratified_by: dict[str, tuple[int, int]] | None = None   # label -> (train, valid)
    leaks: int = 0


def split_file(path: str | Path, *, valid: float = 0.1, seed: int = 42, stratify: bool | None = None,
               train_out: str | Path | None = None, valid_out: str | Path | None = None) -> SplitResult:
    """Split into `<stem>.train.jsonl` and `<stem>.valid.jsonl` (or the given paths).

    valid: fraction (0 < valid < 1) or a count (>= 1) of validation examples.
    stratify: None = by label when every answer looks like a label; True = require labels.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such file", param="file")
    if not 0 < valid < 1 and not (valid >= 1 and float(valid).is_integer()):
        raise InvalidRequest(f"--valid must be a fraction between 0 and 1 or a whole count, got {valid}", param="valid")
    train_out = Path(train_out or path.with_name(f"{path.stem}.train.jsonl"))
    valid_out = Path(valid_out or path.with_name(f"{path.stem}.valid.jsonl"))
    seen: set[bytes] = set()
    kept: list[int] = []
    labels: list[str] | None = []
    n_read = dups = 0
    for line, _text, rec in _scan(path):
        n_read += 1
        key, _, answer = example_keys(rec)
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        kept.append(line)
        if labels is not None:
            if isinstance(answer, str) and 0 < len(answer.strip()) <= 40:
                labels.append(answer.strip())
            else:
                labels = None
    del seen
    n = len(kept)
    n_valid = round(n * valid) if valid < 1 else int(valid)
    if n < 2 or not 1 <= n_valid < n:
        raise InvalidRequest(f"cannot split {n} distinct examples into {n_valid} for validation and the rest "
                             "for training", param="valid")
    distinct = sorted(set(labels)) if labels else []
    by_label = labels is not None and 1 < len(distinct) <= 50 and len(distinct) < n
    if stratify and not by_label:
        raise InvalidRequest("--stratify needs labels: every final answer short, with at most 50 distinct values",
                             param="stratify")
    by_label = by_label and stratify is not False
    rng = random.Random(seed)
    chosen: set[int] = set()
    strata: dict[str, tuple[int, int]] | None = None
    if by_label:
        groups: dict[str, list[int]] = defaultdict(list)
        for line, lab in zip(kept, labels):
            groups[lab].append(line)
        # Largest-remainder allocation so the per-label counts add up to n_valid exactly.
        quotas = {lab: len(g) * n_valid / n for lab, g in groups.items()}
        take = {lab: int(q) for lab, q in quotas.items()}
        for lab in sorted(quotas, key=lambda k: quotas[k] - take[k], reverse=True)[: n_valid - sum(take.values())]:
            take[lab] += 1
        strata = {}
        for lab in distinct:
            g = groups[lab]
            rng.shuffle(g)
            chosen.update(g[: take[lab]])
            strata[lab] = (len(g) - take[lab], take[lab])
    else:
        chosen.update(rng.sample(kept, n_valid))
    keep = set(kept)
    del kept, labels
    res = SplitResult(str(train_out), str(valid_out), n_read=n_read, n_duplicates=dups, stratified_by=strata)
    tmp_t, tmp_v = (p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in (train_out, valid_out))
    try:
        with open(tmp_t, "w", encoding="utf-8") as ft, open(tmp_v, "w", encoding="utf-8") as fv:
            for line, text, _rec in _scan(path):
                if line in chosen:
                    fv.write(text.strip() + "\n")
                    res.n_valid += 1
                elif line in keep:
                    ft.write(text.strip() + "\n")
                    res.n_train += 1
        os.replace(tmp_t, train_out)
        os.replace(tmp_v, valid_out)
    finally:
        tmp_t.unlink(missing_ok=True)
        tmp_v.unlink(missing_ok=True)
    res.leaks = overlap(train_out, valid_out).n_same
    return res


@dataclass
class OverlapReport:
    a: str
    b: str
    n_a: int = 0
    n_b: int = 0
    n_same: int = 0            # examples of B identical (normalized) to one in A
    n_same_prompt: int = 0     # examples of B whose prompt is in A with another answer
    same: list[tuple[int, int]] = field(default_factory=list)          # (line in B, line in A), first 50
    same_prompt: list[tuple[int, int]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.n_same == 0 and self.n_same_prompt == 0


def overlap(a: str | Path, b: str | Path, *, max_listed: int = 50) -> OverlapReport:
    """Which examples of file B also appear in file A (leakage between train and validation)."""
    a, b = Path(a), Path(b)
    for p in (a, b):
        if not p.is_file():
            raise InvalidRequest(f"{p}: no such file", param="file")
    rep = OverlapReport(str(a), str(b))
    examples: dict[bytes, int] = {}
    prompts: dict[bytes, int] = {}
    for line, _t, rec in _scan(a):
        rep.n_a += 1
        key, pkey, _ = example_keys(rec)
        examples.setdefault(key, line)
        prompts.setdefault(pkey, line)
    for line, _t, rec in _scan(b):
        rep.n_b += 1
        key, pkey, _ = example_keys(rec)
        if key in examples:
            rep.n_same += 1
            if len(rep.same) < max_listed:
                rep.same.append((line, examples[key]))
        elif pkey in prompts:
            rep.n_same_prompt += 1
            if len(rep.same_prompt) < max_listed:
                rep.same_prompt.append((line, prompts[pkey]))
    return rep
