"""OpenAI-shaped request models (pydantic, `extra="forbid"`) and response renderers.

Requests are validated here with OpenAI's limits and the offending parameter named; rows from
the store are rendered into the exact objects the `openai` SDK parses (`fine_tuning.job`,
`file`, `model`, cursor pages). Knows nothing about HTTP routing or the database engine.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from openft import vocab
from openft.config import Settings
from openft.names import plain
from openft.train import rules
from openft.train.metrics import reported as reported_metrics

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
HYPERPARAMETER_KEYS = tuple(sorted(vocab.HYPERPARAMETERS))  # as OpenAI lists them in a job object
_SUFFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _auto_int(lo: int, hi: int):
    def check(v: Any) -> Any:
        if v == "auto":
            return v
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v))
                or int(v) != v):  # 1e400 parses as inf, and int(inf) raises OverflowError
            raise ValueError(f'must be "auto" or an integer between {lo} and {hi}')
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return int(v)
    return PlainValidator(check, json_schema_input_type=Any), WithJsonSchema(
        {"anyOf": [{"type": "string", "enum": ["auto"]}, {"type": "integer", "minimum": lo, "maximum": hi}]})


def _auto_float(lo: float, hi: float):
    def check(v: Any) -> Any:
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f'must be "auto" or a number greater than {lo} and at most {hi}')
        if not lo < v <= hi:
            raise ValueError(f"must be greater than {lo} and at most {hi}")
        return float(v)
    return PlainValidator(check, json_schema_input_type=Any), WithJsonSchema(
        {"anyOf": [{"type": "string", "enum": ["auto"]},
                   {"type": "number", "exclusiveMinimum": lo, "maximum": hi}]})


def lone_surrogate(v: Any, path: str = "") -> str | None:
    """Where in `v` (a JSON value) a string holds a lone UTF-16 surrogate ("\\ud800" in JSON parses
    to one): such text cannot be encoded as UTF-8, so no tokenizer, database or response can take
    it. Returns the path below `v` ("" for `v` itself), or None when the text is clean."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(v, dict):
        for k, x in v.items():
            found = lone_surrogate(k, path) if isinstance(k, str) else None
            found = found if found is not None else lone_surrogate(x, f"{path}.{k}")
            if found is not None:
                return found
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            found = lone_surrogate(x, f"{path}[{i}]")
            if found is not None:
                return found
    return None


class Strict(BaseModel):
    """A request object: unknown fields are refused and every string must be valid Unicode."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, BaseModel):
            return v  # checked by its own validators
        where = lone_surrogate(v)
        if where is not None:
            raise ValueError(f"contains a lone surrogate{' at ' + where.lstrip('.') if where else ''} "
                             "(not valid Unicode text)")
        return v


class StreamOptions(Strict):
    """`stream_options` of chat and legacy completions."""
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class SupervisedHyperparameters(BaseModel):
    """OpenAI's three hyperparameters, plus openft's training options (see `train_options`)."""

    model_config = ConfigDict(extra="allow")

    batch_size: Annotated[Any, *_auto_int(1, 256)] = "auto"
    learning_rate_multiplier: Annotated[Any, *_auto_float(0.0, 10.0)] = "auto"
    n_epochs: Annotated[Any, *_auto_int(1, 50)] = "auto"


class DpoHyperparameters(SupervisedHyperparameters):
    beta: Annotated[Any, *_auto_float(0.0, 2.0)] = "auto"


class SupervisedMethod(Strict):
    hyperparameters: SupervisedHyperparameters = Field(default_factory=SupervisedHyperparameters)


class DpoMethod(Strict):
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class Method(Strict):
    type: Literal[vocab.OPENAI_METHODS]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: dict | None = None


class WandbIntegration(Strict):
    project: str
    entity: str | None = None
    name: str | None = None
    tags: list[str] | None = None


class TensorboardIntegration(Strict):
    """openft extension: no options; the event files go to the job folder's tensorboard/."""


