"""`/v1/openft/data/...`: the data toolkit over HTTP, for the dashboard's create-job flow (openft
extensions; OpenAI has no such endpoints).

- `POST /openft/data/inspect` (multipart `file`, optional `sheet`): a CSV/TSV/XLSX/Parquet table's
  columns, first rows, row count and the mapping `guess_mapping` proposes. Nothing is stored.
- `POST /openft/data/convert` (multipart `file`, `mapping`, optional `system`, `sheet`): the table
  converted to chat JSONL (`convert_file`) and stored as a `fine-tune` file object.
- `POST /openft/data/files/{id}/report` (JSON `model`, `method`, `role`): `validate_file` on a stored
  file with the base model's tokenizer, plus what "auto" resolves to and the time estimate: the same
  checks, rules and pace the job validator and the trainer use.
- `POST /openft/data/files/{id}/split` (JSON `valid`, `seed`, `stratify`): `split_file`, the two
  parts stored as new `fine-tune` files.

Tables are read in a child process (`openft.data.isolated`): declared sizes are checked before
anything is opened, rows, inflated bytes and JSONL written are bounded (OPENFT_DATA_TOOLS_MAX_ROWS,
OPENFT_DATA_TOOLS_MAX_EXPANDED_BYTES, OPENFT_MAX_UPLOAD_BYTES), its memory is capped with RLIMIT_AS
and its time with OPENFT_DATA_TOOLS_TIMEOUT_SECONDS, and it is killed when the client disconnects:
a 413 names the limit that was hit, and the server (with its embedded worker) never holds the table.
Uploaded tables go to a scratch folder inside the data folder (`<data_dir>/tmp/data-tools/<random>`,
content-addressed names, never the client's file name), removed when the request ends; the size
limit is OPENFT_MAX_UPLOAD_BYTES as for /v1/files. Every file id is looked up in the caller's
project (another project's file is a 404). Knows the files table and the data toolkit; knows
nothing about pages.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from openft.api.deps import AppState, ProjectDep, StateDep
from openft.api.rows import get_file_row
from openft.api.schemas import JobCreate, Method, Strict, check_job_options, file_object
from openft.api.uploads import receive_upload, too_large
from openft.data.bounds import TableLimits
from openft.data.isolated import Abandoned, run_isolated
from openft.errors import DataError, InvalidRequest, NotFound, OpenFTError, PayloadTooLarge
from openft.ids import file_id
from openft.names import plain
from openft.store.blobs import BlobStore
from openft.store.db import files, next_seq
from openft.train import rules
from openft.vocab import HYPERPARAMETERS

router = APIRouter(prefix="/openft/data")

SCRATCH_TTL = 24 * 3600         # scratch folders older than this were left by a killed server
_TABLE_FIELDS = {"file", "mapping", "system", "sheet"}
_MULTIPART_OVERHEAD = 64 * 1024


# ---------------------------------------------------------------- scratch space and uploads

def _scratch(settings) -> Path:
    """A fresh private folder under `<data_dir>/tmp/data-tools`; stale ones are swept on the way."""
    root = settings.layout.tmp / "data-tools"
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if now - old.stat().st_mtime > SCRATCH_TTL:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    folder = root / secrets.token_hex(8)
    folder.mkdir(mode=0o700)
    return folder


def _table_kind(filename: str | None) -> str:
    from openft.data.reader import TABLE_EXTS

    suffix = Path(filename or "").suffix.lower()
    if suffix not in TABLE_EXTS:
        raise InvalidRequest(f"'{filename}' is not a table: upload a .csv, .tsv, .xlsx or .parquet file here "
                             "(JSONL goes to POST /v1/files as it is).", param="file", code="invalid_file_format")
    return TABLE_EXTS[suffix]


def _check_table_upload(fields: dict[str, str], filename: str | None) -> None:
    unknown = sorted(set(fields) - _TABLE_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                             code="unknown_parameter")
    _table_kind(filename)


async def _receive_table(request: Request, state: AppState, folder: Path):
    """(upload, path of the stored table, its kind) with the upload kept in `folder`."""
    limit = state.settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + _MULTIPART_OVERHEAD:
        raise too_large(limit)
    scratch = BlobStore(folder / "in")
    up = await receive_upload(request, scratch, limit, check=_check_table_upload)
    if up.sha256 is None or up.file_field != "file":
        raise InvalidRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
    _check_table_upload(up.fields, up.filename)
    up.filename = plain(up.filename)  # as stored and shown: no bidi controls (openft.names)
    kind = _table_kind(up.filename)
    path = folder / f"table.{kind}"  # readers (openpyxl) go by the extension; ours, not the client's name
    scratch.path(up.sha256).replace(path)
    return up, path, kind


def _renamed(e: DataError, path: Path, name: str, param: str = "file") -> InvalidRequest:
    """The same located error, naming the file as the user knows it (never a server path)."""
    return InvalidRequest(e.message.replace(str(path), name), param=e.param or param, code=e.code)


def _limits(settings) -> TableLimits:
    return TableLimits(max_rows=settings.data_tools_max_rows,
                       max_expanded_bytes=settings.data_tools_max_expanded_bytes,
                       max_output_bytes=settings.max_upload_bytes)


async def _isolated(request: Request, state: AppState, op: str, up, path: Path, kind: str, **args) -> dict:
    """`op` on the uploaded table in a bounded child process, killed if the client leaves."""
    s = state.settings
    try:
        return await run_isolated(op, path=path, kind=kind, name=up.filename, sheet=up.fields.get("sheet") or None,
                                  limits=_limits(s), args=args, memory_bytes=s.data_tools_max_memory_bytes,
                                  timeout_s=s.data_tools_timeout_seconds, abandoned=request.is_disconnected)
    except Abandoned:  # nobody reads this answer
        raise InvalidRequest("The client closed the connection.", param="file", code="client_disconnected") from None


# ---------------------------------------------------------------- inspect and convert

@router.post("/inspect")
async def inspect_table(request: Request, state: StateDep, project: ProjectDep):
    folder = _scratch(state.settings)
    try:
        up, path, kind = await _receive_table(request, state, folder)
        try:
            out = await _isolated(request, state, "inspect", up, path, kind)
        except DataError as e:
            raise _renamed(e, path, up.filename) from None
        if out["error"]:
            out["error"]["message"] = out["error"]["message"].replace(str(path), up.filename)
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _mapping(raw: str | None) -> dict[str, str]:
    """`{"review": "user", ...}` (JSON) or `review=user,sentiment=assistant` (parse_mapping's form)."""
    from openft.data.convert import TARGETS, parse_mapping

    if not raw or not raw.strip():
        raise InvalidRequest("Missing required parameter: 'mapping' (which column is the user message, which the "
                             "assistant's answer).", param="mapping", code="missing_required_parameter")
    if raw.lstrip().startswith("{"):
        try:
            obj = json.loads(raw)
        except ValueError as e:
            raise InvalidRequest(f"mapping is not valid JSON: {e}", param="mapping") from None
        if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
            raise InvalidRequest("mapping must be a JSON object of column name -> role", param="mapping")
        out = {k: v.strip().lower() for k, v in obj.items() if v.strip()}
        bad = next((c for c, r in out.items() if r not in TARGETS), None)
        if bad is not None:
            raise InvalidRequest(f"mapping[{bad!r}]: {out[bad]!r} is not one of {', '.join(TARGETS)}",
                                 param=f"mapping.{bad}", code="invalid_value")
        return out
    try:
        return parse_mapping([raw]) or {}
    except InvalidRequest as e:
        raise InvalidRequest(e.message.replace("--map ", "mapping "), param="mapping", code="invalid_value") from None


def _store_file(state: AppState, project: str, path: Path, filename: str) -> dict:
    """Put a local JSONL file into the blob store and the files table (purpose fine-tune)."""
    limit = state.settings.max_upload_bytes
    with open(path, "rb") as f:
        try:
            sha, size = state.blobs.put_stream(f, limit, pin=True)
        except PayloadTooLarge:
            raise PayloadTooLarge(f"{filename} (the JSONL made from the upload) is larger than the upload limit of "
                                  f"{limit} bytes (OPENFT_MAX_UPLOAD_BYTES).", param="file") from None
    fid, now = file_id(), int(time.time())

    def insert():  # under the blob's lock (openft.store.blobs): a concurrent delete cannot remove it
        with state.db.begin() as conn:
            conn.execute(files.insert().values(
                id=fid, project_id=project, filename=filename, purpose="fine-tune", bytes=size, sha256=sha,
                created_at=now, expires_at=None, status="processed", seq=next_seq(conn, files)))
            return file_object(conn.execute(sa.select(files).where(files.c.id == fid)).first())

    return state.blobs.keep(sha, insert)


def _jsonl_name(filename: str, tail: str = "") -> str:
    stem = Path(plain(filename) or "data").stem or "data"
    return f"{stem[:100]}{tail}.jsonl"


async def _convert(request: Request, state: AppState, project: str, up, path: Path, kind: str, folder: Path) -> dict:
    mapping = _mapping(up.fields.get("mapping"))
    system = (up.fields.get("system") or "").strip() or None
    out = folder / "out.jsonl"
    try:
        r = await _isolated(request, state, "convert", up, path, kind, out=str(out), mapping=mapping, system=system)
    except DataError as e:
        raise _renamed(e, path, up.filename, "mapping" if e.code == "missing_column" else "file") from None
    except PayloadTooLarge:
        raise
    except InvalidRequest as e:
        raise InvalidRequest(e.message.replace("--map", "mapping"), param="mapping", code=e.code) from None
    if r["n_written"] == 0:
        raise InvalidRequest(f"{up.filename} has no rows to convert.", param="file", code="invalid_n_examples")
    stored = await run_in_threadpool(_store_file, state, project, out, _jsonl_name(up.filename))
    return {"object": "openft.data.conversion", "file": stored, "input_format": r["input_format"],
            "n_read": r["n_read"], "n_written": r["n_written"], "mapping": r["mapping"], "system": system,
            "ignored_columns": r["ignored_columns"], "labels": r["labels"]}


@router.post("/convert")
async def convert_table(request: Request, state: StateDep, project: ProjectDep):
    folder = _scratch(state.settings)
    try:
        up, path, kind = await _receive_table(request, state, folder)
        return await _convert(request, state, project, up, path, kind, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- report and split

class ReportRequest(Strict):
    model: str | None = Field(None, max_length=512)
    method: Method | None = None
    role: Literal["training", "validation"] = "training"
    measure_pace: bool = False


def _stored_path(state: AppState, project: str, fid: str):
    with state.db.connect() as conn:
        row = get_file_row(conn, project, fid)
    path = state.blobs.path(row.sha256)
    if not path.exists():
        raise NotFound(f"The content of file {fid} is missing from the blob store.", param="id")
    return row, path


def _resolve_method(body: ReportRequest, fid: str) -> tuple[JobCreate, dict]:
    """The job this report is for, its `method` resolved exactly as POST /fine_tuning/jobs does."""
    job = JobCreate(model=body.model or "-", training_file=fid, method=body.method)
    return job, job.resolved_method()


def _report(state: AppState, project: str, fid: str, body: ReportRequest) -> dict:
    from openft.data.auto import resolve_hyperparameters
    from openft.data.estimate import with_pace
    from openft.jobs.pace import pace_for_job
    from openft.jobs.validate import effective_max_seq_len, tokenizer_for, validate_for_job, wrong_format
    from openft.store.resolve import resolve_model

    row, path = _stored_path(state, project, fid)
    job, method = _resolve_method(body, fid)
    kind, hp = rules.method_type(method), rules.hyperparameters(method)
    base = tokenizer = model_dir = None
    if body.model:
        with state.db.connect() as conn:
            try:
                base = resolve_model(state.settings, conn, project, body.model).base_model
            except NotFound as e:
                raise InvalidRequest(f"Model {body.model} is not available for fine-tuning or does not exist "
                                     f"({e.message}).", param="model", code="model_not_available") from None
        check_job_options(state.settings, job, method, base)
        tokenizer, model_dir = tokenizer_for(state.settings, base)
    max_seq_len = effective_max_seq_len(model_dir, method) if tokenizer is not None else None
    train_method = hp.get("method") if isinstance(hp.get("method"), str) else "lora"
    rep = validate_for_job(path, row.filename, method, base, tokenizer, max_seq_len, training=body.role == "training")
    out = rep.to_dict()
    accepted = wrong_format(rep, kind)
    if rep.ok and accepted:  # what the job validator refuses
        out["ok"] = False
        out["errors"].append({"code": "invalid_file_format", "line": None, "field": None,
                              "message": f"{rep.format} examples; fine-tuning method '{kind}' expects "
                                         f"{' or '.join(accepted)} examples"})
    est = rep.stats.get("estimate")
    if est and body.role == "training":  # this machine's pace: earlier jobs, a cached probe, or (asked) a new probe
        probe_job = SimpleNamespace(method=method, base_model=base, training_file=fid)
        pace = pace_for_job(state.settings, state.db, probe_job, est["n_examples"],
                            probe=body.measure_pace and out["ok"])
        est = out["stats"]["estimate"] = with_pace(est, pace)
    n = rep.stats.get("n_valid_examples", 0)
    resolved = None
    if n:
        resolved = resolve_hyperparameters(n, hp.get("n_epochs", "auto"), hp.get("batch_size", "auto"),
                                           hp.get("learning_rate_multiplier", "auto"))
        resolved["method"] = train_method
    out.update(object="openft.data.report", id=fid, filename=plain(row.filename), bytes=row.bytes, role=body.role,
               model=body.model, base_model=base, method=kind, tokenizer=tokenizer is not None,
               context_length=rules.model_context_length(model_dir) if model_dir else None, max_seq_len=max_seq_len,
               hyperparameters=resolved, auto=[k for k in HYPERPARAMETERS if hp.get(k, "auto") == "auto"],
               estimate=est)
    return out


@router.post("/files/{fid}/report")
def file_report(fid: str, body: ReportRequest, state: StateDep,
                project: ProjectDep):
    return _report(state, project, fid, body)


class SplitRequest(Strict):
    valid: float = Field(0.1, gt=0, description="validation share (0 < valid < 1) or a whole count (>= 1)")
    seed: int = Field(42, ge=0, le=2**31 - 1)
    stratify: bool | None = None


def _split(state: AppState, project: str, fid: str, body: SplitRequest) -> dict:
    from openft.data.split import split_file

    row, path = _stored_path(state, project, fid)
    folder = _scratch(state.settings)
    try:
        try:
            r = split_file(path, valid=body.valid, seed=body.seed, stratify=body.stratify,
                           train_out=folder / "train.jsonl", valid_out=folder / "valid.jsonl")
        except DataError as e:
            raise _renamed(e, path, row.filename) from None
        except OpenFTError as e:
            raise InvalidRequest(e.message.replace("--", ""), param=e.param, code=e.code) from None
        train = _store_file(state, project, folder / "train.jsonl", _jsonl_name(row.filename, ".train"))
        valid = _store_file(state, project, folder / "valid.jsonl", _jsonl_name(row.filename, ".valid"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"object": "openft.data.split", "source_file": fid, "training_file": train, "validation_file": valid,
            "n_read": r.n_read, "n_train": r.n_train, "n_valid": r.n_valid, "n_duplicates": r.n_duplicates,
            "stratified_by": {k: {"train": t, "valid": v} for k, (t, v) in (r.stratified_by or {}).items()} or None,
            "leaks": r.leaks}


@router.post("/files/{fid}/split")
def split_stored_file(fid: str, body: SplitRequest, state: StateDep,
                      project: ProjectDep):
    return _split(state, project, fid, body)
