"""The job queue in the database: atomic claim, heartbeat, lease expiry, requeue.

Every state change is one `UPDATE ... WHERE id = ? AND <expected state>` whose rowcount says
whether this caller won; that is correct on SQLite (one writer at a time) and on PostgreSQL
(READ COMMITTED re-checks the WHERE clause after waiting for a concurrent writer's row lock),
so two workers can never both claim a job, and a stale worker can never overwrite a job that
was reaped and handed to another.

Knows the `jobs`/`checkpoints` tables; knows nothing about processes or training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from openft.store.db import checkpoints, job_events, jobs
from openft.store.events import add_event


LOST_PREFIX = "The worker running this job stopped responding"


@dataclass(frozen=True)
class Reaped:
    job_id: str
    requeued: bool          # False: failed after too many attempts
    resume_step: int | None


def job_output_dir(data_dir: Path, job_id: str) -> str:
    return str((Path(data_dir) / "jobs" / job_id).resolve())


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
        candidates = conn.execute(
            sa.select(jobs.c.id).where(jobs.c.status == "queued")
            .order_by(jobs.c.created_at, jobs.c.seq).limit(8)).scalars().all()
    for job_id in candidates:
        now = time.time()
        with engine.begin() as conn:
            won = conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.status == "queued").values(
                    status="running", worker_id=worker_id, heartbeat_at=now,
                    attempts=jobs.c.attempts + 1,
                    started_at=sa.func.coalesce(jobs.c.started_at, int(now)),
                    output_dir=sa.func.coalesce(jobs.c.output_dir, job_output_dir(data_dir, job_id)),
                )).rowcount == 1
            if won:
                return dict(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().one())
    return None


def heartbeat(engine: Engine, job_id: str, worker_id: str) -> bool:
    """Refresh the lease; False when the job is no longer running under this worker."""
    with engine.begin() as conn:
        return conn.execute(
            jobs.update().where(jobs.c.id == job_id, jobs.c.worker_id == worker_id,
                                jobs.c.status == "running").values(heartbeat_at=time.time())).rowcount == 1


def requeue(engine: Engine, job_id: str, *, reason: str, worker_id: str | None = None,
            stale_before: float | None = None, max_attempts: int | None = None) -> Reaped | None:
    """Put a running job back in the queue to continue from its newest checkpoint.

    Guarded: only when the job is still running (under `worker_id`, or with a heartbeat older
    than `stale_before`). When its worker was lost (`reason` starts with LOST_PREFIX) for the
    `max_attempts`-th time, the job fails instead. None when not applicable.
    """
    with engine.begin() as conn:
        job = conn.execute(sa.select(jobs.c.attempts, jobs.c.resume_checkpoint)
                           .where(jobs.c.id == job_id)).first()
        if job is None:
            return None
        latest = latest_checkpoint(conn, job_id)
        resume_path = latest[1] if latest else None
        if resume_path is None and job.resume_checkpoint and Path(job.resume_checkpoint).exists():
            resume_path = job.resume_checkpoint
        cond = [jobs.c.id == job_id, jobs.c.status == "running"]
        if worker_id is not None:
            cond.append(jobs.c.worker_id == worker_id)
        if stale_before is not None:
            cond.append(sa.or_(jobs.c.heartbeat_at.is_(None), jobs.c.heartbeat_at < stale_before))
        step = latest[0] if latest else step_of(conn, job_id, resume_path)
        lost = 0  # how many times this job's worker vanished, this time included
        if reason.startswith(LOST_PREFIX):
            lost = 1 + conn.execute(sa.select(sa.func.count()).select_from(job_events).where(
                job_events.c.job_id == job_id, job_events.c.message.like(LOST_PREFIX + "%"))).scalar()
        if max_attempts is not None and lost >= max_attempts:
            n = conn.execute(jobs.update().where(*cond).values(
                status="failed", finished_at=int(time.time()), worker_id=None, heartbeat_at=None,
                error={"code": "worker_lost",
                       "message": f"{reason}; its worker was lost {lost} times, so it is not retried again.",
                       "param": None})).rowcount
            if n:
                add_event(conn, job_id, f"{reason}; giving up after losing its worker {lost} times.", level="error")
                return Reaped(job_id, False, step)
            return None
        n = conn.execute(jobs.update().where(*cond).values(
            status="queued", worker_id=None, heartbeat_at=None, resume_checkpoint=resume_path)).rowcount
        if not n:
            return None
        where = f"checkpoint step {step}" if resume_path else "the beginning (no checkpoint yet)"
        add_event(conn, job_id, f"{reason}; the job was put back in the queue and will continue from {where}.",
                  level="warn")
        return Reaped(job_id, True, step if resume_path else None)


def reap_expired(engine: Engine, lease_seconds: float, *, max_attempts: int | None = None) -> list[Reaped]:
    """Requeue running jobs whose heartbeat is older than the lease (their worker vanished)."""
    cutoff = time.time() - lease_seconds
    with engine.connect() as conn:
        stale = conn.execute(sa.select(jobs.c.id).where(
            jobs.c.status == "running",
            sa.or_(jobs.c.heartbeat_at.is_(None), jobs.c.heartbeat_at < cutoff))).scalars().all()
    out = []
    for job_id in stale:
        r = requeue(engine, job_id, reason=f"{LOST_PREFIX} for over {lease_seconds:g} s", stale_before=cutoff,
                    max_attempts=max_attempts)
        if r is not None:
            out.append(r)
    return out
