"""Model exports (an openft extension): write a model as a merged HF folder, GGUF or its PEFT
adapter in the background and download the result.

- `POST /v1/models/{model}/exports` `{format: merged|gguf|peft, quantization: f16|q8_0 (gguf only)}`
  -> an export object `{id, object: "model.export", model, format, quantization, status, progress,
  stage, created_at, finished_at, bytes, filename, error}`; status queued -> running ->
  succeeded | failed.
- `GET /v1/exports[?model=]`, `GET /v1/exports/{id}`, `GET /v1/exports/{id}/content` (a tar of
  the folder for merged/peft, the .gguf file for gguf), `DELETE /v1/exports/{id}`.

Thin: it checks the request, inserts the export's row and reads rows (openft.jobs.exports); the
worker runs the export under a lease, so the API never waits on one. Knows nothing about how
weights are merged or converted, nor about who runs them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from openft.api.deps import ProjectDep, StateDep
from openft.api.schemas import Strict
from openft.errors import InvalidRequest
from openft.jobs import exports
from openft.store.resolve import resolve_model

router = APIRouter()


class ExportCreate(Strict):
    format: Any = None
    quantization: Any = None


def _check(body: ExportCreate, resolved) -> tuple[str, str | None]:
    fmt, q = body.format, body.quantization
    if fmt not in exports.FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(exports.FORMATS)}, not {fmt!r}.", param="format",
                             code="invalid_value")
    if fmt == "gguf":
        q = "q8_0" if q is None else q
        if q not in exports.QUANTIZATIONS:
            raise InvalidRequest(f"quantization must be one of {', '.join(exports.QUANTIZATIONS)} for GGUF, "
                                 f"not {q!r}.", param="quantization", code="invalid_value")
    elif q is not None:
        raise InvalidRequest(f"quantization applies to the gguf format only; {fmt} keeps the weights as they are.",
                             param="quantization", code="invalid_value")
    if fmt == "peft" and not resolved.adapter_path:
        raise InvalidRequest(f"Format 'peft' needs a LoRA fine-tuned model; '{resolved.id}' has none "
                             "(export it as merged).", param="format", code="invalid_value")
    return fmt, q


@router.post("/models/{model:path}/exports")
def create_export(model: str, body: ExportCreate, state: StateDep,
                  project: ProjectDep):
    with state.db.connect() as conn:
        resolved = resolve_model(state.settings, conn, project, model)
    fmt, q = _check(body, resolved)
    with state.db.begin() as conn:
        return exports.create(conn, state.settings.data_dir, project, resolved.id, fmt, q)


@router.get("/exports")
def list_exports(state: StateDep, project: ProjectDep, model: str | None = Query(None, max_length=512)):
    with state.db.connect() as conn:
        data = exports.listed(conn, project, model)
    return {"object": "list", "data": data, "has_more": False}


@router.get("/exports/{export_id}")
def retrieve_export(export_id: str, state: StateDep, project: ProjectDep):
    with state.db.connect() as conn:
        return exports.get(conn, project, export_id)


@router.get("/exports/{export_id}/content")
def export_content(export_id: str, state: StateDep, project: ProjectDep):
    with state.db.connect() as conn:
        rec = exports.get(conn, project, export_id)
    if rec["status"] != "succeeded":
        raise InvalidRequest(f"Export {export_id} is {rec['status']}; its content exists once it has succeeded.",
                             param="export_id", code="export_not_ready")
    path = exports.folder(state.settings.data_dir, export_id) / rec["filename"]
    media = "application/octet-stream" if rec["format"] == "gguf" else "application/x-tar"
    return FileResponse(path, media_type=media, filename=rec["filename"])


@router.delete("/exports/{export_id}")
def delete_export(export_id: str, state: StateDep, project: ProjectDep):
    with state.db.begin() as conn:
        rec = exports.get(conn, project, export_id)
        if rec["status"] in ("queued", "running"):
            raise InvalidRequest(f"Export {export_id} is {rec['status']}; delete it once it has finished.",
                                 param="export_id", code="export_running")
        exports.delete(conn, state.settings.data_dir, export_id)
    return {"id": export_id, "object": "model.export.deleted", "deleted": True}
