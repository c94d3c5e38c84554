"""Validate a training file: every problem with its line and field, plus statistics.

`validate_file(path, ...)` streams the file once, line by line (bounded memory: one line, a
batch of examples waiting for the tokenizer, a hash per example for duplicates and a few
integers per example for the distributions). The job validator, `openft data validate` and
the estimates all use it. Errors make the file unusable (the job fails); warnings do not.

Knows nothing about HTTP, jobs or the CLI; raises nothing for bad data (it reports it).
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openft.data import formats as F
from openft.data.estimate import Pace, estimate
from openft.data.reader import iter_lines, parse_record, table_kind
from openft.data.tokens import TokenCounter
from openft.errors import DataError
from openft.vocab import DPO

MAX_LOCATED_PER_CODE = 50     # located issues kept per code; the rest are only counted
TOKEN_BATCH = 1024            # examples tokenized together
MAX_LABELS, MAX_LABEL_CHARS = 50, 40


@dataclass(frozen=True)
class DataIssue:
    code: str
    line: int | None
    field: str | None
    message: str
    file: str = ""

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p not in (None, ""))
        if self.field:
            where = f"{where} [{self.field}]" if where else f"[{self.field}]"
        return f"{where}: {self.message}" if where else self.message

    def to_dict(self) -> dict:
        return {"code": self.code, "line": self.line, "field": self.field, "message": self.message}


@dataclass
class ValidationReport:
    file: str
    format: str | None = None
    n_examples: int = 0
    errors: list[DataIssue] = field(default_factory=list)
    warnings: list[DataIssue] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)      # code -> occurrences (all, not only kept)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def n_errors(self) -> int:
        return sum(n for c, n in self.counts.items() if c in {e.code for e in self.errors})

    def add(self, severity: str, code: str, line: int | None, field_: str | None, message: str) -> None:
        self.counts[code] += 1
        if self.counts[code] <= MAX_LOCATED_PER_CODE:
            (self.errors if severity == F.ERROR else self.warnings).append(
                DataIssue(code, line, field_, message, self.file))

    def raise_for_errors(self) -> None:
        """Raise the first error as a DataError (code, file, line, field), noting how many more."""
        if self.ok:
            return
        e = self.errors[0]
        more = sum(self.counts[c] for c in {x.code for x in self.errors}) - 1
        msg = e.message + (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")
        raise DataError(msg, file=self.file, line=e.line, field=e.field, code=e.code)

    def to_dict(self) -> dict:
        return {"file": self.file, "ok": self.ok, "format": self.format, "n_examples": self.n_examples,
                "errors": [e.to_dict() for e in self.errors], "warnings": [w.to_dict() for w in self.warnings],
                "counts": dict(self.counts), "stats": self.stats}


def distribution(values) -> dict | None:
    """min, max, mean, median, p5, p95 (nearest-rank) of a sequence of numbers."""
    import numpy as np

    a = np.sort(np.asarray(values, dtype=np.int64))
    n = len(a)
    if n == 0:
        return None

    def q(p: float) -> int:
        return int(a[min(n - 1, max(0, round(p * (n - 1))))])

    return {"min": int(a[0]), "max": int(a[-1]), "mean": round(float(a.mean()), 2), "median": q(0.5),
            "p5": q(0.05), "p95": q(0.95)}


def _duplicates(hashes: array, lines: array, limit: int = MAX_LOCATED_PER_CODE) -> tuple[int, list[tuple[int, int]]]:
    """(how many examples repeat an earlier one, [(line, line of its first occurrence)] for the
    first `limit` of them in line order).

    12 bytes per example (a 64-bit hash and a line number) instead of a dict: memory stays
    small on files of millions of examples."""
    import numpy as np

    h = np.frombuffer(hashes, dtype=np.int64)
    if len(h) < 2:
        return 0, []
    order = np.argsort(h, kind="stable")   # equal hashes keep their file order
    hs = h[order]
    same = np.flatnonzero(hs[1:] == hs[:-1]) + 1
    if len(same) == 0:
        return 0, []
    starts = np.ones(len(hs), dtype=bool)
    starts[same] = False
    first = np.maximum.accumulate(np.where(starts, np.arange(len(hs)), 0))  # first index of each run
    ln = np.frombuffer(lines, dtype=np.int32)
    dup_lines, first_lines = ln[order[same]], ln[order[first[same]]]
    pick = np.argsort(dup_lines, kind="stable")[:limit]
    return len(same), [(int(dup_lines[i]), int(first_lines[i])) for i in pick]


def validate_file(path: str | Path, *, tokenizer: Any = None, max_seq_len: int | None = None,
                  min_examples: int = 10, display_name: str | None = None, model: str | None = None,
                  n_epochs: int | None = None, pace: Pace | None = None, method: str | None = None) -> ValidationReport:
    """Check a fine-tuning file (chat or prompt/completion JSONL) and measure it.

    tokenizer: the base model's tokenizer; enables token statistics, the too-long check
    (against `max_seq_len`) and the estimates. model: its id. pace: this machine's measured
    training pace (`openft.store.pace`, `openft.jobs.pace`), for the time estimate; without it there is none.
    display_name: how the file is named in messages (the server passes the file id).
    method: the job's method type ("supervised", "dpo"), when known; for "dpo" a preference file is
    not warned about and both sequences of each pair are counted (token statistics and estimates).
    """
    path = Path(path)
    rep = ValidationReport(file=display_name or str(path))
    kind = table_kind(path)
    if kind is not None:
        rep.format = kind
        rep.add(F.ERROR, "invalid_file_format", None, None,
                f"a {kind.upper()} table, not JSONL: convert it first, e.g. "
                f"`openft data convert {path.name} train.jsonl --map COLUMN=user --map COLUMN=assistant`")
        return rep
    counter = TokenCounter(tokenizer) if tokenizer is not None else None
    first_fmt_line = 0
    n_lines = 0
    hashes, hash_lines = array("q"), array("i")   # duplicates are found at the end (see _duplicates)
    n_messages = array("i")
    totals, trained = array("i"), array("i")
    labels: Counter | None = Counter()
    missing_system = missing_user = n_valid = n_too_long = 0
    batch: list[tuple[int, dict]] = []

    def flush():
        nonlocal n_too_long
        if not batch:
            return
        for (line, _), counted in zip(batch, counter.count([ex for _, ex in batch])):
            if isinstance(counted, DataError):
                msg = counted.message.split("]: ", 1)[-1] if counted.field else counted.message
                rep.add(F.ERROR, counted.code or "chat_template_error", line, counted.field, msg)
                continue
            tot, tr = counted
            totals.append(tot)
            trained.append(tr)
            if max_seq_len and tot > max_seq_len:
                n_too_long += 1
                rep.add(F.WARNING, "example_too_long", line, None,
                        f"{tot} tokens, over the {max_seq_len}-token context: it will be truncated")
        batch.clear()

    for n, text, problem in iter_lines(path):
        n_lines = n
        if problem is not None:
            rep.add(F.ERROR, problem[0], n, None, problem[1])
            rep.n_examples += 1
            continue
        if not text.strip():
            rep.add(F.ERROR, "empty_line", n, None, "empty line (each line must be one JSON example)")
            continue
        rep.n_examples += 1
        rec, bad = parse_record(text)
        if bad is not None:
            rep.add(F.ERROR, "invalid_json", n, None, bad)
            continue
        fmt = F.detect(rec)
        if fmt is not None and rep.format is None:
            rep.format, first_fmt_line = fmt, n
        elif fmt is not None and fmt != rep.format:
            rep.add(F.ERROR, "mixed_formats", n, None,
                    f"this example is {fmt} but the file is {rep.format} (from line {first_fmt_line}); "
                    "one file holds one format")
            continue
        issues = F.check(rec, fmt or "")
        bad = False
        for code, fld, msg, sev in issues:
            rep.add(sev, code, n, fld, msg)
            bad = bad or sev == F.ERROR
        if bad:
            continue
        n_valid += 1
        hashes.append(hash(text.strip()))
        hash_lines.append(n)
        ex = F.to_chat(rec, fmt) if fmt != F.PROMPT_COMPLETION else rec
        msgs = ex.get("messages")
        if msgs is not None:
            n_messages.append(len(msgs))
            roles = {m.get("role") for m in msgs}
            missing_system += "system" not in roles
            missing_user += "user" not in roles
        if labels is not None:
            answer = (msgs[-1].get("content") if msgs and msgs[-1].get("role") == "assistant"
                      else rec.get("completion") if msgs is None else None)
            if isinstance(answer, str) and 0 < len(answer.strip()) <= MAX_LABEL_CHARS:
                labels[answer.strip()] += 1
                if len(labels) > MAX_LABELS:
                    labels = None
            else:
                labels = None
        if counter is not None:
            batch.append((n, ex))
            if fmt == F.PREFERENCE and method == DPO:  # DPO trains on both sequences of the pair
                batch.append((n, F.to_chat({**rec, "preferred_output": rec.get("non_preferred_output",
                                                                              rec.get("non_preferred_completion"))}, fmt)))
            if len(batch) >= TOKEN_BATCH:
                flush()
    if counter is not None:
        flush()

    n_dups, dups = _duplicates(hashes, hash_lines)
    del hashes, hash_lines
    for line, first in dups:
        rep.add(F.WARNING, "duplicate_example", line, None, f"same example as line {first}")
    if n_dups > len(dups):
        rep.counts["duplicate_example"] += n_dups - len(dups)

    if rep.format == F.EVALS:
        rep.add(F.ERROR, "invalid_file_format", first_fmt_line, None,
                "OpenAI evals format ({input, ideal}); fine-tuning needs chat: "
                f"`openft data convert {path.name} train.jsonl` makes the ideal answer the assistant message")
    elif rep.format == F.PREFERENCE and method != DPO:
        rep.add(F.WARNING, "preference_format", first_fmt_line, None,
                "preference (DPO) data: supervised fine-tuning trains on the preferred output only")
    whole_file = n_lines == 1 and rep.counts["invalid_encoding"] == 1  # UTF-16 or binary: one error says it
    if whole_file:
        rep.n_examples = 0
    if n_lines == 0 and not rep.errors:
        rep.add(F.ERROR, "invalid_n_examples", None, None, "the file is empty")
    elif rep.n_examples < min_examples and not whole_file:
        rep.add(F.ERROR, "invalid_n_examples", None, None,
                f"the file has {rep.n_examples} example{'s' if rep.n_examples != 1 else ''}; "
                f"at least {min_examples} are required")
    _summarize(rep, n_lines=n_lines, n_valid=n_valid, n_messages=n_messages, totals=totals, trained=trained,
               labels=labels, missing_system=missing_system, missing_user=missing_user, n_too_long=n_too_long,
               n_duplicates=rep.counts["duplicate_example"], max_seq_len=max_seq_len, model=model,
               n_epochs=n_epochs, pace=pace, tokenized=counter is not None)
    return rep


def _summarize(rep: ValidationReport, *, n_lines, n_valid, n_messages, totals, trained, labels, missing_system,
               missing_user, n_too_long, n_duplicates, max_seq_len, model, n_epochs, pace, tokenized) -> None:
    s: dict[str, Any] = {"n_lines": n_lines, "n_valid_examples": n_valid, "n_duplicates": n_duplicates}
    if len(n_messages):
        s.update(messages_per_example=distribution(n_messages), n_missing_system=missing_system,
                 n_missing_user=missing_user)
    if labels and n_valid and len(labels) < n_valid and sum(labels.values()) == n_valid:
        s["labels"] = dict(labels.most_common())
    if tokenized and len(totals):
        import numpy as np

        cap = min(max_seq_len or 2**31 - 1, 2**31 - 1)
        billed = int(np.minimum(np.frombuffer(totals, dtype=np.int32), cap).sum(dtype=np.int64))
        billed_trained = int(np.minimum(np.frombuffer(trained, dtype=np.int32), cap).sum(dtype=np.int64))
        s.update(max_seq_len=max_seq_len, tokens_per_example=distribution(totals),
                 trained_tokens_per_example=distribution(trained), n_too_long=n_too_long,
                 total_tokens=billed, total_trained_tokens=billed_trained)
        s["estimate"] = estimate(n_examples=n_valid, total_tokens=billed, trained_tokens=billed_trained,
                                 n_epochs=n_epochs, pace=pace)
    rep.stats = s
