"""Model ids -> weights: base registry ids, fine-tuned `ft:` ids and their checkpoints.

`resolve_model` answers "what does the engine load for this id, in this project?": an id that
names no model may be an operator's alias (OPENFT_MODEL_ALIASES, openft.models.aliases), resolved
to the model it points to; anything else the project cannot see raises NotFound (param "model")
whose message lists the models it can use (`available_models`). Knows nothing about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

from openft.config import Settings
from openft.errors import NotFound
from openft.store.db import checkpoints, jobs, models


@dataclass(frozen=True)
class ResolvedModel:
    id: str
    kind: Literal["base", "fine-tuned", "checkpoint"]
    base_model: str                      # registry id of the base weights
    adapter_path: str | None = None      # LoRA adapter folder (fine-tuned / checkpoint)
    full_model_path: str | None = None   # full fine-tune folder, loaded instead of the base
    created_at: int | None = None
    owned_by: str | None = None
    job_id: str | None = None


def model_not_found(model: str) -> NotFound:
    from openft.models.registry import not_found

    return not_found(model)


def _checkpoint_not_found(conn: sa.Connection, project_id: str, model: str) -> NotFound:
    """A checkpoint the job announced and later pruned says so, and names the ones that remain."""
    job_id = conn.execute(sa.select(checkpoints.c.job_id).where(
        checkpoints.c.fine_tuned_model_checkpoint == model, checkpoints.c.project_id == project_id,
        checkpoints.c.deleted == sa.true())).scalar()
    if job_id is None:
        return model_not_found(model)
    left = conn.execute(sa.select(checkpoints.c.fine_tuned_model_checkpoint).where(
        checkpoints.c.job_id == job_id, checkpoints.c.deleted == sa.false())
        .order_by(checkpoints.c.step_number)).scalars().all()
    return NotFound(f"The checkpoint `{model}` was pruned: job {job_id} keeps only its newest checkpoints "
                    f"(hyperparameter keep_checkpoints, default 3). "
                    + (f"Checkpoints that still exist: {', '.join(left)}." if left else "No checkpoint of it remains."),
                    param="model", code="model_not_found")


def is_checkpoint_id(model: str) -> bool:
    return model.startswith("ft:") and ":ckpt-step-" in model


def _is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").exists()


AVAILABLE = " Available models:"
"""Where a not-found message's list of the available models starts (routes that rephrase it keep it)."""


def available_models(settings: Settings, conn: sa.Connection, project_id: str, limit: int = 20) -> str:
    """One sentence naming the models a project can use (base models, aliases, its newest fine-tuned
    models, at most `limit` names in all), for a message about a model that does not exist."""
    from openft.models import list_base_models
    from openft.models.aliases import aliases

    names = [m.id for m in list_base_models(settings)]
    names += [f"{src} (alias of {dst})" for src, dst in aliases(settings)]
    names += conn.execute(sa.select(models.c.id).where(models.c.project_id == project_id, models.c.deleted == sa.false())
                          .order_by(models.c.created_at.desc()).limit(limit + 1)).scalars().all()
    more = ", and more (GET /v1/models lists them all)" if len(names) > limit else ""
    return f"{AVAILABLE} {', '.join(names[:limit])}{more}."


def resolve_model(settings: Settings, conn: sa.Connection, project_id: str, model: str) -> ResolvedModel:
    """The model `model` names in the project, directly or through an operator's alias; NotFound
    (param "model") listing the available models otherwise (a pruned checkpoint's message aside)."""
    from openft.models.aliases import alias_target

    try:
        return _resolve(settings, conn, project_id, model)
    except NotFound as e:
        if is_checkpoint_id(model) or not model:
            raise
        target = alias_target(settings, model)
        if target is None or target == model:
            raise NotFound(e.message + available_models(settings, conn, project_id), param="model",
                           code=e.code) from None
    try:
        return _resolve(settings, conn, project_id, target)
    except NotFound as e:
        raise NotFound(f"The model `{model[:200]}` is an alias of `{target}`, which is not available here "
                       f"({e.message}).{available_models(settings, conn, project_id)}", param="model",
                       code=e.code) from None


def _resolve(settings: Settings, conn: sa.Connection, project_id: str, model: str) -> ResolvedModel:
    if not model:
        raise model_not_found(model)
    if is_checkpoint_id(model):
        row = conn.execute(
            sa.select(checkpoints.c.path, checkpoints.c.created_at, checkpoints.c.job_id, jobs.c.base_model)
            .select_from(checkpoints.join(jobs, jobs.c.id == checkpoints.c.job_id))
            .where(checkpoints.c.fine_tuned_model_checkpoint == model, checkpoints.c.project_id == project_id,
                   checkpoints.c.deleted == sa.false())).first()
        if row is None:
            raise _checkpoint_not_found(conn, project_id, model)
        adapter = row.path if _is_adapter(row.path) else None
        return ResolvedModel(model, "checkpoint", row.base_model, adapter, None if adapter else row.path,
                             row.created_at, settings.organization, row.job_id)
    if model.startswith("ft:"):
        row = conn.execute(sa.select(models).where(models.c.id == model, models.c.project_id == project_id,
                                                   models.c.deleted == sa.false())).first()
        if row is None:
            raise model_not_found(model)
        full = row.method == "full"
        return ResolvedModel(model, "fine-tuned", row.base_model, None if full else row.path,
                             row.path if full else None, row.created_at, row.owned_by, row.job_id)
    # A base model: a registry id only (built-in, registered, or a hub id where the operator allows
    # the hub); never a path, and NotFound in the same words whether or not such a path exists.
    from openft.models import get_base_model

    base = get_base_model(settings, model)
    return ResolvedModel(base.id, "base", base.id, owned_by="system")
