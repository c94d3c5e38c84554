"""Model exports (an openft extension): write a model as a merged HF folder, GGUF or its PEFT
adapter in the background and download the result.

- `POST /v1/models/{model}/exports` `{format: merged|gguf|peft, quantization: f16|q8_0 (gguf only)}`
  -> an export object `{id, object: "model.export", model, format, quantization, status, progress,
  stage, created_at, finished_at, bytes, filename, error}`; status queued -> running ->
  succeeded | failed.
- `GET /v1/exports[?model=]`, `GET /v1/exports/{id}`, `GET /v1/exports/{id}/content` (a tar of
  the folder for merged/peft, the .gguf file for gguf), `DELETE /v1/exports/{id}`.

Each export is a folder `<data_dir>/exports/<id>/` holding `export.json` (the object plus its
project) and the result; one daemon thread per server process runs them one at a time
(`openft.serve.export` does the work), so the API never waits on one and a stopping server does
not wait on it either. Servers may share a data folder (PostgreSQL, several processes or hosts):
the process that owns an export writes `heartbeat_at` into its record every HEARTBEAT_SECONDS,
and any server reads a queued or running export of another process as failed (`interrupted`)
only once that process has stopped (same host: its pid is gone) or its heartbeat is older than
LEASE_SECONDS. Knows nothing about how weights are merged or converted.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from openft.api.deps import AppState, get_project, get_state
from openft.api.schemas import Strict
from openft.errors import InvalidRequest, NotFound
from openft.ids import new_id
from openft.store.resolve import resolve_model

router = APIRouter()
log = logging.getLogger(__name__)

FORMATS = ("merged", "gguf", "peft")
QUANTIZATIONS = ("f16", "q8_0")
_ID = re.compile(r"^export-[A-Za-z0-9]{24}$")
_PUBLIC = ("id", "object", "model", "format", "quantization", "status", "progress", "stage", "created_at",
           "finished_at", "bytes", "filename", "error")
HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 60.0
HOST = socket.gethostname()


class ExportCreate(Strict):
    format: Any = None
    quantization: Any = None


class Exports:
    """The exports of one data folder: their records on disk and the one thread that runs them."""

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.Lock()
        self.todo: queue.Queue = queue.Queue()
        self.owned: set[str] = set()    # this process's queued and running exports (it heartbeats them)
        threading.Thread(target=self._work, name="openft-export", daemon=True).start()
        threading.Thread(target=self._beat, name="openft-export-heartbeat", daemon=True).start()

    def _work(self) -> None:
        while True:
            self.run(*self.todo.get())

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            for eid in list(self.owned):
                try:
                    self.update(eid, heartbeat_at=time.time())
                except Exception:  # a missed beat only risks a late "interrupted"
                    log.exception("export %s: heartbeat not written", eid)

    def submit(self, settings, rec: dict, resolved) -> None:
        self.owned.add(rec["id"])
        self.todo.put((settings, rec, resolved))

    def folder(self, export_id: str) -> Path:
        return self.root / export_id

    def write(self, rec: dict) -> None:
        f = self.folder(rec["id"]) / "export.json"
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, f)

    def update(self, export_id: str, **values) -> dict:
        with self.lock:
            rec = self.read_raw(export_id)
            rec.update(values)
            self.write(rec)
            return rec

    def read_raw(self, export_id: str) -> dict | None:
        try:
            return json.loads((self.folder(export_id) / "export.json").read_text())
        except (OSError, ValueError):
            return None

    def get(self, project: str, export_id: str) -> dict:
        rec = self.read_raw(export_id) if _ID.fullmatch(export_id or "") else None
        if rec is None or rec.get("project_id") != project:
            raise NotFound(f"No export with id '{export_id[:100]}'.", param="export_id", code="export_not_found")
        if rec["status"] in ("queued", "running") and not _owner_alive(rec):
            rec = {**rec, "status": "failed", "error": {"code": "interrupted",
                                                        "message": "The server stopped while this export ran."}}
        return rec

    def all(self, project: str) -> list[dict]:
        out = []
        for d in self.root.glob("export-*") if self.root.exists() else []:
            if (rec := self.read_raw(d.name)) is not None and rec.get("project_id") == project:
                out.append(self.get(project, d.name))
        return sorted(out, key=lambda r: (r["created_at"], r["id"]), reverse=True)

    def run(self, settings, rec: dict, resolved) -> None:
        eid = rec["id"]
        out = self.folder(eid) / "out"

        def progress(fraction: float, stage: str) -> None:
            self.update(eid, progress=round(min(fraction, 0.99), 3), stage=stage)

        try:
            from openft.serve.export import export_model

            self.update(eid, status="running", stage="starting")
            types = (rec["quantization"],) if rec["format"] == "gguf" else ("f16", "q8_0")
            export_model(settings, resolved.base_model, resolved.adapter_path, resolved.full_model_path,
                         rec["format"], out, gguf_types=types, progress=progress)
            self.update(eid, progress=0.99, stage="packaging")
            content = self._package(rec, out)
            self.update(eid, status="succeeded", progress=1.0, stage="done", finished_at=int(time.time()),
                        bytes=content.stat().st_size, filename=content.name)
        except Exception as e:  # noqa: BLE001 - the export's error is its result, shown to the user
            message = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            self.update(eid, status="failed", finished_at=int(time.time()), stage="failed",
                        error={"code": getattr(e, "code", None) or "export_failed", "message": str(message)[:2000]})
        finally:
            self.owned.discard(eid)

    def _package(self, rec: dict, out: Path) -> Path:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", rec["model"]).strip("-.") or "model"
        if rec["format"] == "gguf":
            gguf = out / f"model-{rec['quantization']}.gguf"
            dest = self.folder(rec["id"]) / f"{stem}-{rec['quantization']}.gguf"
            os.replace(gguf, dest)
            return dest
        dest = self.folder(rec["id"]) / f"{stem}-{rec['format']}.tar"
        with tarfile.open(dest, "w") as tar:
            for f in sorted(out.rglob("*")):
                if f.is_file() and not any(p.startswith(".") for p in f.relative_to(out).parts):
                    tar.add(f, arcname=f"{stem}/{f.relative_to(out)}")
        shutil.rmtree(out, ignore_errors=True)
        return dest


def _owner_alive(rec: dict) -> bool:
    """Is the process that queued `rec` still working on it? This one: yes. Another on this host:
    while its pid exists and it heartbeats. Another host: while it heartbeats."""
    pid, host = rec.get("pid"), rec.get("host", HOST)
    if host == HOST and pid == os.getpid():
        return True
    if time.time() - float(rec.get("heartbeat_at") or 0) > LEASE_SECONDS:
        return False
    if host != HOST:
        return True
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)                  # signal 0: does the process exist?
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:              # it exists, owned by another user
        return True
    return True


_registry: dict[str, Exports] = {}
_registry_lock = threading.Lock()


def get_exports(state: AppState = Depends(get_state)) -> Exports:
    root = (Path(state.settings.data_dir) / "exports").resolve()
    with _registry_lock:
        if str(root) not in _registry:
            _registry[str(root)] = Exports(root)
        return _registry[str(root)]


def public(rec: dict) -> dict:
    return {k: rec.get(k) for k in _PUBLIC}


def _check(body: ExportCreate, resolved) -> tuple[str, str | None]:
    fmt, q = body.format, body.quantization
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}.", param="format",
                             code="invalid_value")
    if fmt == "gguf":
        q = "q8_0" if q is None else q
        if q not in QUANTIZATIONS:
            raise InvalidRequest(f"quantization must be one of {', '.join(QUANTIZATIONS)} for GGUF, not {q!r}.",
                                 param="quantization", code="invalid_value")
    elif q is not None:
        raise InvalidRequest(f"quantization applies to the gguf format only; {fmt} keeps the weights as they are.",
                             param="quantization", code="invalid_value")
    if fmt == "peft" and not resolved.adapter_path:
        raise InvalidRequest(f"Format 'peft' needs a LoRA fine-tuned model; '{resolved.id}' has none "
                             "(export it as merged).", param="format", code="invalid_value")
    return fmt, q


@router.post("/models/{model:path}/exports")
def create_export(model: str, body: ExportCreate, state: AppState = Depends(get_state),
                  project: str = Depends(get_project), exports: Exports = Depends(get_exports)):
    with state.db.connect() as conn:
        resolved = resolve_model(state.settings, conn, project, model)
    fmt, q = _check(body, resolved)
    rec = {"id": new_id("export-"), "object": "model.export", "model": resolved.id, "format": fmt,
           "quantization": q, "status": "queued", "progress": 0.0, "stage": "queued",
           "created_at": int(time.time()), "finished_at": None, "bytes": None, "filename": None, "error": None,
           "project_id": project, "pid": os.getpid(), "host": HOST, "heartbeat_at": time.time()}
    exports.folder(rec["id"]).mkdir(parents=True)
    exports.write(rec)
    exports.submit(state.settings, rec, resolved)
    return public(rec)


@router.get("/exports")
def list_exports(model: str | None = Query(None, max_length=512), project: str = Depends(get_project),
                 exports: Exports = Depends(get_exports)):
    data = [public(r) for r in exports.all(project) if model is None or r["model"] == model]
    return {"object": "list", "data": data, "has_more": False}


@router.get("/exports/{export_id}")
def retrieve_export(export_id: str, project: str = Depends(get_project), exports: Exports = Depends(get_exports)):
    return public(exports.get(project, export_id))


@router.get("/exports/{export_id}/content")
def export_content(export_id: str, project: str = Depends(get_project), exports: Exports = Depends(get_exports)):
    rec = exports.get(project, export_id)
    if rec["status"] != "succeeded":
        raise InvalidRequest(f"Export {export_id} is {rec['status']}; its content exists once it has succeeded.",
                             param="export_id", code="export_not_ready")
    path = exports.folder(export_id) / rec["filename"]
    media = "application/octet-stream" if rec["format"] == "gguf" else "application/x-tar"
    return FileResponse(path, media_type=media, filename=rec["filename"])


@router.delete("/exports/{export_id}")
def delete_export(export_id: str, project: str = Depends(get_project), exports: Exports = Depends(get_exports)):
    rec = exports.get(project, export_id)
    if rec["status"] in ("queued", "running"):
        raise InvalidRequest(f"Export {export_id} is {rec['status']}; delete it once it has finished.",
                             param="export_id", code="export_running")
    shutil.rmtree(exports.folder(export_id), ignore_errors=True)
    return {"id": export_id, "object": "model.export.deleted", "deleted": True}
