"""The job state machine: every status change of a job row, its events and its rules, in one place.

    validating_files -> queued | failed | cancelled
    queued   -> running (claim) | paused | cancelled
    running  -> queued (requeue: worker lost or stopped, runner retried) | succeeded | failed
             | paused (the runner honours a pause request) | cancelled
    paused   -> queued (resume) | cancelled

A running job may also carry `requested_action='pause'` (asked by the API, taken back by a
resume, honoured by the runner within the optimizer step it is in: it saves a checkpoint there);
the API shows it as `pause_requested` until the job is paused.

Every change is one checked `UPDATE jobs ... WHERE id = ? AND status IN (<allowed from>)` (and
`AND worker_id = ?` where a worker owns the job), written through openft.jobs.lease (`LEASE`:
queued rows wait, running rows are held); the rowcount says whether this caller won, so
a stale worker, a slow runner and the API can never overwrite each other. A transition from a
status its table entry does not allow raises IllegalTransition before anything is written;
a lost race returns False. A change to a terminal status also enqueues its webhook event
(openft.webhooks.events) in the same transaction. The caller passes its own connection (one transaction with whatever
else it writes: the model row, a result file).

Knows the `jobs` table and the event texts; knows nothing about HTTP, processes or training.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import sqlalchemy as sa

from openft.jobs import lease
from openft.store.db import jobs
from openft.store.events import add_event
from openft.webhooks import events as webhook_events

STATUSES = ("validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")

# transition -> (statuses it may start from, status it leads to; None keeps the status)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "validated": (("validating_files",), "queued"),
    "claim": (("queued",), "running"),
    "requeue": (("running",), "queued"),
    "succeed": (("running",), "succeeded"),
    "fail": (("validating_files", "running"), "failed"),
    "request_pause": (("running",), None),
    "withdraw_pause": (("running",), None),
    "pause": (("queued", "running"), "paused"),
    "resume": (("paused",), "queued"),
    "cancel": (("validating_files", "queued", "running", "paused"), "cancelled"),
}

# what the API's verbs accept (the message of a refused one lists these)
CAN = {"cancel": TRANSITIONS["cancel"][0], "pause": TRANSITIONS["pause"][0], "resume": TRANSITIONS["resume"][0]}

PAUSING = "Pausing...: the job saves a checkpoint when its current step ends, then pauses"

# A worker that stops heartbeating (crashed, killed, partitioned) is "lost"; counted in jobs.workers_lost.
LOST_PREFIX = "The worker running this job stopped responding"


# A job's lease: queued jobs wait for a worker, a running job is held by one (jobs.worker_id).
LEASE = lease.Leased(jobs, held="running", free="queued")


class IllegalTransition(ValueError):
    """A transition asked from a status its table entry does not allow (a programming error)."""


def _apply(conn: sa.Connection, name: str, job_id: str, values: dict, *, from_: Iterable[str] | None = None,
           worker_id: str | None = None, where: Iterable = ()) -> bool:
    allowed, to = TRANSITIONS[name]
    start = tuple(from_) if from_ is not None else allowed
    if not start or not set(start) <= set(allowed):
        raise IllegalTransition(f"{name}: {job_id} cannot go from {', '.join(start) or 'nothing'} "
                                f"(allowed from: {', '.join(allowed)})")
    cond = [jobs.c.status.in_(start), *where]
    if worker_id is not None:
        cond.append(jobs.c.worker_id == worker_id)
    if to is not None:
        values = {"status": to, **values}
    won = lease.update(conn, LEASE, job_id, values, cond)
    if won and to in TERMINAL:  # its webhook deliveries commit with the status change
        webhook_events.job_finished(conn, job_id, to)
    return won


def _stale(stale_before: float | None) -> list:
    """Fence for the reaper: the job's heartbeat is older than `stale_before` (or missing)."""
    if stale_before is None:
        return []
    return [lease.expired(LEASE, stale_before)]


def mine(row, worker_id: str) -> bool:
    """Is the job `row` (read back: status, worker_id) still running under `worker_id`? The one
    test of the worker, its heartbeat and the runner's hooks."""
    return lease.mine(row, LEASE, worker_id)


def owned_by(worker_id: str) -> list:
    """The same test as a WHERE clause (the fence of the runner's writes)."""
    return lease.owned(LEASE, worker_id)


# -- validation ----------------------------------------------------------------------------------

def validated(conn: sa.Connection, job_id: str, *, estimate: str | None = None) -> bool:
    """validating_files -> queued."""
    if not _apply(conn, "validated", job_id, {}):
        return False
    if estimate:
        add_event(conn, job_id, estimate)
    add_event(conn, job_id, "Files validated, moving job to queued state")
    return True


# -- the worker ----------------------------------------------------------------------------------

