"""`/v1/models`: base models from the registry plus the project's fine-tuned models.

Ids contain colons and may contain slashes (`ft:...`, hub ids `org/name`), hence the path
converter. Base model objects carry openft's extension fields `context_length`, `parameters`
and `size_bytes` (openft.models.metadata; None where unknown), and every model object retrieved
by id, like every base model listed, carries `serving`: whether the model it is served from is
loaded (`state`: not_loaded | loading | ready | failed; while loading, the stage and seconds so
far: openft.serve.loading), so the dashboard can show a model warming up. The operator's aliases
(OPENFT_MODEL_ALIASES) are listed as model objects too, with `alias_for` naming the model each
points to; retrieving an alias answers its own id with `alias_for`. Deleting a fine-tuned model
marks it deleted and evicts it from the serving engine.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from fastapi import APIRouter

from openft.api.deps import ProjectDep, StateDep
from openft.api.schemas import model_object
from openft.errors import InvalidRequest
from openft.models.aliases import aliases
from openft.store.db import models
from openft.store.resolve import resolve_model

router = APIRouter()


def _mtime(path) -> int | None:
    try:
        return int(Path(path).stat().st_mtime)
    except (OSError, TypeError, ValueError):
        return None


def _base_created(settings, model_id: str, base=None) -> int:
    """A base model's `created`: when its source appeared on this machine, stable across calls.

    gguf-package: the packaged GGUF file; local: the registered folder's config.json; hub:
    the downloaded config.json when present; the tiny test model (and a hub model not yet
    downloaded): the registry module that defines it."""
    from openft.models import get_base_model, registry

    try:
        base = base or get_base_model(settings, model_id)
    except Exception:
        base = None
    found = None
    if base is not None and base.source == "gguf-package":
        found = _mtime(base.location)
    elif base is not None and base.source == "local":
        found = _mtime(Path(base.location) / "config.json")
    elif base is not None and base.source == "hub":
        found = _mtime(settings.resolved_model_cache_dir() / model_id / "config.json")
    return found or _mtime(registry.__file__) or 0


@router.get("/models")
def list_models(state: StateDep, project: ProjectDep):
    from openft.models import list_base_models
    from openft.models.metadata import base_metadata

    data = [{**model_object(m.id, _base_created(state.settings, m.id, m), "system"), **base_metadata(state.settings, m),
             "serving": _serving(state, m.id)} for m in list_base_models(state.settings)]
    with state.db.connect() as conn:
        rows = conn.execute(sa.select(models).where(models.c.project_id == project, models.c.deleted == sa.false())
                            .order_by(models.c.created_at.desc())).all()
    data += [model_object(r.id, r.created_at, r.owned_by) for r in rows]
    data += [{**model_object(src, _base_created(state.settings, dst), "system"), "alias_for": dst}
             for src, dst in aliases(state.settings)]
    return {"object": "list", "data": data}


@router.get("/models/{model:path}")
def retrieve_model(model: str, state: StateDep, project: ProjectDep):
    with state.db.connect() as conn:
        m = resolve_model(state.settings, conn, project, model)
    created = m.created_at if m.created_at is not None else _base_created(state.settings, m.id)
    if m.id != model:  # an alias (openft.models.aliases): its own id, and the model it points to
        return {**model_object(model, created, m.owned_by or "system"), "alias_for": m.id}
    if m.kind == "base":  # openft extension fields: context_length, parameters, size_bytes
        from openft.models import get_base_model
        from openft.models.metadata import base_metadata

        meta = base_metadata(state.settings, get_base_model(state.settings, m.id))
        return {**model_object(m.id, created, "system"), **meta, "serving": _serving(state, m.base_model)}
    return {**model_object(m.id, created, m.owned_by or "system"),
            "serving": _serving(state, m.base_model, m.full_model_path)}


def _serving(state, base_model: str, full_model_path: str | None = None) -> dict:
    """Whether the weights this model is served from are loaded, loading (stage, seconds) or failed."""
    from openft.serve.types import GenerationRequest

    return state.loads.view(GenerationRequest(base_model=base_model, full_model_path=full_model_path))


@router.delete("/models/{model:path}")
def delete_model(model: str, state: StateDep, project: ProjectDep):
    with state.db.begin() as conn:
        m = resolve_model(state.settings, conn, project, model)
        if m.id != model:
            raise InvalidRequest(f"'{model}' is an alias of '{m.id}' set by the server's operator "
                                 "(OPENFT_MODEL_ALIASES); delete the model itself.", param="model",
                                 code="invalid_value")
        if m.kind != "fine-tuned":
            raise InvalidRequest(f"Only fine-tuned models can be deleted; '{model}' is a {m.kind} model.",
                                 param="model", code="invalid_value")
        conn.execute(models.update().where(models.c.id == model, models.c.project_id == project)
                     .values(deleted=True))
    engine = state.engine_if_started()
    if engine is not None:
        engine.evict(model)
    return {"id": model, "object": "model", "deleted": True}
