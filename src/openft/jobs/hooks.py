"""DBHooks: the trainer's hooks (openft.train.hooks.TrainHooks) written to the database.

Events with OpenAI's texts, one `metrics` event per step, progress on the job row, a
`checkpoints` row per checkpoint, and `should_stop` read from the job row (cancelled ->
"cancel", requested pause -> "pause", job taken away or worker gone -> "cancel").
Every job-row write is fenced on the claiming worker (see `fence`). The job's integrations
(wandb, tensorboard: openft.jobs.integrations) get the resolved hyperparameters and every step's
metrics; `close()` finishes them.

Knows the tables; knows nothing about how training works.
"""

from __future__ import annotations

import copy
import os
import time

import sqlalchemy as sa

from openft.ids import checkpoint_id
from openft.jobs import naming, state
from openft.jobs.integrations import Integrations
from openft.store.db import checkpoints, jobs
from openft.store.events import add_event
from openft.train.metrics import reported
from openft.vocab import DEFAULT_METHOD, HYPERPARAMETERS


def _metrics(data: dict) -> dict:
    """The metrics payload of an event or a checkpoint (openft.train.metrics.reported), as floats."""
    return {k: _num(v) for k, v in reported(data).items()}


def _num(x):
    return None if x is None else float(x)


def step_message(data: dict) -> str:
    """`Step 3/40: training loss=1.23, validation loss=1.45` (OpenAI's text)."""
    msg = f"Step {data['step']}/{data.get('total_steps', '?')}: training loss={float(data['train_loss']):.2f}"
    valid = data.get("full_valid_loss") if data.get("full_valid_loss") is not None else data.get("valid_loss")
    if valid is not None:
        msg += f", validation loss={float(valid):.2f}"
    return msg


