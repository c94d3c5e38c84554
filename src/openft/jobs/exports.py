"""Model exports as work rows: their records (the `exports` table), and the worker loop that runs
them (a merged HF folder, GGUF or the PEFT adapter of a model, written by openft.serve.export).

An export is a row (status queued -> running -> succeeded | failed) and a folder
`<data_dir>/exports/<id>/` that ends up holding its result (`filename`: a tar of the folder for
merged/peft, the .gguf file for gguf). The worker (the one embedded in `openft serve` and the
standalone `openft worker`) claims a queued export under a lease (openft.jobs.lease, `LEASE`)
and heartbeats it while it runs; progress and stage are written with the heartbeat, fenced on the
lease. Servers that share a database and data folder share the exports: any of their workers
runs any export, and another process's export is running for as long as its lease is alive.
A worker that dies leaves a lease that expires after `lease_seconds`; the next worker takes the
export over and runs it again from the start (an export has no checkpoints), counting
`attempts`; the MAX_ATTEMPTS-th takeover fails it as `interrupted` instead. A worker that is
stopped puts its export back in the queue.

Exports that older versions kept as `<id>/export.json` records are imported by `import_files`
at start-up (one whose process is gone reads as failed, `interrupted`, as it did then).

Test-only fault point (openft.faults, inert unless OPENFT_FAULT is set): `export-start@N`
fires when a worker starts attempt N of an export (`export-start@1:hold` holds the first attempt
until the test kills the server).

Knows the `exports` table, the data folder and openft.serve.export's interface; nothing about HTTP.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tarfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from openft.config import DataLayout, Settings
from openft.errors import NotFound
from openft.faults import fault_point
from openft.ids import new_id
from openft.jobs import lease
from openft.store.db import exports, next_seq
from openft.store.resolve import resolve_model

log = logging.getLogger("openft.worker.exports")

FORMATS = ("merged", "gguf", "peft")
QUANTIZATIONS = ("f16", "q8_0")
PUBLIC = ("id", "object", "model", "format", "quantization", "status", "progress", "stage", "created_at",
          "finished_at", "bytes", "filename", "error")
MAX_ATTEMPTS = 3  # the third takeover of an export whose worker died fails it (as a lost job's worker does)
INTERRUPTED = {"code": "interrupted", "message": "The server stopped while this export ran."}
_ID = re.compile(r"^export-[A-Za-z0-9]{24}$")

LEASE = lease.Leased(exports, held="running", free="queued")


class Stopped(Exception):
    """The export is no longer this worker's (taken over, deleted) or the worker is stopping."""


# -- the records ---------------------------------------------------------------------------------

def folder(data_dir: Path, export_id: str) -> Path:
    return (DataLayout(Path(data_dir)).exports / export_id).resolve()


def public(row) -> dict:
    """The API's export object."""
    rec = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
    return {**{k: rec.get(k) for k in PUBLIC}, "object": "model.export"}


def create(conn: sa.Connection, data_dir: Path, project: str, model: str, fmt: str, quantization: str | None) -> dict:
    """A queued export of `model` (already resolved and checked); returns its object."""
    eid = new_id("export-")
    folder(data_dir, eid).mkdir(parents=True)
    conn.execute(exports.insert().values(
        id=eid, project_id=project, seq=next_seq(conn, exports), model=model, format=fmt, quantization=quantization,
        status="queued", progress=0.0, stage="queued", created_at=int(time.time()), attempts=0))
    return get(conn, project, eid)


def get(conn: sa.Connection, project: str, export_id: str) -> dict:
    """The export object of `project`'s export `export_id`; NotFound otherwise."""
    row = None
    if _ID.fullmatch(export_id or ""):
        row = conn.execute(sa.select(exports).where(exports.c.id == export_id,
                                                    exports.c.project_id == project)).first()
    if row is None:
        raise NotFound(f"No export with id '{(export_id or '')[:100]}'.", param="export_id", code="export_not_found")
    return public(row)