class Integration(Strict):
    type: Literal["wandb", "tensorboard"]
    wandb: WandbIntegration | None = None
    tensorboard: TensorboardIntegration | None = None

    @model_validator(mode="after")
    def _one_section(self):
        if self.type == "wandb" and self.wandb is None:
            raise ValueError("a wandb integration needs its `wandb` object ({\"project\": ...})")
        other = "tensorboard" if self.type == "wandb" else "wandb"
        if getattr(self, other) is not None:
            raise ValueError(f"a {self.type} integration takes no `{other}` object")
        return self

    def stored(self) -> dict:
        """As the job object shows it: the type and its own section."""
        section = getattr(self, self.type)
        return {"type": self.type, self.type: section.model_dump() if section is not None else {}}


# TrainSpec fields a job may set beside OpenAI's three (LoRA shape, full fine-tuning, schedule...).
_NOT_OPTIONS = {*rules.RESERVED_HYPERPARAMETERS, *(k for hps in vocab.METHOD_HYPERPARAMETERS.values() for k in hps)}


def train_options() -> list[str]:
    import dataclasses

    from openft.train.spec import TrainSpec

    return sorted(f.name for f in dataclasses.fields(TrainSpec) if f.name not in _NOT_OPTIONS)


def _spec_error(e, where: str):
    from openft.errors import InvalidRequest

    return InvalidRequest(e.message, param=f"{where}.{e.param}" if e.param else where, code="invalid_value")


def check_train_options(extra: dict, where: str) -> None:
    """openft's own hyperparameters are TrainSpec fields, checked by TrainSpec.validate() now
    rather than when the job starts (types and lower bounds here; the operator's upper bounds in
    `check_job_options`); anything else is an unknown argument, as at OpenAI."""
    from openft.errors import InvalidRequest

    if not extra:
        return
    allowed = train_options()
    for key in extra:
        if key not in allowed:
            shown = key if lone_surrogate(key) is None else key.encode("utf-8", "replace").decode()
            raise InvalidRequest(f"Unrecognized request argument supplied: {shown[:100]} (hyperparameters are "
                                 f"{', '.join(HYPERPARAMETER_KEYS)}; openft also accepts {', '.join(allowed)})",
                                 param=f"{where}.{shown[:100]}", code="unknown_parameter")
    from openft.train.spec import TrainSpec

    try:
        TrainSpec(base_model="-", train_file="-", output_dir="-", **extra).validate()
    except InvalidRequest as e:
        raise _spec_error(e, where) from None
    except TypeError as e:
        raise InvalidRequest(str(e), param=where, code="invalid_value") from None


def _stored_hyperparameters(body: JobCreate, method: dict) -> tuple[dict, str]:
    """(the method's hyperparameters as stored, where the request put them: the param prefix)."""
    kind = rules.method_type(method)
    where = "hyperparameters" if body.hyperparameters is not None else f"method.{kind}.hyperparameters"
    return rules.hyperparameters(method), where


def check_classification(body: JobCreate, method: dict, valid_path) -> None:
    """compute_classification_metrics needs a validation file whose labels (last assistant
    message / completion) agree with classification_n_classes and contain the positive class."""
    from openft.errors import InvalidRequest

    hp, where = _stored_hyperparameters(body, method)
    if not hp.get("compute_classification_metrics"):
        return
    if valid_path is None:
        raise InvalidRequest("compute_classification_metrics needs a validation_file (the metrics are computed on it).",
                             param="validation_file", code="invalid_validation_file")
    from openft.eval.label_scoring import labels_of_file

    labels = labels_of_file(valid_path)
    n = hp.get("classification_n_classes")
    if len(labels) < 2 or (n is not None and n != len(labels)):
        raise InvalidRequest(f"classification_n_classes is {n}, but the validation file has {len(labels)} distinct "
                             f"labels ({', '.join(repr(x) for x in labels[:10])}).",
                             param=f"{where}.classification_n_classes", code="invalid_value")
    pos = hp.get("classification_positive_class")
    if pos is not None and (len(labels) != 2 or pos not in labels):
        raise InvalidRequest(f"classification_positive_class {pos!r} must be one of the two labels of a binary "
                             f"task; the validation file has {', '.join(repr(x) for x in labels[:10])}.",
                             param=f"{where}.classification_positive_class", code="invalid_value")


