"""File validation of a new job: `validating_files -> queued | failed`.

`validate_job(settings, engine, job_id)` runs openft.data's checks (`validate_file`) on the
job's training and validation files and moves the job on, with OpenAI's events. A failure
names the file, line and field in `error.message`, uses the data check's code
(`invalid_n_examples`, `invalid_json`, `example_missing_assistant_message`, ...) and sets
`error.param` to `training_file` or `validation_file`.

`recover_at_start(settings, engine)` is what the server calls when it starts: it requeues
running jobs whose worker's lease expired and validates again the jobs that were left in
`validating_files` by a previous server. Status changes go through openft.jobs.state.

Knows the tables and openft.data's report; knows nothing about HTTP or training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from openft.config import Settings
from openft.data import formats as F
from openft.jobs import queue, state
from openft.store.blobs import stored_file
from openft.store.db import jobs
from openft.store.events import add_event
from openft.train import rules
from openft.vocab import DPO, SUPERVISED

log = logging.getLogger("openft.jobs")

# Data formats each fine-tuning method trains on.
METHOD_FORMATS = {SUPERVISED: (F.CHAT, F.PROMPT_COMPLETION), DPO: (F.PREFERENCE,)}
FORMAT_SHAPES = {F.CHAT: '{"messages": [...]}', F.PROMPT_COMPLETION: '{"prompt": ..., "completion": ...}',
                 F.PREFERENCE: '{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}'}
MAX_WARNING_EVENTS = 5
MIN_TRAINING_EXAMPLES = 10


@dataclass
class Failure:
    code: str
    message: str
    param: str | None


@dataclass
class Recovery:
    requeued: list[str] = field(default_factory=list)
    revalidated: dict[str, str] = field(default_factory=dict)  # job id -> new status


def tokenizer_for(settings: Settings, base_model: str):
    """(tokenizer, model folder) for token counts and length checks; (None, None) when not loadable.

    The light tokenizer (Rust `tokenizers` + the chat template, no torch) is used when the
    folder has a tokenizer.json; AutoTokenizer otherwise."""
    try:
        from openft.data.light_tokenizer import LightTokenizer
        from openft.models import materialize

        folder = materialize(settings, base_model)
        tok = LightTokenizer.load(folder)
        if tok is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(folder)
        return tok, Path(folder)
    except Exception as e:  # validation still runs every format check without it
        log.warning("no tokenizer for %s (%s); validating without token counts", base_model, e)
        return None, None


def effective_max_seq_len(model_dir: Path | None, method: dict | None) -> int | None:
    """The length the trainer truncates examples to (openft.train.rules); None without a model folder."""
    if model_dir is None:
        return None
    return rules.truncation_length(rules.model_context_length(model_dir), rules.hyperparameters(method).get("max_seq_len"))


def _check_one(settings: Settings, conn: sa.Connection, job: sa.Row, file_id: str, param: str,
               tokenizer, method_type: str, max_seq_len: int | None = None
               ) -> tuple[Failure | None, list[str], dict | None]:
    """Validate one file; returns (failure or None, warning messages, the data toolkit's estimate)."""
    found = stored_file(conn, settings.layout, file_id, job.project_id)
    kind = "training" if param == "training_file" else "validation"
    if found is None:
        return Failure("file_not_found", f"The {kind} file {file_id} does not exist (was it deleted?).", param), [], None
    row, path = found
    if not path.exists():
        return Failure("file_not_found", f"The content of the {kind} file {file_id} is missing.", param), [], None
    report = validate_for_job(path, row.filename, job.method, job.base_model, tokenizer, max_seq_len,
                              training=param == "training_file")
    warnings = [f"{kind.capitalize()} file {file_id}: {w}" for w in report.warnings]
    if not report.ok:
        first = report.errors[0]
        more = max(getattr(report, "n_errors", len(report.errors)), len(report.errors)) - 1
        message = f"The {kind} file {file_id} is invalid: {first}"
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''}, e.g. " \
                       f"{'; '.join(str(e) for e in report.errors[1:3])})"
        return Failure(first.code or "invalid_file", message, param), warnings, None
    accepted = wrong_format(report, method_type)
    if accepted:
        return Failure("invalid_file_format",
                       f"The {kind} file {file_id} ({row.filename}) is in {report.format} format (from line 1); "
                       f"fine-tuning method '{method_type}' expects {' or '.join(accepted)} examples: "
                       f"{' or '.join(FORMAT_SHAPES[f] for f in accepted)}.", param), warnings, None
    return None, warnings, report.stats.get("estimate")


def validate_for_job(path: Path, display_name: str, method: dict | None, base_model: str | None, tokenizer,
                     max_seq_len: int | None, *, training: bool):
    """The data toolkit's report of one stored file as a job of `method` on `base_model` checks it
    (the job validator, and the dashboard's report before a job exists)."""
    from openft.data.validate import validate_file

    return validate_file(path, tokenizer=tokenizer, display_name=display_name, max_seq_len=max_seq_len,
                         model=base_model, n_epochs=rules.positive_int(rules.hyperparameters(method).get("n_epochs")),
                         method=rules.method_type(method), min_examples=MIN_TRAINING_EXAMPLES if training else 1)