def claim(conn: sa.Connection, job_id: str, worker_id: str, output_dir: str) -> bool:
    """queued -> running under `worker_id` (one more attempt)."""
    now = time.time()
    return _apply(conn, "claim", job_id, {
        **lease.taken(worker_id, now), "attempts": jobs.c.attempts + 1,
        "started_at": sa.func.coalesce(jobs.c.started_at, int(now)),
        "output_dir": sa.func.coalesce(jobs.c.output_dir, output_dir)})


def requeue(conn: sa.Connection, job_id: str, *, event: str, resume_checkpoint: str | None,
            worker_id: str | None = None, stale_before: float | None = None, lost_worker: bool = False,
            runner_retry: bool = False) -> bool:
    """running -> queued, to continue from `resume_checkpoint`. Fenced on `worker_id`, or on a
    heartbeat older than `stale_before`. `lost_worker` / `runner_retry` count the reason."""
    values = {**lease.freed(), "resume_checkpoint": resume_checkpoint, "requested_action": None,
              "estimated_finish": None}
    if lost_worker:
        values["workers_lost"] = jobs.c.workers_lost + 1
    if runner_retry:
        values["runner_retries"] = jobs.c.runner_retries + 1
    if not _apply(conn, "requeue", job_id, values, worker_id=worker_id, where=_stale(stale_before)):
        return False
    add_event(conn, job_id, event, level="warn")
    return True


def succeed(conn: sa.Connection, job_id: str, worker_id: str, values: dict, *, model_id: str) -> bool:
    """running -> succeeded (the caller adds the model row in the same transaction)."""
    if not _apply(conn, "succeed", job_id, {
            "finished_at": int(time.time()), "estimated_finish": None, "requested_action": None,
            "heartbeat_at": None, "error": None, **values}, worker_id=worker_id):
        return False
    add_event(conn, job_id, f"New fine-tuned model created: {model_id}")
    add_event(conn, job_id, "The job has successfully completed")
    return True


def fail(conn: sa.Connection, job_id: str, code: str, message: str, param: str | None = None, *,
         from_: Iterable[str] = ("running",), worker_id: str | None = None, stale_before: float | None = None,
         event: str | None = None) -> bool:
    """-> failed with error {code, message, param}; the event is `event` or "Fine-tuning job failed: <message>".
    Fenced on `worker_id` / `stale_before` as requeue is."""
    values = {**lease.freed(), "finished_at": int(time.time()), "estimated_finish": None, "requested_action": None,
              "error": {"code": code, "message": message, "param": param}}
    if not _apply(conn, "fail", job_id, values, from_=from_, worker_id=worker_id, where=_stale(stale_before)):
        return False
    add_event(conn, job_id, event if event is not None else f"Fine-tuning job failed: {message}", level="error")
    return True


# -- pause, resume, cancel -----------------------------------------------------------------------

def request_pause(conn: sa.Connection, job_id: str) -> bool:
    """A running job is asked to pause: its runner saves a checkpoint when the current optimizer
    step ends (or at once, between the step's micro-batches) and stops."""
    if not _apply(conn, "request_pause", job_id, {"requested_action": "pause"}):
        return False
    add_event(conn, job_id, PAUSING)
    return True


def withdraw_pause(conn: sa.Connection, job_id: str) -> bool:
    """A resume before the runner paused takes the request back."""
    if not _apply(conn, "withdraw_pause", job_id, {"requested_action": None},
                  where=[jobs.c.requested_action == "pause"]):
        return False
    add_event(conn, job_id, "Pause request withdrawn")
    return True


def pause(conn: sa.Connection, job_id: str, *, worker_id: str | None = None, resume_checkpoint: str | None = None,
          step: int | None = None) -> bool:
    """queued -> paused (the API, no worker_id), or running -> paused under `worker_id` (the runner,
    or its worker when the runner exited first), to resume from `resume_checkpoint` at `step`."""
    if worker_id is None:
        if not _apply(conn, "pause", job_id, {"estimated_finish": None}, from_=("queued",)):
            return False
        add_event(conn, job_id, "Fine-tuning job paused")
        return True
    if not _apply(conn, "pause", job_id, {**lease.freed(), "requested_action": None, "estimated_finish": None,
                                          "resume_checkpoint": resume_checkpoint},
                  from_=("running",), worker_id=worker_id):
        return False
    where = f"checkpoint step {step}" if resume_checkpoint and step is not None else \
        ("its last checkpoint" if resume_checkpoint else "the beginning")
    add_event(conn, job_id, f"Fine-tuning job paused; it will resume from {where}.")
    return True


def resume(conn: sa.Connection, job_id: str) -> bool:
    """paused -> queued."""
    if not _apply(conn, "resume", job_id, {"requested_action": None}):
        return False
    add_event(conn, job_id, "Fine-tuning job resumed")
    return True


def cancel(conn: sa.Connection, job_id: str) -> bool:
    """Any live status -> cancelled; a running job's runner sees it and stops."""
    if not _apply(conn, "cancel", job_id, {"finished_at": int(time.time()), "estimated_finish": None,
                                           "requested_action": None}):
        return False
    add_event(conn, job_id, "Fine-tuning job cancelled")
    return True