class DBHooks:
    def __init__(self, engine: sa.Engine, job: dict, model_id: str, *, flush_seconds: float = 0.5):
        """flush_seconds: how often buffered metrics events and progress are written. should_stop
        reads the job row at every call (once per step, and per micro-batch of a big step: one
        indexed read of one row), so a pause or a cancel lands at the step it was asked in."""
        self.engine = engine
        self.job_id = job["id"]
        self.project_id = job["project_id"]
        self.worker_id = job["worker_id"]
        self.method_type = (job["method"] or {}).get("type", DEFAULT_METHOD)
        self.model_id = model_id
        self.last_checkpoint: str | None = None
        self._parent = int(os.environ.get("OPENFT_RUNNER_PARENT_PID", "0") or 0)
        self.flush_seconds = flush_seconds
        self._pending_metrics: list[tuple[str, dict]] = []
        self._pending_progress: dict | None = None
        self._last_flush = time.monotonic()
        self.integrations = Integrations(job.get("integrations"), job, lambda m: self.on_event(m, level="warn"))

    def fence(self) -> list:
        """WHERE clauses: this job, still running, still under the worker that claimed it."""
        return [jobs.c.id == self.job_id, *state.owned_by(self.worker_id)]

    # -- TrainHooks --------------------------------------------------------------------------

    def on_event(self, message: str, level: str = "info") -> None:
        with self.engine.begin() as conn:
            self._write_pending(conn)
            add_event(conn, self.job_id, message, level=level)

    def method_with(self, conn: sa.Connection, hyperparameters: dict) -> dict:
        """The job's `method` with the concrete hyperparameters written in (keeps the others)."""
        method = copy.deepcopy(conn.execute(sa.select(jobs.c.method).where(jobs.c.id == self.job_id)).scalar()
                               or {"type": self.method_type})
        section = method.setdefault(self.method_type, {}) or {}
        method[self.method_type] = section
        hp = dict(section.get("hyperparameters") or {})
        for k, v in hyperparameters.items():
            if k in HYPERPARAMETERS or k in hp:
                hp[k] = v
        section["hyperparameters"] = hp
        return method

    def on_resolved(self, hyperparameters: dict) -> None:
        with self.engine.begin() as conn:
            self._write_pending(conn)
            method = self.method_with(conn, hyperparameters)
            conn.execute(jobs.update().where(*self.fence()).values(method=method))
        self.integrations.on_resolved(hyperparameters)

    def on_metrics(self, data: dict) -> None:
        payload = _metrics(data)
        payload["step"] = int(data["step"])
        payload["total_steps"] = int(data["total_steps"]) if data.get("total_steps") is not None else None
        self._pending_metrics.append((step_message(data), payload))
        self.integrations.on_metrics(data)

    def on_progress(self, step: int, total_steps: int, trained_tokens: int, estimated_finish: int | None) -> None:
        self._pending_progress = {
            "trained_tokens": int(trained_tokens),
            "estimated_finish": int(estimated_finish) if estimated_finish is not None else None}
        self._flush_if_due()

    # -- buffered per-step writes ----------------------------------------------------------------
    # Metrics events and progress are written at most every `flush_seconds` (and before any other
    # write, and at the end), so fast steps do not each cost a database commit.

    def _write_pending(self, conn: sa.Connection) -> None:
        for message, payload in self._pending_metrics:
            add_event(conn, self.job_id, message, type="metrics", data=payload)
        self._pending_metrics = []
        if self._pending_progress is not None:
            conn.execute(jobs.update().where(*self.fence()).values(**self._pending_progress))
            self._pending_progress = None
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Write buffered metrics events and progress now."""
        if self._pending_metrics or self._pending_progress is not None:
            with self.engine.begin() as conn:
                self._relaxed(conn)
                self._write_pending(conn)

    def close(self) -> None:
        """Finish the integrations' runs (a wandb run is marked failed unless the job succeeded or paused)."""
        if self.integrations.loggers:
            try:
                with self.engine.connect() as conn:
                    status = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == self.job_id)).scalar()
            except sa.exc.SQLAlchemyError:
                status = None
            self.integrations.close(failed=status not in ("succeeded", "paused"))

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _relaxed(self, conn: sa.Connection) -> None:
        """Per-step writes need not wait for the disk: on PostgreSQL, commit without flushing
        the WAL (a crash can lose the last fraction of a second of metrics, never corrupt)."""
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))

    def on_checkpoint(self, step: int, epoch: int, path: str, metrics: dict) -> None:
        name = naming.checkpoint_model_id(self.model_id, step)
        row_metrics = _metrics(metrics)
        row_metrics["step"] = int(step)
        now = int(time.time())
        with self.engine.begin() as conn:
            self._write_pending(conn)
            existing = conn.execute(sa.select(checkpoints.c.id).where(
                checkpoints.c.fine_tuned_model_checkpoint == name)).scalar()
            if existing:  # re-created after a resume from an earlier checkpoint
                conn.execute(checkpoints.update().where(checkpoints.c.id == existing).values(
                    created_at=now, metrics=row_metrics, path=str(path), deleted=False))
            else:
                conn.execute(checkpoints.insert().values(
                    id=checkpoint_id(), job_id=self.job_id, project_id=self.project_id, created_at=now,
                    step_number=int(step), fine_tuned_model_checkpoint=name, metrics=row_metrics,
                    path=str(path), deleted=False))
            add_event(conn, self.job_id, f"Checkpoint created at step {int(step)} with Snapshot ID: {name}")
        self.last_checkpoint = str(path)

    def on_checkpoint_removed(self, path: str) -> None:
        with self.engine.begin() as conn:
            self._write_pending(conn)
            conn.execute(checkpoints.update().where(
                checkpoints.c.job_id == self.job_id, checkpoints.c.path == str(path)).values(deleted=True))
        if self.last_checkpoint == str(path):
            self.last_checkpoint = None

    def should_stop(self) -> str | None:
        self._flush_if_due()
        if self._parent and os.getppid() != self._parent:
            return "cancel"  # the worker died: stop; the reaper requeues the job
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs.c.status, jobs.c.requested_action, jobs.c.worker_id)
                               .where(jobs.c.id == self.job_id)).first()
        if not state.mine(row, self.worker_id):
            return "cancel"
        return "pause" if row.requested_action == "pause" else None
