"""`python -m openft.jobs.runner JOB_ID`: train one claimed job and record it in the database.

Runs in the child process the worker starts (settings from `OPENFT_*` variables). It builds a
`TrainSpec` from the job row, calls `openft.train.loop.train` with `DBHooks` (events, metrics,
progress, checkpoints, cancel/pause polling), and finishes the job: on success it registers the
fine-tuned model, stores the results CSV as a `fine-tune-results` file and marks the job
succeeded; on pause it records the checkpoint to resume from; on error it fails the job with
the error's code, message and param.

Status changes are openft.jobs.state's transitions, fenced on `status='running' AND
worker_id=<the worker that claimed it>`, so a runner whose job was cancelled, reaped or handed
to another worker changes nothing. Before training it deletes the temporary checkpoint folders
an earlier, killed run of the job left.
Knows the database and the trainer's interface; knows nothing about HTTP or the worker loop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import sqlalchemy as sa

from openft.config import Settings
from openft.errors import InvalidRequest, OpenFTError
from openft.faults import fault_point
from openft.ids import file_id as new_file_id
from openft.jobs import naming, queue, state
from openft.jobs.hooks import DBHooks
from openft.procs import die_with_parent
from openft.store.blobs import BlobStore, stored_file
from openft.store.db import files, jobs, make_engine, models, next_seq
from openft.train import rules
from openft.vocab import SUPPORTED_METHODS

FILE_PARAMS = ("training_file", "validation_file")


def _link_file(engine: sa.Engine, settings: Settings, file_id: str, dest: Path) -> str:
    """Expose a stored file at `dest` (a symlink to its blob, keeping the original extension)."""
    with engine.connect() as conn:
        found = stored_file(conn, settings.layout, file_id)
    if found is None:
        raise InvalidRequest(f"File {file_id} no longer exists.", param="training_file", code="file_not_found")
    row, blob = found
    if not blob.exists():
        raise InvalidRequest(f"The content of file {file_id} is missing from the blob store.",
                             code="file_not_found")
    dest = dest.with_suffix(Path(row.filename).suffix or ".jsonl")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    dest.symlink_to(blob.resolve())
    return str(dest)


def build_spec(settings: Settings, engine: sa.Engine, job: dict, hooks: DBHooks):
    """TrainSpec for a job row; unknown hyperparameters are reported and ignored."""
    from openft.train.spec import TrainLimits, TrainSpec

    method = job["method"] or {"type": rules.DEFAULT_METHOD}
    mtype = rules.method_type(method)
    if mtype not in SUPPORTED_METHODS:
        raise InvalidRequest(f"Fine-tuning method '{mtype}' is not supported by this server yet "
                             f"(supported: {', '.join(SUPPORTED_METHODS)}).", param="method.type",
                             code="unsupported_method")
    hp = rules.hyperparameters(method)
    fields = {f.name for f in dataclasses.fields(TrainSpec)}
    kwargs = {k: v for k, v in hp.items() if k in fields and k not in rules.RESERVED_HYPERPARAMETERS and v is not None}
    ignored = sorted(set(hp) - set(kwargs) - {k for k, v in hp.items() if v is None})
    if ignored:
        hooks.on_event(f"Ignoring hyperparameters this trainer does not use: {', '.join(ignored)}", level="warn")
    init = job["init_adapter"] or None
    if init:
        rules.check_continuation(job["model"], job["base_model"], method, adapter_dir=init)
    out = Path(job["output_dir"])
    spec = TrainSpec(
        base_model=job["base_model"],
        train_file=_link_file(engine, settings, job["training_file"], out / "data" / "train"),
        valid_file=(_link_file(engine, settings, job["validation_file"], out / "data" / "valid")
                    if job["validation_file"] else None),
        output_dir=str(out), seed=int(job["seed"]), init_adapter=init, objective=rules.OBJECTIVES[mtype],
        device=settings.device, **kwargs)
    spec.validate(TrainLimits.from_settings(settings))  # this worker's bounds (its cores), not only the API's
    return spec


def _write_metadata(spec, job: dict) -> None:
    out = Path(job["output_dir"])
    meta = {"job_id": job["id"], "model": job["model"], "base_model": job["base_model"],
            "training_file": job["training_file"], "validation_file": job["validation_file"],
            "attempt": job["attempts"], "spec": dataclasses.asdict(spec)}
    (out / "job.json").write_text(json.dumps(meta, indent=2, default=str))


def _succeed(settings: Settings, engine: sa.Engine, job: dict, hooks: DBHooks, result, spec) -> None:
    model_id = hooks.model_id
    now = int(time.time())
    csv_sha, csv_bytes = None, 0
    if result.results_csv and Path(result.results_csv).exists():
        with open(result.results_csv, "rb") as f:
            csv_sha, csv_bytes = BlobStore(settings.layout.blobs).put_stream(f)
    with engine.begin() as conn:
        method = hooks.method_with(conn, dict(result.hyperparameters or {}))
        result_files = [new_file_id()] if csv_sha is not None else []
        if not state.succeed(conn, job["id"], hooks.worker_id, {
                "fine_tuned_model": model_id, "result_files": result_files, "method": method,
                "trained_tokens": int(result.trained_tokens or 0)}, model_id=model_id):
            return
        if csv_sha is not None:
            conn.execute(files.insert().values(
                id=result_files[0], project_id=job["project_id"], filename="step_metrics.csv",
                purpose="fine-tune-results", bytes=csv_bytes, sha256=csv_sha, created_at=now,
                status="processed", seq=next_seq(conn, files)))
        conn.execute(models.insert().values(
            id=model_id, project_id=job["project_id"], created_at=now, owned_by=settings.organization,
            base_model=job["base_model"], job_id=job["id"],
            method="full" if getattr(spec, "method", "lora") == "full" else "lora",
            path=str(result.model_dir), deleted=False))


def _pause(engine: sa.Engine, job: dict, hooks: DBHooks, result) -> None:
    with engine.begin() as conn:
        path = result.checkpoint_dir or hooks.last_checkpoint or queue.resume_point(conn, job["id"])[1]
        state.pause(conn, job["id"], worker_id=hooks.worker_id, resume_checkpoint=path,
                    step=queue.step_of(conn, job["id"], path))


def _fail(engine: sa.Engine, job: dict, hooks: DBHooks, code: str, message: str, param: str | None) -> None:
    with engine.begin() as conn:
        state.fail(conn, job["id"], code, message, param, worker_id=hooks.worker_id)


def _free_total(device: str) -> tuple[int, int] | None:
    try:
        from openft.train.memory import device_memory

        return device_memory(device)
    except Exception:  # noqa: BLE001 - the message does without it
        return None


def run(job_id: str, settings: Settings | None = None) -> int:
    """Train `job_id` (already claimed: status running). Returns the process exit code."""
    settings = settings or Settings()
    engine = make_engine(settings.resolved_database_url())
    with engine.connect() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
    if row is None or row["status"] != "running":
        print(f"job {job_id} is not running ({row['status'] if row else 'no such job'}); nothing to do")
        return 0
    job = dict(row)
    # the log's first line says whose run it is (runner.log beside the job; its tail ends up in errors)
    print(f"openft runner: job {job_id}, base model {job['base_model']}, pid {os.getpid()}, "
          f"worker {job['worker_id']}", file=sys.stderr, flush=True)
    fault_point("runner-start")  # test-only, inert by default (openft.faults)
    model_id = naming.fine_tuned_model_id(job["base_model"], settings.organization, job["suffix"], job_id)
    hooks = DBHooks(engine, job, model_id)
    spec = None
    try:
        spec = build_spec(settings, engine, job, hooks)
        from openft.train.checkpoint import remove_partial
        from openft.train.loop import train  # torch and transformers: seconds to import

        with engine.connect() as conn:  # the queue's one rule for which checkpoint a job continues from
            resume_from = queue.resume_point(conn, job_id, job["resume_checkpoint"])[1]
        for leftover in remove_partial(job["output_dir"]):  # a killed run's half-written folders
            print(f"removed the partial folder {leftover} left by an earlier run", file=sys.stderr)
        _write_metadata(spec, job)
        if not resume_from:  # a resumed run: the trainer says "Resumed from checkpoint at step N."
            hooks.on_event("Fine-tuning job started")
        result = train(spec, hooks, settings, resume_from=resume_from)
        hooks.flush()
        if result.status == "succeeded":
            _succeed(settings, engine, job, hooks, result, spec)
        elif result.status == "paused":
            _pause(engine, job, hooks, result)
        # "cancelled": the API already recorded it (or the job was taken away); nothing to write.
        return 0
    except OpenFTError as e:
        hooks.flush()
        param = e.param or (getattr(e, "file", None) if getattr(e, "file", None) in FILE_PARAMS else None)
        print(f"job {job_id} failed: {e.code}: {e.message}", file=sys.stderr)
        _fail(engine, job, hooks, e.code or "invalid_request", e.message, param)
        return 0
    except BaseException as e:  # noqa: BLE001 - report whatever killed training, then exit non-zero
        traceback.print_exc()
        try:
            hooks.flush()
        except Exception:  # noqa: BLE001 - the failure itself matters more than a metrics line
            pass
        from openft.train import memory  # the trainer turns its own OOMs into memory.OutOfMemory; this is the rest

        if memory.is_oom(e):
            device = "cuda" if "cuda" in str(e).lower() else "cpu"
            _fail(engine, job, hooks, "out_of_memory", memory.oom_message(None, getattr(spec, "method", "lora"), device,
                                                                          _free_total(device)), None)
        elif isinstance(e, KeyboardInterrupt):
            return 130  # stopped by a signal: the worker decides what that means
        else:
            _fail(engine, job, hooks, "training_error", f"Training failed: {type(e).__name__}: {e}", None)
        return 1
    finally:
        hooks.close()  # the integrations' runs (wandb, tensorboard); never raises
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m openft.jobs.runner JOB_ID", file=sys.stderr)
        sys.exit(2)
    die_with_parent("OPENFT_RUNNER_PARENT_PID")  # SIGKILLed by the kernel when the worker dies (Linux)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM -> KeyboardInterrupt
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(run(argv[0]))


if __name__ == "__main__":
    main()