def wrong_format(report, method_type: str) -> tuple[str, ...] | None:
    """The formats `method_type` accepts when the file is in another one, else None."""
    accepted = METHOD_FORMATS.get(method_type)
    return accepted if accepted and report.format and report.format not in accepted else None


def estimate_message(est: dict | None) -> str | None:
    """`Training file: ... tokens per epoch ...` from openft.data's estimate, or None."""
    if not est or not est.get("tokens_per_epoch"):
        return None
    from openft.data.estimate import human_duration

    msg = (f"Training file: {est['tokens_per_epoch']} tokens per epoch, {est['n_epochs']} epoch"
           f"{'s' if est['n_epochs'] != 1 else ''}{' (auto)' if est.get('n_epochs_is_auto') else ''}")
    if est.get("estimated_seconds") is not None:
        msg += (f"; estimated training time on this machine: {human_duration(est['estimated_seconds'])} "
                f"(from {est['pace_source']})")
    return msg


def validate_job(settings: Settings, engine: sa.Engine, job_id: str) -> str | None:
    """Validate a job's files and move it to `queued` or `failed`. Returns the new status, or
    None when the job was not in `validating_files` (e.g. cancelled meanwhile)."""
    with engine.connect() as conn:
        job = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    if job is None or job.status != "validating_files":
        return None
    with engine.begin() as conn:
        msg = f"Validating training file: {job.training_file}"
        if job.validation_file:
            msg += f" and validation file: {job.validation_file}"
        add_event(conn, job_id, msg)
    method_type = rules.method_type(job.method)
    from openft.models.registry import needs_conversion

    if needs_conversion(settings, job.base_model):  # never a silent wait: say what takes the time
        with engine.begin() as conn:
            add_event(conn, job_id, f"Preparing base model {job.base_model} for its tokenizer: converted once on "
                                    "this machine (about a minute on a CPU), then kept")
    tokenizer, model_dir = tokenizer_for(settings, job.base_model)
    max_seq_len = effective_max_seq_len(model_dir, job.method) if tokenizer is not None else None
    failure, warnings, estimate = None, [], None
    with engine.connect() as conn:
        for file_id, param in ((job.training_file, "training_file"), (job.validation_file, "validation_file")):
            if not file_id:
                continue
            failure, w, est = _check_one(settings, conn, job, file_id, param, tokenizer, method_type, max_seq_len)
            warnings += w
            if param == "training_file":
                estimate = est
            if failure:
                break
    if estimate and not failure:  # this machine's pace (earlier jobs, a kept probe, else the table), never a new probe
        from openft.data.estimate import with_pace
        from openft.jobs.pace import pace_for_job

        estimate = with_pace(estimate, pace_for_job(settings, engine, job, estimate["n_examples"]))
    with engine.begin() as conn:
        for w in warnings[:MAX_WARNING_EVENTS]:
            add_event(conn, job_id, w, level="warn")
        if len(warnings) > MAX_WARNING_EVENTS:
            add_event(conn, job_id, f"... and {len(warnings) - MAX_WARNING_EVENTS} more warnings", level="warn")
        if failure:
            return "failed" if fail_validation(conn, job_id, failure.code, failure.message, failure.param) else None
        return "queued" if state.validated(conn, job_id, estimate=estimate_message(estimate)) else None


def fail_validation(conn: sa.Connection, job_id: str, code: str, message: str, param: str | None = None) -> bool:
    """validating_files -> failed; the event is the message itself (it names the file and line)."""
    return state.fail(conn, job_id, code, message, param, from_=("validating_files",), event=message)


def validation_crashed(engine: sa.Engine, job_id: str, e: Exception) -> None:
    """The validator itself raised: the job fails rather than stay in validating_files."""
    with engine.begin() as conn:
        fail_validation(conn, job_id, "server_error", f"File validation crashed: {e}")


def recover_at_start(settings: Settings, engine: sa.Engine, *, max_attempts: int = 3) -> Recovery:
    """At server start: requeue jobs whose worker's lease expired, validate leftover jobs."""
    out = Recovery()
    out.requeued = [r.job_id for r in queue.reap_expired(engine, settings.lease_seconds, max_attempts=max_attempts)]
    with engine.connect() as conn:
        pending = conn.execute(sa.select(jobs.c.id).where(jobs.c.status == "validating_files")
                               .order_by(jobs.c.created_at)).scalars().all()
    for job_id in pending:
        try:
            status = validate_job(settings, engine, job_id)
        except Exception as e:  # one broken job must not stop the server from starting
            log.exception("re-validating %s failed", job_id)
            validation_crashed(engine, job_id, e)
            status = "failed"
        if status:
            out.revalidated[job_id] = status
    return out
