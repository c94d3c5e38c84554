"""Content-addressed blob storage on the local disk.

A blob lives at `<root>/<sha[:2]>/<sha>`. Writes stream to a temporary file in the same
folder tree (`<root>/.upload-*`, owner-only, locked while written), are hashed on the way, then
renamed into place: a blob is never half-written, and identical content is stored once. A
process killed mid-write leaves its temporary file behind; `remove_stale_uploads` (at server
start) deletes those that no live writer holds, whichever process shares the folder.

Files share blobs (identical uploads, even from different projects), so a blob is removed only
when no row names it, and adding a row never races that removal: `drop_if_unused` counts the
rows and unlinks under the store's lock (`locked`: flock on `<root>` itself, shared by every
process using the folder, held for milliseconds), and an upload first pins its content (`put_stream(pin=True)`:
a hard link `<root>/.pin-*` made under the same lock), then `keep` inserts its row under the lock
and puts the blob back from the pin if a delete removed it in between. Pins left by a killed
process are swept at start after an hour.

`blob_path` is the one rule for where a blob lives; `stored_file` goes from a file id to its
`files` row and that path (the only place that does).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple, TypeVar

import sqlalchemy as sa

from openft.config import DataLayout
from openft.errors import PayloadTooLarge
from openft.store.db import files

CHUNK = 1 << 20
TEMP_PREFIX = ".upload-"
PIN_PREFIX = ".pin-"
STALE_PIN_SECONDS = 3600
T = TypeVar("T")
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
    # test hook (a fault point): called with the hash after drop_if_unused found no row, before it unlinks
    before_unlink: Callable[[str], None] | None = None

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._pins: dict[str, list[Path]] = {}
        self._pins_lock = threading.Lock()

    def path(self, sha256: str) -> Path:
        return blob_path(self.root, sha256)

    @contextlib.contextmanager
    def locked(self, sha256: str):
        """Hold the store's lock (flock on its folder; `sha256` says what for), across threads and
        processes. Held only to place a blob, insert a row naming one, or count and unlink."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None, *, pin: bool = False) -> tuple[str, int]:
        """Store a stream; returns (sha256, size). Raises PayloadTooLarge past max_bytes.
        pin: keep the content until `keep` (or `unpin`) for this hash, whatever a delete does meanwhile."""
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
            pin_path = self.root / f"{PIN_PREFIX}{sha}-{secrets.token_hex(4)}"
            with self.locked(sha):
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, dest)
                    if pin:
                        os.link(dest, pin_path)
                elif pin:
                    os.replace(tmp, pin_path)  # the same bytes
                else:
                    os.unlink(tmp)
            if pin:
                with self._pins_lock:
                    self._pins.setdefault(sha, []).append(pin_path)
            return sha, size
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def pinning(self) -> _Pinning:
        """This store, as `receive_upload` sees it, with every `put_stream` pinned."""
        return _Pinning(self)

    def unpin(self, sha256: str) -> Path | None:
        """Drop one pin of this hash (the pin's path, or None when there was none)."""
        with self._pins_lock:
            pins = self._pins.get(sha256) or []
            pin = pins.pop() if pins else None
            if not pins:
                self._pins.pop(sha256, None)
        if pin is not None:
            pin.unlink(missing_ok=True)
        return pin

    def keep(self, sha256: str, insert: Callable[[], T]) -> T:
        """Run `insert` (which commits a row naming this hash) under the store's lock; put the blob
        back from its pin if a delete removed it since `put_stream`; then drop the pin."""
        dest = self.path(sha256)
        with self._pins_lock:
            pin = (self._pins.get(sha256) or [None])[-1]
        try:
            with self.locked(sha256):
                result = insert()
                if not dest.exists() and pin is not None and pin.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.link(pin, dest)
                    log.info("blob %s was removed while a file naming it was added; restored", sha256)
            return result
        finally:
            self.unpin(sha256)

    def drop_if_unused(self, sha256: str, count: Callable[[], int]) -> bool:
        """Unlink the blob when `count()` (the rows naming it, read under the store's lock) is 0."""
        with self.locked(sha256):
            if count():
                return False
            if BlobStore.before_unlink is not None:
                BlobStore.before_unlink(sha256)
            self.path(sha256).unlink(missing_ok=True)
            return True

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
        for path in self.root.glob(PIN_PREFIX + "*"):  # pins a killed process left behind
            with contextlib.suppress(OSError):
                if time.time() - path.lstat().st_mtime > STALE_PIN_SECONDS:
                    path.unlink()
                    removed.append(path.name)
        if removed:
            log.info("removed %d abandoned upload file(s) from %s", len(removed), self.root)
        return removed

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        import io
        return self.put_stream(io.BytesIO(data))

    def open(self, sha256: str) -> BinaryIO:
        return open(self.path(sha256), "rb")


class _Pinning:
    """A BlobStore whose put_stream pins (what `receive_upload` is given for a file upload)."""

    def __init__(self, store: BlobStore):
        self.store = store

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> tuple[str, int]:
        return self.store.put_stream(stream, max_bytes, pin=True)
