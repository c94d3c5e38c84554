"""The job queue in the database: atomic claim, heartbeat, lease expiry, requeue.

The status changes themselves are openft.jobs.state's checked transitions (one
`UPDATE ... WHERE id = ? AND <expected state>` whose rowcount says whether this caller won);
that is correct on SQLite (one writer at a time) and on PostgreSQL (READ COMMITTED re-checks the
WHERE clause after waiting for a concurrent writer's row lock), so two workers can never both
claim a job, and a stale worker can never overwrite a job that was reaped and handed to another.
The lease mechanics (heartbeat, expiry) are openft.jobs.lease's, on `state.LEASE`. This module
picks which job and which checkpoint: `resume_point` is the one rule of where a job continues
from, for the worker, the reaper and the runner alike.

Knows the `jobs`/`checkpoints` tables; knows nothing about processes or training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from openft.config import DataLayout
from openft.jobs import lease, state
from openft.jobs.state import LOST_PREFIX
from openft.store.db import checkpoints, jobs


@dataclass(frozen=True)
class Reaped:
    job_id: str
    requeued: bool          # False: failed after too many attempts
    resume_step: int | None


def job_output_dir(data_dir: Path, job_id: str) -> str:
    return str(DataLayout(Path(data_dir)).job_dir(job_id).resolve())


def latest_checkpoint(conn: sa.Connection, job_id: str) -> tuple[int, str] | None:
    """(step, path) of the newest non-deleted checkpoint whose folder still exists."""
    rows = conn.execute(
        sa.select(checkpoints.c.step_number, checkpoints.c.path)
        .where(checkpoints.c.job_id == job_id, checkpoints.c.deleted == sa.false())
        .order_by(checkpoints.c.step_number.desc())).all()
    for step, path in rows:
        if Path(path).exists():
            return int(step), path
    return None


def step_of(conn: sa.Connection, job_id: str, path: str | None) -> int | None:
    if not path:
        return None
    step = conn.execute(sa.select(checkpoints.c.step_number).where(
        checkpoints.c.job_id == job_id, checkpoints.c.path == path)).scalar()
    if step is not None:
        return int(step)
    name = Path(path).name  # <output_dir>/checkpoints/step-<N>
    return int(name[5:]) if name.startswith("step-") and name[5:].isdigit() else None


def claim_next(engine: Engine, worker_id: str, data_dir: Path) -> dict | None:
    """Claim the oldest queued job for `worker_id`; returns its row (as a dict) or None."""
    with engine.connect() as conn:
        candidates = lease.candidates(conn, state.LEASE, order_by=[jobs.c.created_at, jobs.c.seq])
    for job_id in candidates:
        with engine.begin() as conn:
            if state.claim(conn, job_id, worker_id, job_output_dir(data_dir, job_id)):
                return dict(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().one())
    return None


def heartbeat(engine: Engine, job_id: str, worker_id: str) -> bool:
    """Refresh the lease; False when the job is no longer running under this worker."""
    with engine.begin() as conn:
        return lease.heartbeat(conn, state.LEASE, job_id, worker_id)


def resume_point(conn: sa.Connection, job_id: str, recorded: str | None = None) -> tuple[int | None, str | None]:
    """(step, path) to continue `job_id` from: its newest checkpoint on disk, else the one
    recorded at an earlier pause/requeue (`recorded`: jobs.resume_checkpoint) when it still
    exists; (None, None) for the beginning.

    The one rule (the runner starts from it, the worker and the reaper record it). The newest
    comes first because a checkpoint row is only written by the run holding the job's lease
    (openft.jobs.hooks fences it), so the newest is never behind the recorded one: the recorded
    path is the newest of its time (a pause records the checkpoint it just wrote, a requeue
    records this function's answer), and a newer one means the job got further since, which
    must not be trained again. The recorded path is the fallback for when the checkpoint rows
    are gone or their folders were removed."""
    latest = latest_checkpoint(conn, job_id)
    if latest:
        return latest
    if recorded and Path(recorded).exists():
        return step_of(conn, job_id, recorded), recorded
    return None, None


def requeue(engine: Engine, job_id: str, *, reason: str, worker_id: str | None = None,
            stale_before: float | None = None, max_attempts: int | None = None,
            retry_of: tuple[int, int] | None = None) -> Reaped | None:
    """Put a running job back in the queue to continue from its newest checkpoint.

    Guarded: only when the job is still running (under `worker_id`, or with a heartbeat older
    than `stale_before`). When its worker was lost (`reason` starts with LOST_PREFIX) for the
    `max_attempts`-th time (jobs.workers_lost), the job fails instead. `retry_of=(k, n)`: the
    runner died of an infrastructure fault and this is retry k of n. None when not applicable.
    """
    lost = reason.startswith(LOST_PREFIX)
    with engine.begin() as conn:
        job = conn.execute(sa.select(jobs.c.resume_checkpoint, jobs.c.workers_lost)
                           .where(jobs.c.id == job_id)).first()
        if job is None:
            return None
        step, resume_path = resume_point(conn, job_id, job.resume_checkpoint)
        n_lost = (job.workers_lost or 0) + 1 if lost else 0  # this time included
        if max_attempts is not None and lost and n_lost >= max_attempts:
            if state.fail(conn, job_id, "worker_lost",
                          f"{reason}; its worker was lost {n_lost} times, so it is not retried again.",
                          worker_id=worker_id, stale_before=stale_before,
                          event=f"{reason}; giving up after losing its worker {n_lost} times."):
                return Reaped(job_id, False, step)
            return None
        where = f"checkpoint step {step}" if resume_path else "the beginning (no checkpoint yet)"
        if retry_of:
            event = f"{reason}; retrying (attempt {retry_of[0]} of {retry_of[1]}), resuming from {where}."
        else:
            event = f"{reason}; the job was put back in the queue and will continue from {where}."
        if not state.requeue(conn, job_id, event=event, resume_checkpoint=resume_path, worker_id=worker_id,
                             stale_before=stale_before, lost_worker=lost, runner_retry=retry_of is not None):
            return None
        return Reaped(job_id, True, step if resume_path else None)


def reap_expired(engine: Engine, lease_seconds: float, *, max_attempts: int | None = None) -> list[Reaped]:
    """Requeue running jobs whose heartbeat is older than the lease (their worker vanished)."""
    with engine.connect() as conn:
        stale, cutoff = lease.expired_ids(conn, state.LEASE, lease_seconds)
    out = []
    for job_id in stale:
        r = requeue(engine, job_id, reason=f"{LOST_PREFIX} for over {lease_seconds:g} s", stale_before=cutoff,
                    max_attempts=max_attempts)
        if r is not None:
            out.append(r)
    return out