def listed(conn: sa.Connection, project: str, model: str | None = None) -> list[dict]:
    """`project`'s exports (of `model`), newest first."""
    q = sa.select(exports).where(exports.c.project_id == project)
    if model is not None:
        q = q.where(exports.c.model == model)
    return [public(r) for r in conn.execute(q.order_by(exports.c.created_at.desc(), exports.c.id.desc()))]


def delete(conn: sa.Connection, data_dir: Path, export_id: str) -> None:
    """The row and the folder of a finished export."""
    conn.execute(exports.delete().where(exports.c.id == export_id, exports.c.status.in_(("succeeded", "failed"))))
    shutil.rmtree(folder(data_dir, export_id), ignore_errors=True)


def import_files(settings: Settings, db: sa.Engine) -> int:
    """Import the `export.json` records older versions wrote into the table (each once); one that
    was queued or running belonged to a process that is gone and becomes failed (`interrupted`).
    Returns how many were imported."""
    root = settings.layout.exports
    recs = []
    for f in sorted(root.glob("export-*/export.json")) if root.exists() else []:
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            log.warning("export record %s is unreadable; not imported", f)
            continue
        if isinstance(rec, dict) and rec.get("id") == f.parent.name and rec.get("project_id"):
            recs.append(rec)
    n = 0
    for rec in sorted(recs, key=lambda r: (r.get("created_at") or 0, r["id"])):
        interrupted = rec.get("status") not in ("succeeded", "failed")
        try:
            with db.begin() as conn:
                if conn.execute(sa.select(exports.c.id).where(exports.c.id == rec["id"])).first():
                    continue
                conn.execute(exports.insert().values(
                    id=rec["id"], project_id=rec["project_id"], seq=next_seq(conn, exports), model=rec["model"],
                    format=rec["format"], quantization=rec.get("quantization"),
                    status="failed" if interrupted else rec["status"], progress=float(rec.get("progress") or 0.0),
                    stage=rec.get("stage") or "", created_at=int(rec.get("created_at") or 0),
                    finished_at=rec.get("finished_at"), bytes=rec.get("bytes"), filename=rec.get("filename"),
                    error=INTERRUPTED if interrupted else rec.get("error"), attempts=1))
            n += 1
        except sa.exc.IntegrityError:  # another process imported it meanwhile
            continue
    if n:
        log.info("imported %d export records from %s", n, root)
    return n


# -- the worker loop -----------------------------------------------------------------------------

