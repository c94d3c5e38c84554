"""Reading data files as a stream of located records, in bounded memory.

- JSONL: `iter_lines(path)` yields `(line_no, text | None, problem | None)` one line at a
  time. It sniffs the encoding from the first bytes (UTF-8, UTF-8 with a byte-order mark,
  UTF-16/32 with or without a mark, binary files with NUL bytes) and never holds more than
  one line (at most `max_line_bytes`) in memory: a longer line is skipped in chunks and
  reported as `line_too_long`.
- `jsonl_problem(path)`: why a file is not JSONL at all (empty, binary, not UTF-8, a first line
  that is not a JSON object), judged from its first non-blank line; the upload check.
- Tables: `iter_table(path)` yields `(row_no, {column: value})` from CSV, TSV, XLSX and
  Parquet, streaming (csv module, openpyxl read-only mode, pyarrow record batches).

Knows nothing about formats, tokenizers or the CLI; problems are returned, not raised, so a
validator can report every one of them.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path

from openft.errors import DataError

MAX_LINE_BYTES = 16 * 1024 * 1024  # one example; a 16 MiB line is ~4M tokens, beyond any context
TABLE_EXTS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".xlsx": "xlsx", ".xlsm": "xlsx",
              ".parquet": "parquet", ".pq": "parquet"}

Problem = tuple[str, str]  # (code, message)


def sniff_encoding(head: bytes) -> tuple[str, int, str | None]:
    """(python codec, bytes to skip, note) from the first bytes of a file."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3, "starts with a UTF-8 byte-order mark (ignored)"
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
                     (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if head.startswith(bom):
            return enc, len(bom), None
    if len(head) >= 4 and b"\x00" in head[:200]:
        even, odd = head[0:200:2], head[1:200:2]
        if odd.count(0) > len(odd) * 0.6 and even.count(0) < len(even) * 0.2:
            return "utf-16-le", 0, None
        if even.count(0) > len(even) * 0.6 and odd.count(0) < len(odd) * 0.2:
            return "utf-16-be", 0, None
        return "binary", 0, None
    return "utf-8", 0, None


def file_encoding(path: str | Path) -> tuple[str, int, str | None]:
    with open(path, "rb") as f:
        return sniff_encoding(f.read(4096))


def iter_lines(path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES,
               allow_utf16: bool = False) -> Iterator[tuple[int, str | None, Problem | None]]:
    """Each line of a UTF-8 text file as `(line_no, text, None)`, or `(line_no, None, problem)`.

    UTF-16/32 files and binary files give one problem at line 1 (and nothing else) unless
    `allow_utf16`, in which case they are decoded (convert uses this).
    """
    enc, skip, _ = file_encoding(path)
    if enc == "binary":
        with open(path, "rb") as f:
            nul = f.read(4096).index(b"\x00")
        yield 1, None, ("invalid_encoding", f"this is a binary file, not JSONL text (NUL byte at offset {nul})")
        return
    if enc != "utf-8":
        if not allow_utf16:
            yield 1, None, ("invalid_encoding", f"the file is {enc.upper()} encoded; JSONL must be UTF-8 "
                            "(`openft data convert` re-encodes it)")
            return
        with open(path, encoding=enc, newline="") as f:
            f.read(skip // (2 if "16" in enc else 4))  # the byte-order mark as a character
            for n, line in enumerate(f, 1):
                yield n, line.rstrip("\r\n"), None
        return
    with open(path, "rb") as f:
        f.seek(skip)
        n = 0
        while True:
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                return
            n += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                size = len(raw)
                while raw and not raw.endswith(b"\n"):
                    raw = f.readline(1 << 20)
                    size += len(raw)
                yield n, None, ("line_too_long", f"line is {size / 1e6:.1f} MB; one example may be at most "
                                f"{max_line_bytes / 1e6:.0f} MB (is the file one JSON document instead of JSONL?)")
                continue
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n"), None
            except UnicodeDecodeError as e:
                hint = " (binary data?)" if b"\x00" in raw else ""
                yield n, None, ("invalid_encoding", f"invalid UTF-8 byte 0x{raw[e.start]:02x} at column {e.start + 1}{hint}")


def json_problem(e: json.JSONDecodeError, text: str) -> str:
    """A located, readable message for a line that is not valid JSON."""
    t = text.strip()
    what = f"{e.msg} column {e.colno}" if e.msg.endswith(" at") else f"{e.msg} at column {e.colno}"
    cut = t.startswith("{") and not t.endswith("}")
    return f"invalid JSON: {what}" + ("; the line ends before the object closes (truncated?)" if cut else "")


def parse_record(text: str) -> tuple[object, str | None]:
    """(parsed JSON, None), or (None, a readable invalid-JSON message) for one line's text."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, json_problem(e, text)
    except RecursionError:
        return None, "invalid JSON: nested too deeply"


def jsonl_problem(path: str | Path) -> str | None:
    """Why the file is not JSONL at all, or None: empty, binary or not UTF-8, or its first non-blank
    line is not a JSON object. Reads only up to that line; later lines are the validator's."""
    for line, text, problem in iter_lines(path):
        if problem is not None:
            code, message = problem
            return (f"line {line} is not UTF-8 text: {message}" if code == "invalid_encoding"
                    else f"line {line}: {message}")
        if not text.strip():
            continue
        rec, bad = parse_record(text)
        if bad is not None:
            return f"line {line} is not valid JSON ({bad})"
        if not isinstance(rec, dict):
            return f"line {line} is not a JSON object (each line of a JSONL file is one example object)"
        return None
    return "the file is empty" if Path(path).stat().st_size == 0 else "the file has no examples (only blank lines)"


def iter_records(path: str | Path, *, name: str | None = None, allow_utf16: bool = False, start_line: int = 1
                 ) -> Iterator[tuple[int, str, object]]:
    """`(line, text, parsed JSON)` for each non-blank line from `start_line` on; a located
    DataError (named `name`, default the path) on the first unreadable, undecodable or
    invalid-JSON line. The one JSONL reader of every consumer (trainer, convert, split, CLI)."""
    name = name or str(path)
    try:
        for line, text, problem in iter_lines(path, allow_utf16=allow_utf16):
            if line < start_line:
                continue
            if problem is not None:
                raise DataError(problem[1], file=name, line=line, code=problem[0])
            if not text.strip():
                continue
            rec, bad = parse_record(text)
            if bad is not None:
                raise DataError(bad, file=name, line=line, code="invalid_json")
            yield line, text, rec
    except OSError as e:
        raise DataError(f"cannot read the file: {e.strerror}", file=name, code="file_not_found") from None


def table_kind(path: str | Path) -> str | None:
    return TABLE_EXTS.get(Path(path).suffix.lower())


def iter_table(path: str | Path, kind: str | None = None, *, sheet: str | None = None
               ) -> Iterator[tuple[int, dict[str, object]]]:
    """Rows as `(row_no, {column: value})`; row_no counts the header as row 1 (as a spreadsheet does)."""
    kind = kind or table_kind(path)
    if kind in ("csv", "tsv"):
        yield from _iter_csv(path, "\t" if kind == "tsv" else None)
    elif kind == "xlsx":
        yield from _iter_xlsx(path, sheet)
    elif kind == "parquet":
        yield from _iter_parquet(path)
    else:
        raise DataError(f"not a table (expected .csv, .tsv, .xlsx or .parquet, got {Path(path).suffix or 'no extension'})",
                        file=str(path), code="invalid_file_format")


def _iter_csv(path, delimiter: str | None):
    enc, skip, _ = file_encoding(path)
    if enc == "binary":
        raise DataError("this is a binary file, not CSV text", file=str(path), line=1, code="invalid_encoding")
    enc = "utf-8-sig" if enc == "utf-8" else enc
    with open(path, encoding=enc, newline="", errors="strict") as f:
        if delimiter is None:
            sample = f.read(64 * 1024)
            f.seek(0)
            try:
                delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
            except csv.Error:
                delimiter = ","
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError("the table is empty", file=str(path), line=1, code="invalid_n_examples")
            header = [h.strip().lstrip("\ufeff") for h in header]
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"row has {len(row)} cells but the header has {len(header)} columns",
                                    file=str(path), line=reader.line_num, code="invalid_row")
                yield reader.line_num, dict(zip(header, row))
        except UnicodeDecodeError as e:
            raise DataError(f"not valid {enc} text ({e.reason})", file=str(path), code="invalid_encoding") from None
        except csv.Error as e:
            raise DataError(f"CSV error: {e}", file=str(path), line=reader.line_num, code="invalid_row") from None


def _iter_xlsx(path, sheet):
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many types for a file that is not a workbook
        raise DataError(f"not a readable XLSX workbook ({type(e).__name__}: {e})", file=str(path),
                        code="invalid_file_format") from None
    try:
        if sheet is not None and sheet not in wb.sheetnames:
            raise DataError(f"no sheet {sheet!r}; sheets: {', '.join(wb.sheetnames)}", file=str(path), field="sheet")
        ws = wb[sheet] if sheet else wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise DataError("the sheet is empty", file=str(path), line=1, code="invalid_n_examples")
        header = [str(h).strip() if h is not None else f"column{i + 1}" for i, h in enumerate(header)]
        for n, row in enumerate(rows, 2):
            if all(c is None or str(c).strip() == "" for c in row):
                continue
            yield n, {h: ("" if c is None else c) for h, c in zip(header, row)}
    finally:
        wb.close()


def _iter_parquet(path):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow.ArrowInvalid and friends
        raise DataError(f"not a readable Parquet file ({e})", file=str(path), code="invalid_file_format") from None
    n = 1
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            n += 1
            yield n, row
