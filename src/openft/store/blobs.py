"""Content-addressed blob storage on the local disk.

A blob lives at `<root>/<sha[:2]>/<sha>`. Writes stream to a temporary file in the same
folder tree (`<root>/.upload-*`, owner-only, locked while written), are hashed on the way, then
renamed into place: a blob is never half-written, and identical content is stored once. A
process killed mid-write leaves its temporary file behind; `remove_stale_uploads` (at server
start) deletes those that no live writer holds, whichever process shares the folder.

`blob_path` is the one rule for where a blob lives; `stored_file` goes from a file id to its
`files` row and that path (the only place that does).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, NamedTuple

import sqlalchemy as sa

from openft.config import DataLayout
from openft.errors import PayloadTooLarge
from openft.store.db import files

CHUNK = 1 << 20
TEMP_PREFIX = ".upload-"
log = logging.getLogger("openft.store")


def blob_path(root: Path, sha256: str) -> Path:
    """Where the blob with this content hash lives under a blob folder (DataLayout.blobs)."""
    return Path(root) / sha256[:2] / sha256


class StoredFile(NamedTuple):
    row: sa.Row      # the `files` row
    path: Path       # its content (may be missing: a blob deleted by hand)


def stored_file(conn: sa.Connection, layout: DataLayout, file_id: str,
                project_id: str | None = None) -> StoredFile | None:
    """A file id's row and blob path; None when there is no such file (in `project_id`, if given)."""
    query = sa.select(files).where(files.c.id == file_id)
    if project_id is not None:
        query = query.where(files.c.project_id == project_id)
    row = conn.execute(query).first()
    return None if row is None else StoredFile(row, blob_path(layout.blobs, row.sha256))


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return blob_path(self.root, sha256)

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> tuple[str, int]:
        """Store a stream; returns (sha256, size). Raises PayloadTooLarge past max_bytes."""
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.root)  # mode 0600
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # "being written": remove_stale_uploads leaves it alone
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(
                            f"File is larger than the limit of {max_bytes} bytes (OPENFT_MAX_UPLOAD_BYTES).",
                            param="file")
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = h.hexdigest()
            dest = self.path(sha)
            if dest.exists():
                os.unlink(tmp)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)
            return sha, size
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def remove_stale_uploads(self) -> list[str]:
        """Delete temporary upload files that no process is writing (their writer died: a server
        killed mid-upload). A live writer, in this process or another sharing the folder, holds
        an exclusive lock on its file, so only abandoned ones are removed; blobs are never
        touched (they do not start with TEMP_PREFIX). Returns the names removed."""
        removed = []
        for path in self.root.glob(TEMP_PREFIX + "*"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue  # gone already, or not a plain file we can open
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                st = os.fstat(fd)
                if st.st_size == 0 and time.time() - st.st_mtime < 10:
                    raise BlockingIOError  # just created by mkstemp, its writer may not hold the lock yet
            except OSError:
                os.close(fd)
                continue  # a live upload
            try:
                path.unlink()
                removed.append(path.name)
            except OSError as e:
                log.warning("could not remove the abandoned upload %s: %s", path.name, e)
            finally:
                os.close(fd)
        if removed:
            log.info("removed %d abandoned upload file(s) from %s", len(removed), self.root)
        return removed

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        import io
        return self.put_stream(io.BytesIO(data))

    def open(self, sha256: str) -> BinaryIO:
        return open(self.path(sha256), "rb")