def check_job_options(settings: Settings, body: JobCreate, method: dict, base_model: str) -> None:
    """At job creation: the hyperparameters (`method` as `body.resolved_method()` made it) within
    this server's limits (OPENFT_LIMIT_*, see openft.train.spec.TrainLimits), and `target_modules`
    naming modules the base model has. Params are named where the request put them."""
    import dataclasses

    from openft.errors import InvalidRequest
    from openft.train.spec import TrainLimits, TrainSpec

    kind = rules.method_type(method)
    hp, where = _stored_hyperparameters(body, method)
    names = {f.name for f in dataclasses.fields(TrainSpec)} - {"base_model", "train_file", "output_dir"}
    spec = TrainSpec(base_model=base_model, train_file="-", output_dir="-", objective=rules.OBJECTIVES.get(kind, "sft"),
                     **{k: (tuple(v) if k == "target_modules" and isinstance(v, list) else v)
                        for k, v in hp.items() if k in names})
    try:
        spec.validate(TrainLimits.from_settings(settings))
    except InvalidRequest as e:
        if e.param and e.param not in hp:  # a default above the operator's limit (OPENFT_LIMIT_*)
            e.message += (f" ({e.param} was not given: that is openft's default, which this server's limit "
                          f"OPENFT_LIMIT_{e.param.upper()} does not allow; pass {e.param} explicitly)")
        raise _spec_error(e, where) from None
    targets = [t for t in spec.target_modules if t != "all-linear"]
    if not targets:
        return
    from openft.models.registry import module_names

    known = module_names(settings, base_model)
    if known is None:  # not on this machine yet (a hub model): checked when the job loads it
        return
    missing = [t for t in targets if not _names_module(t, known)]
    if missing:
        leaves = sorted({m.rsplit(".", 1)[-1] for m in known if not m.rsplit(".", 1)[-1].isdigit()})
        raise InvalidRequest(f"target_modules: {', '.join(repr(t) for t in missing[:5])} "
                             f"{'is not a module' if len(missing) == 1 else 'are not modules'} of {base_model}; "
                             f"its modules are named {', '.join(leaves[:40])} (or use \"all-linear\").",
                             param=f"{where}.target_modules", code="invalid_value")


def _names_module(target: str, modules: set[str]) -> bool:
    """PEFT's rule for a list entry: a module whose full name is `target` or ends in `.target`."""
    return any(m == target or m.endswith("." + target) for m in modules)


class JobCreate(Strict):
    model: str = Field(max_length=512)
    training_file: str
    validation_file: str | None = None
    hyperparameters: SupervisedHyperparameters | None = None
    method: Method | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[Integration] | None = None

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str | None) -> str | None:
        if v is not None and not _SUFFIX_RE.fullmatch(v):
            raise ValueError("must be 1 to 64 characters: letters, digits, '-' and '_'")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v):
        vocab.check_metadata(v)  # an InvalidRequest, not a ValueError: it passes pydantic by and names the pair
        return v

    def resolved_method(self) -> dict:
        """The `method` object to store: `hyperparameters` folded in, every unset value "auto"."""
        from openft.errors import InvalidRequest

        if self.method is None:
            hp = (self.hyperparameters or SupervisedHyperparameters()).model_dump()
            check_train_options({k: v for k, v in hp.items() if k not in SupervisedHyperparameters.model_fields},
                                "hyperparameters")
            return {"type": vocab.DEFAULT_METHOD, vocab.DEFAULT_METHOD: {"hyperparameters": hp}}
        m = self.method
        if m.type not in vocab.SUPPORTED_METHODS:
            raise InvalidRequest(f"Fine-tuning method '{m.type}' is not supported by openft yet; "
                                 f"supported: {', '.join(vocab.SUPPORTED_METHODS)}.", param="method.type",
                                 code="invalid_value")
        for other in vocab.OPENAI_METHODS:
            if other != m.type and getattr(m, other) is not None:
                raise InvalidRequest(f"method.{other} was given but method.type is '{m.type}'.",
                                     param=f"method.{other}", code="invalid_value")
        sub = getattr(m, m.type) or (SupervisedMethod() if m.type == vocab.SUPERVISED else DpoMethod())
        where = f"method.{m.type}.hyperparameters"
        if self.hyperparameters is not None:
            if "hyperparameters" in sub.model_fields_set:
                raise InvalidRequest("Pass hyperparameters either in method or at the top level (deprecated), "
                                     "not both.", param="hyperparameters", code="invalid_value")
            merged = {**sub.hyperparameters.model_dump(), **self.hyperparameters.model_dump()}
            sub, where = type(sub)(hyperparameters=merged), "hyperparameters"
        hp = sub.hyperparameters.model_dump()
        check_train_options({k: v for k, v in hp.items() if k not in type(sub.hyperparameters).model_fields}, where)
        return {"type": m.type, m.type: {"hyperparameters": hp}}


