"""Reading an untrusted table in a child process that cannot take the server down.

`await run_isolated(op, args, ...)` starts `python -m openft.data.isolated`, sends it one JSON
request on stdin and reads one JSON answer from stdout. The child first limits its own address
space (`resource.setrlimit(RLIMIT_AS)`), then checks the table's declared size
(`openft.data.bounds.check_table`), then runs the operation: `inspect` (columns, first rows,
row count, sheets) or `convert` (`convert_file` to a JSONL path, rows and bytes bounded). The
parent kills it when the time limit passes or when `abandoned()` (the client left) says so, and
turns running out of memory or time into a `PayloadTooLarge` naming the setting. An
`OpenFTError` raised in the child comes back as the same class with the same message, param
and code (a `DataError` keeps its line and field).

Knows nothing about HTTP (the caller passes `abandoned`), the database or the blob store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from openft import errors as E

log = logging.getLogger(__name__)

SAMPLE_ROWS = 5          # rows shown by inspect
POLL_SECONDS = 0.2       # how often the parent looks at the clock and the client
MEMORY_SETTING = "OPENFT_DATA_TOOLS_MAX_MEMORY_BYTES"
TIME_SETTING = "OPENFT_DATA_TOOLS_TIMEOUT_SECONDS"


class Abandoned(Exception):
    """The caller's `abandoned()` said so; the child was killed."""


# ---------------------------------------------------------------- the operations (in the child)

def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def _sheets(path: Path) -> list[str]:
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return list(wb.sheetnames)
    finally:
        wb.close()


def inspect_table(path: Path, kind: str, sheet: str | None, limits, name: str) -> dict:
    """Columns, the first rows, the row count (bounded), the guessed mapping and the sheets."""
    from openft.data.convert import TARGETS, guess_mapping
    from openft.data.reader import iter_table

    columns: list[str] = []
    rows: list[dict[str, str]] = []
    n_rows, problem = 0, None
    try:
        for _line, row in iter_table(path, kind, sheet=sheet):
            if not columns:
                columns = list(row)
            n_rows += 1
            limits.rows(n_rows, name)
            if len(rows) < SAMPLE_ROWS:
                rows.append({k: _cell(v) for k, v in row.items()})
    except E.DataError as e:
        if not columns and e.code != "invalid_row":
            raise
        problem = {"line": e.line, "field": e.field, "code": e.code, "message": e.message}
    guessed, guess_error = None, None
    if columns:
        try:
            guessed = guess_mapping(columns)
        except E.InvalidRequest as e:
            guess_error = e.message.replace("--map COLUMN=user --map COLUMN=assistant", "a mapping")
    return {"object": "openft.data.table", "filename": name, "format": kind, "columns": columns, "rows": rows,
            "n_rows": n_rows, "guessed_mapping": guessed, "guess_error": guess_error, "error": problem,
            "sheets": _sheets(path) if kind == "xlsx" else None, "roles": list(TARGETS)}


def convert_table(path: Path, kind: str, sheet: str | None, limits, name: str, *, out: str,
                  mapping: dict[str, str], system: str | None) -> dict:
    """`convert_file` to `out`, bounded by `limits`; the counts the caller reports."""
    from openft.data.convert import convert_file

    r = convert_file(path, out, from_=kind, mapping=mapping, system=system, sheet=sheet, limits=limits, name=name)
    return {"input_format": r.input_format, "n_read": r.n_read, "n_written": r.n_written, "mapping": r.mapping,
            "ignored_columns": r.ignored_columns, "labels": dict(r.labels.most_common())}


OPS = {"inspect": inspect_table, "convert": convert_table}


def _error_json(e: E.OpenFTError) -> dict:
    return {"cls": type(e).__name__, "message": e.message, "param": e.param, "code": e.code,
            "line": getattr(e, "line", None), "field": getattr(e, "field", None)}


def _child(request: dict) -> dict:
    import resource

    from openft.data.bounds import TableLimits, check_table

    memory = int(request["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    from openft.faults import fault_point

    fault_point("data-tool")
    limits = TableLimits(**request["limits"])
    path, kind, name = Path(request["path"]), request["kind"], request["name"]
    try:
        check_table(path, kind, limits, name)
        return {"result": OPS[request["op"]](path, kind, request.get("sheet"), limits, name, **request["args"])}
    except E.OpenFTError as e:
        return {"error": _error_json(e)}
    except MemoryError:
        return {"error": {"cls": "MemoryError"}}


def main() -> None:
    request = json.loads(sys.stdin.read())
    answer = _child(request)
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()


# ---------------------------------------------------------------- the parent side

def _too_large(what: str, setting: str, code: str) -> E.PayloadTooLarge:
    return E.PayloadTooLarge(f"reading the table {what} ({setting}); it was stopped.", param="file", code=code)


def _rebuilt(err: dict, memory_bytes: int) -> E.OpenFTError:
    if err["cls"] == "MemoryError":
        return _too_large(f"needed more than {memory_bytes} bytes of memory", MEMORY_SETTING, "memory_limit")
    if err["cls"] == "DataError":
        e = E.DataError(err["message"], param=err["param"], code=err["code"])
        e.line, e.field = err["line"], err["field"]
        return e
    cls = getattr(E, err["cls"], None)
    if not (isinstance(cls, type) and issubclass(cls, E.OpenFTError)):
        cls = E.InvalidRequest
    return cls(err["message"], param=err["param"], code=err["code"])


def _child_env() -> dict[str, str]:
    """This process's environment, with the folder holding this openft first on PYTHONPATH and one
    BLAS thread (numpy's threads each reserve address space, which counts against RLIMIT_AS)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # each thread reserves memory
        env[var] = "1"
    return env


async def run_isolated(op: str, *, path: Path, kind: str, name: str, sheet: str | None, limits, args: dict,
                       memory_bytes: int, timeout_s: float,
                       abandoned: Callable[[], Awaitable[bool]]) -> dict:
    """Run `OPS[op]` on the table at `path` in a bounded child process; its result, or the error it raised."""
    from dataclasses import asdict

    request = {"op": op, "path": str(path), "kind": kind, "name": name, "sheet": sheet, "limits": asdict(limits),
               "args": args, "memory_bytes": memory_bytes}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "openft.data.isolated", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_child_env())
    talk = asyncio.ensure_future(proc.communicate(json.dumps(request).encode()))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while not talk.done():
            left = deadline - loop.time()
            if left <= 0:
                raise _too_large(f"took longer than {timeout_s:g} seconds", TIME_SETTING, "time_limit")
            await asyncio.wait({talk}, timeout=min(POLL_SECONDS, left))
            if not talk.done() and await abandoned():
                raise Abandoned()
        out, err = talk.result()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if not talk.done():
            talk.cancel()
    try:
        answer = json.loads(out)
    except ValueError:  # killed by the kernel, or the interpreter died: nothing (or half) written
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        if "MemoryError" in tail[0] or proc.returncode in (-9, -11, -6):
            raise _too_large(f"needed more than {memory_bytes} bytes of memory", MEMORY_SETTING,
                             "memory_limit") from None
        log.warning("the data-tools child stopped (exit status %s): %s", proc.returncode, tail[0])
        raise E.ServerError(f"the table reader stopped without an answer (exit status {proc.returncode}); "
                            f"if {MEMORY_SETTING} is small, raise it") from None
    if "error" in answer:
        raise _rebuilt(answer["error"], memory_bytes)
    return answer["result"]


if __name__ == "__main__":
    main()
