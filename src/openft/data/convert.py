"""Convert any supported format to fine-tuning JSONL (chat, or legacy prompt/completion).

Inputs: JSONL in any format of `openft.data.formats` (chat, prompt/completion, preference,
evals; UTF-8 with or without a byte-order mark, or UTF-16/32), and tables (CSV, TSV, XLSX,
Parquet) with a column mapping: `{"review": "user", "sentiment": "assistant"}`, or
`{"prompt": "prompt", "completion": "completion"}`. Without a mapping, columns are mapped by
their names (`guess_mapping`). A fixed `system` prompt turns a text column and a label column
into a classification dataset.

Streams: one record in memory at a time (`limits` bounds the rows read and the bytes written); the output is written to a temporary name and renamed
at the end, so a failed conversion leaves no half-written file.

Knows nothing about tokenizers, jobs or the CLI; bad input raises `DataError` with its location
(unless `skip_invalid`, which counts and skips bad records).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from openft.data import formats as F
from openft.data.bounds import TableLimits
from openft.data.reader import iter_records, iter_table, table_kind
from openft.errors import DataError, InvalidRequest

TARGETS = ("system", "user", "assistant", "prompt", "completion")
_GUESS = {  # column name (lower case) -> role, most specific first
    "system": ("system", "system_message", "system_prompt", "instruction", "instructions"),
    "user": ("user", "user_content", "user_message", "input", "question", "query", "text", "review",
             "sentence", "document", "content"),
    "assistant": ("assistant", "assistant_content", "assistant_message", "output", "answer", "response",
                  "label", "labels", "target", "sentiment", "class", "category", "ideal"),
}


@dataclass
class ConvertResult:
    input_format: str
    output_format: str
    n_read: int = 0
    n_written: int = 0
    n_skipped: int = 0
    mapping: dict[str, str] | None = None
    ignored_columns: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # located reasons, first 20
    labels: Counter = field(default_factory=Counter)


def parse_mapping(items: list[str] | None) -> dict[str, str] | None:
    """`["review=user", "sentiment=assistant"]` -> `{"review": "user", ...}` (order kept)."""
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            col, eq, role = part.partition("=")
            col, role = col.strip(), role.strip().lower()
            if not eq or not col or role not in TARGETS:
                raise InvalidRequest(f"--map {part!r}: expected COLUMN=ROLE with ROLE one of {', '.join(TARGETS)}",
                                     param="map")
            out[col] = role
    return out


def guess_mapping(columns: list[str]) -> dict[str, str]:
    """Map columns to roles by name; raises when no user/assistant (or prompt/completion) pair is found."""
    low = {c.lower().strip(): c for c in columns}
    if "prompt" in low and "completion" in low:
        return {low["prompt"]: "prompt", low["completion"]: "completion"}
    out: dict[str, str] = {}
    for role, names in _GUESS.items():
        col = next((low[n] for n in names if n in low and low[n] not in out), None)
        if col is not None:
            out[col] = role
    if set(out.values()) >= {"user", "assistant"}:
        return dict(sorted(out.items(), key=lambda kv: TARGETS.index(kv[1])))
    raise InvalidRequest(f"cannot tell which columns hold the conversation (columns: {', '.join(columns)}); "
                         "say it with --map COLUMN=user --map COLUMN=assistant", param="map")


def _check_mapping(mapping: dict[str, str], columns: list[str], file: str) -> None:
    missing = [c for c in mapping if c not in columns]
    if missing:
        raise DataError(f"no column {missing[0]!r}; the columns are: {', '.join(columns)}", file=file, field="map",
                        code="missing_column")
    roles = set(mapping.values())
    if roles & {"prompt", "completion"} and roles - {"prompt", "completion"}:
        raise InvalidRequest("--map: use either prompt/completion or system/user/assistant roles, not both",
                             param="map")
    need = {"prompt", "completion"} if roles & {"prompt", "completion"} else {"user", "assistant"}
    if not need <= roles:
        raise InvalidRequest(f"--map must name a column for each of: {', '.join(sorted(need - roles))}", param="map")


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).replace("\ufeff", "").strip()


def row_to_record(row: dict, mapping: dict[str, str], *, system: str | None, file: str, line: int) -> dict:
    """One table row as a chat (or prompt/completion) record."""
    if "prompt" in mapping.values():
        rec = {role: _cell(row.get(col)) for col, role in mapping.items()}
        if not rec["completion"]:
            col = next(c for c, r in mapping.items() if r == "completion")
            raise DataError("empty completion cell", file=file, line=line, field=col, code="missing_content")
        return rec
    msgs = [] if system is None else [{"role": "system", "content": system}]
    for col, role in mapping.items():
        text = _cell(row.get(col))
        if not text:
            if role == "system" and system is not None:
                continue
            raise DataError(f"empty {role} cell", file=file, line=line, field=col, code="missing_content")
        if role == "system" and msgs and msgs[0]["role"] == "system" and system is not None:
            msgs[0] = {"role": "system", "content": text}
        else:
            msgs.append({"role": role, "content": text})
    return {"messages": msgs}


def _records(path: Path, kind: str | None, mapping, system, result: ConvertResult, sheet):
    """(line, record, format) from a table or a JSONL file; raises DataError on a bad record."""
    name = str(path)
    if kind in ("csv", "tsv", "xlsx", "parquet"):
        result.input_format = kind
        rows = iter_table(path, kind, sheet=sheet)
        for line, row in rows:
            if result.mapping is None:
                columns = list(row)
                result.mapping = mapping or guess_mapping(columns)
                _check_mapping(result.mapping, columns, name)
                result.ignored_columns = [c for c in columns if c not in result.mapping]
            rec = row_to_record(row, result.mapping, system=system, file=name, line=line)
            yield line, rec, F.PROMPT_COMPLETION if "prompt" in rec else F.CHAT
        return
    if mapping:
        raise InvalidRequest("--map applies to tables (CSV, TSV, XLSX, Parquet), not JSONL", param="map")
    for line, _text, rec in iter_records(path, name=name, allow_utf16=True):
        fmt = F.detect(rec)
        if result.input_format in ("", "jsonl"):
            result.input_format = fmt or "jsonl"
        errors = [i for i in F.check(rec, fmt or "") if i[3] == F.ERROR]
        if errors:
            code, fld, msg, _ = errors[0]
            raise DataError(msg, file=name, line=line, field=fld, code=code)
        yield line, rec, fmt


def convert_file(src: str | Path, dst: str | Path, *, from_: str | None = None, mapping: dict[str, str] | None = None,
                 system: str | None = None, to: str = "chat", sheet: str | None = None,
                 skip_invalid: bool = False, limits: TableLimits | None = None, name: str | None = None
                 ) -> ConvertResult:
    """Convert `src` to `dst` (JSONL: chat, or prompt_completion with `to="prompt_completion"`).
    `limits`: stop with PayloadTooLarge past its rows or output bytes (`name`: the file in the message)."""
    src, dst = Path(src), Path(dst)
    if to not in ("chat", F.PROMPT_COMPLETION):
        raise InvalidRequest(f"--to must be chat or prompt_completion, got {to!r}", param="to")
    if not src.is_file():
        raise InvalidRequest(f"{src}: no such file", param="input")
    if src.resolve() == dst.resolve():
        raise InvalidRequest("the output must be a different file from the input", param="output")
    kind = from_ or table_kind(src) or "jsonl"
    if kind not in ("jsonl", "csv", "tsv", "xlsx", "parquet"):
        raise InvalidRequest(f"--from must be one of jsonl, csv, tsv, xlsx, parquet; got {kind!r}", param="from")
    result = ConvertResult(input_format=kind, output_format=to)
    label_like = True  # every answer short, few distinct: a classification dataset
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    name, n_bytes = name or str(src), 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            records = _records(src, kind, mapping, system, result, sheet)
            while True:
                try:
                    item = next(records)
                except StopIteration:
                    break
                except DataError as e:
                    if not skip_invalid or e.code in ("missing_column", "invalid_encoding") or e.line is None:
                        raise
                    result.n_read += 1
                    result.n_skipped += 1
                    if len(result.skipped) < 20:
                        result.skipped.append(e.message)
                    continue
                result.n_read += 1
                if limits is not None:
                    limits.rows(result.n_read, name)
                _line, rec, fmt = item
                if fmt == F.PROMPT_COMPLETION and to == F.PROMPT_COMPLETION:
                    ex = {"prompt": rec["prompt"], "completion": rec["completion"]}
                else:
                    ex = F.to_chat(rec, fmt, system=system if kind == "jsonl" else None)
                    if to == F.PROMPT_COMPLETION:
                        ex = F.chat_to_prompt_completion(ex)
                answer = ex["completion"] if "completion" in ex else ex["messages"][-1].get("content")
                if label_like and isinstance(answer, str) and len(answer) <= 40 and len(result.labels) <= 50:
                    result.labels[answer.strip()] += 1
                else:
                    label_like = False
                text = json.dumps(ex, ensure_ascii=False) + "\n"
                if limits is not None:
                    n_bytes += len(text.encode("utf-8"))
                    limits.output(n_bytes, name)
                out.write(text)
                result.n_written += 1
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    if not label_like or len(result.labels) > 50 or len(result.labels) >= result.n_written:
        result.labels = Counter()
    return result