# ---------------------------------------------------------------- pagination and renderers


def keyset(table, cursor_row, *, descending: bool = True):
    """(WHERE after the cursor, ORDER BY) on (seq, id): `seq` can repeat when two inserts race
    (next_seq is max+1), the id breaks the tie so no row is skipped or repeated across pages."""
    import sqlalchemy as sa

    seq, rid = table.c.seq, table.c.id
    order = (seq.desc(), rid.desc()) if descending else (seq.asc(), rid.asc())
    if cursor_row is None:
        return None, order
    if descending:
        where = sa.or_(seq < cursor_row.seq, sa.and_(seq == cursor_row.seq, rid < cursor_row.id))
    else:
        where = sa.or_(seq > cursor_row.seq, sa.and_(seq == cursor_row.seq, rid > cursor_row.id))
    return where, order



def cursor_page(data: list[dict], has_more: bool) -> dict:
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


def file_object(row) -> dict:
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": row.created_at,
            "filename": plain(row.filename), "purpose": row.purpose, "status": row.status,
            "status_details": row.status_details, "expires_at": row.expires_at}


def job_hyperparameters(method: dict | None) -> dict:
    hp = rules.hyperparameters(method)
    return {k: hp.get(k, "auto") for k in HYPERPARAMETER_KEYS}


def job_object(row, settings: Settings) -> dict:
    method = row.method or {"type": vocab.DEFAULT_METHOD, vocab.DEFAULT_METHOD: {"hyperparameters": {}}}
    error = row.error
    if error is not None:
        error = {"code": error.get("code") or "error", "message": error.get("message") or "",
                 "param": error.get("param")}
    return {
        "id": row.id, "object": "fine_tuning.job", "model": row.model, "created_at": row.created_at,
        "finished_at": row.finished_at, "estimated_finish": row.estimated_finish,
        "fine_tuned_model": row.fine_tuned_model, "organization_id": settings.organization,
        "status": row.status, "hyperparameters": job_hyperparameters(method), "method": method,
        "training_file": row.training_file, "validation_file": row.validation_file,
        "result_files": list(row.result_files or []), "trained_tokens": row.trained_tokens,
        "seed": row.seed, "user_provided_suffix": row.suffix, "metadata": row.metadata,
        "suffix": row.suffix,  # openft's earlier name of user_provided_suffix, kept for existing scripts
        "integrations": row.integrations or [], "error": error,
        # openft: a pause was asked for and the runner has not paused yet (it does within one step)
        "pause_requested": row.status == "running" and getattr(row, "requested_action", None) == "pause",
    }


def event_object(row) -> dict:
    return {"id": row.id, "object": "fine_tuning.job.event", "created_at": row.created_at, "level": row.level,
            "message": row.message, "data": row.data if row.data is not None else {}, "type": row.type}


def checkpoint_object(row) -> dict:
    metrics = dict(row.metrics or {})
    metrics.setdefault("step", row.step_number)
    return {"id": row.id, "object": "fine_tuning.job.checkpoint", "created_at": row.created_at,
            "fine_tuned_model_checkpoint": row.fine_tuned_model_checkpoint, "fine_tuning_job_id": row.job_id,
            "step_number": row.step_number, "metrics": reported_metrics(metrics)}


def model_object(model_id: str, created: int, owned_by: str) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
