"""Multipart uploads streamed straight into the content-addressed blob store.

Starlette's form parser first copies a file part into a temporary file (in /tmp, often RAM);
here the file part's bytes go, as they arrive, to `BlobStore.put_stream` running in a worker
thread (hashing and writing to a temporary name, renamed when complete), so an upload touches
the disk once and never sits whole in memory. The size limit is enforced while receiving.
Knows nothing about files rows or purposes: the caller's `check` judges the fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from openft.errors import InvalidRequest, PayloadTooLarge
from openft.store.blobs import BlobStore

_MAX_FIELD_BYTES = 64 * 1024
_EOF = object()


class _Abort(Exception):
    pass


class _ChunkReader:
    """The blocking file-like object `put_stream` reads, fed chunk by chunk from the event loop."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue(maxsize=32)
        self._buf = b""
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        while not self._buf and not self._eof:
            item = self.queue.get()
            if item is _EOF:
                self._eof = True
            elif isinstance(item, BaseException):
                raise item
            else:
                self._buf = item
        if n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    file_field: str | None = None
    filename: str | None = None
    sha256: str | None = None
    size: int = 0


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"File is larger than the limit of {limit} bytes (OPENFT_MAX_UPLOAD_BYTES).", param="file")


async def receive_upload(request: Request, blobs: BlobStore, limit: int,
                         check: Callable[[dict[str, str], str | None], None] | None = None,
                         max_fields: int = 16) -> Upload:
    """Parse a multipart body with at most one file part, storing the file as it streams in.
    `check(fields, filename)` runs when the file part starts (with the fields sent before it)
    and may raise to refuse the upload before a byte is stored."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest("Uploads must be multipart/form-data with fields 'file' and 'purpose'.", param="file")
    out = Upload()
    loop = asyncio.get_running_loop()
    reader: _ChunkReader | None = None
    store: asyncio.Future | None = None
    pending: list = []            # what the parser produced from the current chunk, in order
    part = {"headers": [], "name": None, "filename": None, "data": bytearray(), "file": False}
    header = [b"", b""]

    def on_part_begin():
        part.update(headers=[], name=None, filename=None, data=bytearray(), file=False)

    def on_header_field(data, start, end):
        header[0] += data[start:end]

    def on_header_value(data, start, end):
        header[1] += data[start:end]

    def on_header_end():
        part["headers"].append((header[0].lower(), header[1]))
        header[0], header[1] = b"", b""

    def on_headers_finished():
        disposition = next((v for k, v in part["headers"] if k == b"content-disposition"), b"")
        _, opts = parse_options_header(disposition)
        if b"name" not in opts:
            raise InvalidRequest("A multipart part has no name.", param="file")
        part["name"] = opts[b"name"].decode("utf-8", "replace")
        if b"filename" in opts:
            if out.file_field is not None:
                raise InvalidRequest("Send exactly one file per upload.", param="file")
            part["file"] = True
            out.file_field = part["name"]
            out.filename = opts[b"filename"].decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
            pending.append(("file-start", None))
        elif len(out.fields) >= max_fields:
            raise InvalidRequest(f"Too many form fields (at most {max_fields}).", param="file")

    def on_part_data(data, start, end):
        if part["file"]:
            pending.append(("file", bytes(data[start:end])))
        else:
            part["data"] += data[start:end]
            if len(part["data"]) > _MAX_FIELD_BYTES:
                raise InvalidRequest(f"The form field '{part['name']}' is too long.", param=part["name"])

    def on_part_end():
        if part["file"]:
            pending.append(("file-end", None))
        else:
            out.fields[part["name"]] = part["data"].decode("utf-8", "replace")

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end})

    file_done = False

    async def feed(item) -> None:
        while True:
            try:
                reader.queue.put_nowait(item)
                return
            except queue.Full:
                if store.done():
                    store.result()  # the writer failed: raise its error
                    return
                await asyncio.sleep(0.002)

    try:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except FormParserError as e:
                raise InvalidRequest(f"Invalid multipart data: {e}", param="file") from None
            for kind, data in pending:
                if kind == "file-start":
                    if check is not None:
                        check(out.fields, out.filename)
                    reader = _ChunkReader()
                    store = loop.run_in_executor(None, blobs.put_stream, reader, limit)
                elif kind == "file":
                    out.size += len(data)
                    if out.size > limit:
                        raise too_large(limit)
                    await feed(data)
                else:
                    await feed(_EOF)
                    file_done = True
            pending.clear()
        try:
            parser.finalize()
        except FormParserError as e:
            raise InvalidRequest(f"Invalid multipart data: {e}", param="file") from None
        if store is not None and not file_done:
            raise InvalidRequest("The upload ended in the middle of the file.", param="file")
        if store is not None:
            out.sha256, out.size = await store
        return out
    except BaseException:
        if store is not None and not store.done():
            with contextlib.suppress(BaseException):
                await feed(_Abort("upload aborted"))  # put_stream removes its temporary file
            with contextlib.suppress(BaseException):
                await store
        raise