class ExportRunner:
    """Claims and runs exports, one at a time, under `worker_id`."""

    def __init__(self, settings: Settings, db: sa.Engine, worker_id: str):
        self.settings, self.db, self.worker_id = settings, db, worker_id
        self._stop = threading.Event()

    def run_forever(self, stop_event: threading.Event) -> None:
        self._stop = stop_event
        lease.poll_until_stopped(self.run_once, stop_event, self.settings.worker_poll_seconds, log)

    def claim(self) -> dict | None:
        """The oldest queued export, or one whose worker's lease expired; its row, or None."""
        stale = time.time() - self.settings.lease_seconds
        with self.db.begin() as conn:
            eid = lease.claim_first(conn, LEASE, self.worker_id, order_by=[exports.c.seq], take_over_before=stale,
                                    values={"attempts": exports.c.attempts + 1, "progress": 0.0, "stage": "starting"})
            return None if eid is None else dict(conn.execute(sa.select(exports).where(exports.c.id == eid))
                                                 .mappings().one())

    def run_once(self) -> str | None:
        rec = self.claim()
        if rec is None:
            return None
        if rec["attempts"] > MAX_ATTEMPTS:
            log.warning("export %s: its worker was lost %d times; failing it", rec["id"], rec["attempts"] - 1)
            self._finish(rec["id"], "failed", stage="failed", error=INTERRUPTED)
            return rec["id"]
        beat = lease.Heartbeat(self.db, LEASE, rec["id"], self.worker_id, self.settings.heartbeat_seconds, log=log)
        try:
            with beat:
                fault_point("export-start", rec["attempts"])  # test-only, inert by default
                self._run(rec, beat)
        except Stopped:
            if self._stop.is_set():
                with self.db.begin() as conn:  # given back, not lost: this attempt does not count
                    lease.release(conn, LEASE, rec["id"], self.worker_id,
                                  {"progress": 0.0, "stage": "queued", "attempts": exports.c.attempts - 1})
            log.info("export %s stopped (%s)", rec["id"], "worker stopping" if self._stop.is_set() else "taken away")
        except Exception as e:  # noqa: BLE001 - the export's error is its result, shown to the user
            message = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            self._finish(rec["id"], "failed", stage="failed",
                         error={"code": getattr(e, "code", None) or "export_failed", "message": str(message)[:2000]})
        return rec["id"]

    def _finish(self, export_id: str, status: str, **values) -> bool:
        with self.db.begin() as conn:
            return lease.finish(conn, LEASE, export_id, self.worker_id, status,
                                {"finished_at": int(time.time()), **lease.freed(), **values})

    def _write(self, export_id: str, beat: lease.Heartbeat, **values) -> None:
        """Progress, fenced on the lease; Stopped when it is gone or the worker is stopping."""
        if self._stop.is_set() or beat.lost.is_set():
            raise Stopped()
        with self.db.begin() as conn:
            if not lease.heartbeat(conn, LEASE, export_id, self.worker_id, values):
                raise Stopped()

    def _run(self, rec: dict, beat: lease.Heartbeat) -> None:
        from openft.serve.export import export_model

        eid = rec["id"]
        with self.db.connect() as conn:
            resolved = resolve_model(self.settings, conn, rec["project_id"], rec["model"])
        out = folder(self.settings.data_dir, eid) / "out"
        shutil.rmtree(out, ignore_errors=True)  # an earlier, killed attempt's output
        types = (rec["quantization"],) if rec["format"] == "gguf" else ("f16", "q8_0")
        export_model(self.settings, resolved.base_model, resolved.adapter_path, resolved.full_model_path,
                     rec["format"], out, gguf_types=types,
                     progress=lambda f, stage: self._write(eid, beat, progress=round(min(f, 0.99), 3), stage=stage))
        self._write(eid, beat, progress=0.99, stage="packaging")
        content = _package(rec, folder(self.settings.data_dir, eid), out)
        if not self._finish(eid, "succeeded", progress=1.0, stage="done", bytes=content.stat().st_size,
                            filename=content.name):
            log.warning("export %s finished after its lease was lost; the new holder's result stands", eid)


def _package(rec: dict, root: Path, out: Path) -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", rec["model"]).strip("-.") or "model"
    if rec["format"] == "gguf":
        dest = root / f"{stem}-{rec['quantization']}.gguf"
        os.replace(out / f"model-{rec['quantization']}.gguf", dest)
        return dest
    dest = root / f"{stem}-{rec['format']}.tar"
    tmp = root / f".{dest.name}.tmp"
    with tarfile.open(tmp, "w") as tar:
        for f in sorted(out.rglob("*")):
            if f.is_file() and not any(p.startswith(".") for p in f.relative_to(out).parts):
                tar.add(f, arcname=f"{stem}/{f.relative_to(out)}")
    os.replace(tmp, dest)  # a reader never sees half a tar
    shutil.rmtree(out, ignore_errors=True)
    return dest


def start_thread(settings: Settings, db: sa.Engine, worker_id: str, stop_event: threading.Event) -> threading.Thread:
    """The export loop in a daemon thread beside the job loop; it ends when `stop_event` is set."""
    t = threading.Thread(target=ExportRunner(settings, db, worker_id).run_forever, args=(stop_event,),
                         name="openft-exports", daemon=True)
    t.start()
    return t
