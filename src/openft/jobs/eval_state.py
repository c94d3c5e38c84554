"""The eval-run state machine: every status change of an eval run row, in one place.

    queued      -> in_progress (claim; also an in_progress run whose lease expired: taken over)
                 | canceled
    in_progress -> queued (release: its worker stops) | completed | failed | canceled

Runs are leased through openft.jobs.lease (`LEASE`: queued runs wait, in_progress runs are held
by `worker_id`; a deleted run is never worked on). The worker's writes are fenced on its lease,
so a worker whose run was cancelled, deleted or taken over writes nothing. There is one cancel
rule, used by the cancel endpoint and by deleting a run or its eval: a queued or in_progress run
becomes `canceled` with its `finished_at`, no worker holds it any more, and its
`eval.run.canceled` webhook event commits with it (as `completed` and `failed` do).

The caller passes its connection (one transaction with what else it writes).
Knows the `eval_runs` table; nothing about HTTP, generation or grading.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from openft.jobs import lease
from openft.store.db import eval_runs
from openft.webhooks import events as webhook_events

STATUSES = ("queued", "in_progress", "completed", "canceled", "failed")
LIVE = ("queued", "in_progress")

LEASE = lease.Leased(eval_runs, held="in_progress", free="queued", live=(eval_runs.c.deleted == sa.false(),))


def claim_next(conn: sa.Connection, worker_id: str, lease_seconds: float) -> str | None:
    """The oldest queued run (or in_progress run whose lease is older than `lease_seconds`: its worker
    died) -> in_progress under `worker_id`; its id, or None."""
    return lease.claim_first(conn, LEASE, worker_id, order_by=[eval_runs.c.seq],
                             take_over_before=time.time() - lease_seconds)


def heartbeat(conn: sa.Connection, run_id: str, worker_id: str, usage: dict) -> bool:
    """Refresh the lease and record the usage so far; False when the run is no longer this worker's."""
    return lease.heartbeat(conn, LEASE, run_id, worker_id, {"usage": usage})


def release(conn: sa.Connection, run_id: str, worker_id: str) -> bool:
    """in_progress -> queued: the worker stops; the run continues later (its written items kept)."""
    return lease.release(conn, LEASE, run_id, worker_id)


def finish(conn: sa.Connection, run_id: str, worker_id: str, status: str, *, error: dict | None = None,
           usage: dict | None = None) -> bool:
    """in_progress -> completed | failed, with its webhook event."""
    if status not in ("completed", "failed"):
        raise ValueError(f"an eval run finishes completed or failed, not {status!r}")
    values = {"error": error, "finished_at": int(time.time()), "heartbeat_at": time.time()}
    if usage is not None:
        values["usage"] = usage
    if not lease.finish(conn, LEASE, run_id, worker_id, status, values):
        return False
    webhook_events.eval_run_finished(conn, run_id, status)
    return True


def cancel(conn: sa.Connection, run_id: str) -> bool:
    """queued | in_progress -> canceled (the one cancel rule); False when the run had finished."""
    won = lease.update(conn, LEASE, run_id, {"status": "canceled", "finished_at": int(time.time()), **lease.freed()},
                       [eval_runs.c.status.in_(LIVE)])
    if won:
        webhook_events.eval_run_finished(conn, run_id, "canceled")
    return won


def delete(conn: sa.Connection, run_ids: list[str]) -> None:
    """Mark runs deleted; a live one is cancelled first (the cancel rule)."""
    for run_id in run_ids:
        cancel(conn, run_id)
    if run_ids:
        conn.execute(eval_runs.update().where(eval_runs.c.id.in_(run_ids)).values(deleted=True))
