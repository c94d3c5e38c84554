"""`/v1/files`: upload (multipart, streamed into the content-addressed blob store), list, retrieve,
delete, content. Every file belongs to the caller's project; other projects get 404.

A fine-tune upload must be JSONL, as OpenAI checks at upload: a `.jsonl` name, and content that is
JSONL at all (not empty, UTF-8 text, a first example that is a JSON object; openft.data.reader's
`jsonl_problem`). Each example is validated when a job uses the file, with its line number."""

from __future__ import annotations

import time

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from openft.api.deps import AppState, ProjectDep, StateDep
from openft.api.rows import alive_files, get_file_row
from openft.api.schemas import FILE_PURPOSES, cursor_page, file_object, keyset
from openft.api.uploads import receive_upload, too_large
from openft.data.reader import jsonl_problem
from openft.errors import InvalidRequest, NotFound
from openft.ids import file_id
from openft.names import plain
from openft.store.db import files, next_seq

router = APIRouter()

# Room for the multipart framing and the purpose field around the file itself, in bytes.
_MULTIPART_OVERHEAD = 64 * 1024
_FORM_FIELDS = {"file", "purpose", "expires_after[anchor]", "expires_after[seconds]"}
_BATCH_DEFAULT_TTL = 30 * 24 * 3600  # OpenAI: batch files expire after 30 days unless told otherwise


def _expires_at(form, purpose: str, now: int) -> int | None:
    anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return now + _BATCH_DEFAULT_TTL if purpose == "batch" else None
    if anchor != "created_at":
        raise InvalidRequest("expires_after.anchor must be 'created_at'.", param="expires_after.anchor")
    if seconds is None or not str(seconds).isdigit() or not 3600 <= int(seconds) <= 2592000:
        raise InvalidRequest("expires_after.seconds must be an integer between 3600 (1 hour) and 2592000 (30 days).",
                             param="expires_after.seconds")
    return now + int(seconds)


def _check_upload(fields: dict[str, str], filename: str | None) -> None:
    """Refuse a bad upload as early as possible (called again once the whole body is in)."""
    unknown = sorted(set(fields) - _FORM_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                             code="unknown_parameter")
    purpose = fields.get("purpose")
    if purpose is not None and purpose not in FILE_PURPOSES:
        raise InvalidRequest(f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'", param="purpose",
                             code="invalid_value")
    if purpose == "fine-tune" and filename is not None and not filename.lower().endswith(".jsonl"):
        raise InvalidRequest(f"Invalid file format for Fine-Tuning API. Must be .jsonl (got '{filename}').",
                             param="file", code="invalid_file_format")


@router.post("/files")
async def create_file(request: Request, state: StateDep, project: ProjectDep):
    limit = state.settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + _MULTIPART_OVERHEAD:
        raise too_large(limit)  # before reading a byte of the body
    up = await receive_upload(request, state.blobs.pinning(), limit, check=_check_upload)

    def insert_row():
        with state.db.begin() as conn:
            conn.execute(files.insert().values(
                id=fid, project_id=project, filename=plain(up.filename) or "upload", purpose=up.fields["purpose"],
                bytes=up.size, sha256=up.sha256, created_at=now, expires_at=expires_at, status="processed",
                seq=next_seq(conn, files)))
            return conn.execute(sa.select(files).where(files.c.id == fid)).first()

    pinned = up.sha256 is not None

    def insert():  # under the blob store's lock: a delete of another file with this content cannot remove it
        nonlocal pinned
        pinned = False  # keep drops the pin, whatever insert_row does
        return state.blobs.keep(up.sha256, insert_row)

    try:
        if up.fields.get("purpose") is None:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose",
                                 code="missing_required_parameter")
        if up.sha256 is None or up.file_field != "file":
            raise InvalidRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        _check_upload(up.fields, up.filename)
        if up.fields["purpose"] == "fine-tune":
            await run_in_threadpool(_check_jsonl, state, up)
        now, fid = int(time.time()), file_id()
        expires_at = _expires_at(up.fields, up.fields["purpose"], now)
        return file_object(await run_in_threadpool(insert))
    except BaseException:
        if pinned:
            state.blobs.unpin(up.sha256)
        if up.sha256 is not None:  # refused after storing: drop the blob unless another file has it
            await run_in_threadpool(_drop_blob_if_unused, state, up.sha256)
        raise


def _check_jsonl(state: AppState, up) -> None:
    """A fine-tune upload that is not JSONL at all is refused, saying what is wrong with it."""
    problem = jsonl_problem(state.blobs.path(up.sha256))
    if problem is not None:
        raise InvalidRequest(f"Invalid file format for Fine-Tuning API: {up.filename or 'the file'}: {problem}. "
                             "Each line must be one JSON object (an example).", param="file",
                             code="invalid_file_format")


def _drop_blob_if_unused(state: AppState, sha: str) -> None:
    """Unlink the blob unless a files row names it: counted and unlinked under the blob store's lock."""
    def count() -> int:
        with state.db.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(files).where(files.c.sha256 == sha)).scalar()

    state.blobs.drop_if_unused(sha, count)


@router.get("/files")
def list_files(state: StateDep, project: ProjectDep,
               after: str | None = None, limit: int = Query(10000, ge=1, le=10000),
               order: str = Query("desc", pattern="^(asc|desc)$"), purpose: str | None = None):
    with state.db.connect() as conn:
        q = sa.select(files).where(files.c.project_id == project, alive_files())
        if purpose:
            q = q.where(files.c.purpose == purpose)
        cur = None
        if after:
            cur = conn.execute(sa.select(files.c.seq, files.c.id)
                               .where(files.c.id == after, files.c.project_id == project)).first()
            if cur is None:
                raise NotFound(f"No such File object: {after}", param="after")
        where, ordering = keyset(files, cur, descending=order == "desc")
        if where is not None:
            q = q.where(where)
        q = q.order_by(*ordering).limit(limit + 1)
        rows = conn.execute(q).all()
    return cursor_page([file_object(r) for r in rows[:limit]], len(rows) > limit)


@router.get("/files/{fid}")
def retrieve_file(fid: str, state: StateDep, project: ProjectDep):
    with state.db.connect() as conn:
        return file_object(get_file_row(conn, project, fid))


@router.delete("/files/{fid}")
def delete_file(fid: str, state: StateDep, project: ProjectDep):
    with state.db.begin() as conn:
        row = get_file_row(conn, project, fid)
        conn.execute(files.delete().where(files.c.id == fid))
    _drop_blob_if_unused(state, row.sha256)
    return {"id": fid, "object": "file", "deleted": True}


@router.get("/files/{fid}/content")
def file_content(fid: str, state: StateDep, project: ProjectDep):
    with state.db.connect() as conn:
        row = get_file_row(conn, project, fid)
    path = state.blobs.path(row.sha256)
    if not path.exists():
        raise NotFound(f"The content of file {fid} is missing from the blob store.", param="id")
    media = "application/jsonl" if row.filename.endswith(".jsonl") else (
        "text/csv" if row.filename.endswith(".csv") else "application/octet-stream")
    return FileResponse(path, media_type=media)
