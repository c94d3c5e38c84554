"""Leases on work rows: claim, heartbeat, release, finish and reap, each one fenced UPDATE.

Every kind of background work (fine-tuning jobs, eval runs, exports, webhook deliveries) is a
row; a worker owns one by holding its lease. A `Leased` says which table and which statuses: a
row waiting for a worker is `free`, one a worker holds is `held`, with the worker's id in
`worker_id` and the time of its last heartbeat in `heartbeat_at`. A lease whose heartbeat is
older than the lease seconds has expired (its worker died or was cut off) and may be reaped or
taken over. Every write is one `UPDATE <table> ... WHERE id = ? AND <fence>` whose rowcount
says whether this caller won, so two workers never both hold a row and a worker that lost its
lease can never overwrite what the new holder or the API wrote: that is correct on SQLite (one
writer at a time) and on PostgreSQL (READ COMMITTED re-checks the WHERE clause after waiting for
a concurrent writer's row lock).

A lease can also be a due time (`Due`: webhook deliveries): a claim pushes the due time one lease
ahead and the value it wrote is the holder's token; the holder's final write is fenced on that
token, and a holder that died leaves a row that comes due again when the lease ends.

`mine(row, worker_id)` is the one "is this still mine" test of a row read back; `poll_until_stopped`
is the loop every worker thread runs. The caller passes its own connection, so a lease change
commits with whatever else it writes (an event, a webhook delivery).

Knows SQLAlchemy Core and the `worker_id`/`heartbeat_at` convention; nothing about what the work is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class Leased:
    """A table whose rows workers lease: `free` rows wait, `held` rows run under one worker;
    `live` are conditions every worked-on row also meets (not deleted)."""
    table: sa.Table
    held: str
    free: str
    live: tuple = field(default=())

    @property
    def c(self):
        return self.table.c


def owned(kind: Leased, worker_id: str) -> list:
    """The fence of a holder: the row is held, by `worker_id`."""
    return [kind.c.status == kind.held, kind.c.worker_id == worker_id, *kind.live]


def expired(kind: Leased, before: float) -> sa.ColumnElement:
    """A held row whose last heartbeat is older than `before` (or missing)."""
    return sa.and_(kind.c.status == kind.held,
                   sa.or_(kind.c.heartbeat_at.is_(None), kind.c.heartbeat_at < before))


def claimable(kind: Leased, take_over_before: float | None = None) -> sa.ColumnElement:
    """A row a claim may take: free, or (with `take_over_before`) held under a lease that expired."""
    free = kind.c.status == kind.free
    return free if take_over_before is None else sa.or_(free, expired(kind, take_over_before))


def taken(worker_id: str, now: float | None = None) -> dict:
    """The values a claim writes: the holder and its first heartbeat."""
    return {"worker_id": worker_id, "heartbeat_at": time.time() if now is None else now}


def freed() -> dict:
    """The values of a row no worker holds any more."""
    return {"worker_id": None, "heartbeat_at": None}


def update(conn: sa.Connection, kind: Leased, row_id: str, values: dict, where: Iterable = ()) -> bool:
    """`UPDATE <table> SET values WHERE id = row_id AND where`; True when this caller won the row."""
    q = kind.table.update().where(kind.c.id == row_id, *where).values(**values)
    return conn.execute(q).rowcount == 1


def claim(conn: sa.Connection, kind: Leased, row_id: str, worker_id: str, *, values: dict | None = None,
          take_over_before: float | None = None) -> bool:
    """free -> held under `worker_id`; with `take_over_before`, also a held row whose lease expired
    before that time (its worker died: the claimant takes it over)."""
    return update(conn, kind, row_id, {"status": kind.held, **taken(worker_id), **(values or {})},
                  [claimable(kind, take_over_before), *kind.live])


def candidates(conn: sa.Connection, kind: Leased, *, order_by, limit: int = 8,
               take_over_before: float | None = None) -> list[str]:
    """Ids of rows a claim may win, oldest first: free ones (and expired held ones)."""
    return list(conn.execute(sa.select(kind.c.id).where(claimable(kind, take_over_before), *kind.live)
                             .order_by(*order_by).limit(limit)).scalars())


def claim_first(conn: sa.Connection, kind: Leased, worker_id: str, *, order_by, take_over_before: float | None = None,
                values: dict | None = None) -> str | None:
    """Claim the oldest row this worker can win (`candidates`, then `claim` each until one is won);
    its id, or None when there is none."""
    for row_id in candidates(conn, kind, order_by=order_by, take_over_before=take_over_before):
        if claim(conn, kind, row_id, worker_id, values=values, take_over_before=take_over_before):
            return row_id
    return None


def heartbeat(conn: sa.Connection, kind: Leased, row_id: str, worker_id: str, values: dict | None = None) -> bool:
    """Refresh the lease (and write `values`); False when the row is no longer this worker's."""
    return update(conn, kind, row_id, {"heartbeat_at": time.time(), **(values or {})}, owned(kind, worker_id))


def release(conn: sa.Connection, kind: Leased, row_id: str, worker_id: str, values: dict | None = None) -> bool:
    """held -> free: the worker stops and another continues the row later."""
    return update(conn, kind, row_id, {"status": kind.free, **freed(), **(values or {})}, owned(kind, worker_id))


def finish(conn: sa.Connection, kind: Leased, row_id: str, worker_id: str, status: str,
           values: dict | None = None) -> bool:
    """held -> `status` (a final one), written only while `worker_id` holds the row."""
    return update(conn, kind, row_id, {"status": status, **(values or {})}, owned(kind, worker_id))


def expired_ids(conn: sa.Connection, kind: Leased, lease_seconds: float) -> tuple[list[str], float]:
    """(ids of held rows whose lease expired, the cutoff used): what a reaper requeues or fails,
    each with a write fenced on `expired(kind, cutoff)`."""
    cutoff = time.time() - lease_seconds
    ids = list(conn.execute(sa.select(kind.c.id).where(expired(kind, cutoff))).scalars())
    return ids, cutoff


def mine(row: Any, kind: Leased, worker_id: str) -> bool:
    """Is `row` (read back: its status and worker_id) still held by `worker_id`?"""
    return row is not None and row.status == kind.held and row.worker_id == worker_id


# -- leases that are a due time (webhook deliveries) ------------------------------------------------

@dataclass(frozen=True)
class Due:
    """A table whose `status == waiting` rows are taken when `due_column` <= now; a claim writes
    the lease's end into `due_column` and that value is the holder's token."""
    table: sa.Table
    waiting: str
    due_column: str

    @property
    def due(self) -> sa.Column:
        return self.table.c[self.due_column]


def due_claim(conn: sa.Connection, kind: Due, row_id: str, seen: float, until: float,
              values: dict | None = None) -> bool:
    """Take a due row whose due time is still `seen`, holding it until `until` (the token)."""
    q = kind.table.update().where(kind.table.c.id == row_id, kind.table.c.status == kind.waiting,
                                  kind.due == seen).values(**{kind.due_column: until, **(values or {})})
    return conn.execute(q).rowcount == 1


def due_settle(conn: sa.Connection, kind: Due, row_id: str, token: float, values: dict) -> bool:
    """The holder's final write of its claim, fenced on its token (a holder whose lease ended and
    whose row was claimed again writes nothing)."""
    q = kind.table.update().where(kind.table.c.id == row_id, kind.table.c.status == kind.waiting,
                                  kind.due == token).values(**values)
    return conn.execute(q).rowcount == 1


# -- the holder's side ------------------------------------------------------------------------------

class Heartbeat:
    """A thread that heartbeats one lease every `seconds` until stopped; `lost` is set when a beat
    finds the row no longer this worker's (cancelled, deleted, taken over). A beat that fails
    (database briefly unreachable) is retried at the next one: the lease has slack."""

    def __init__(self, engine: sa.Engine, kind: Leased, row_id: str, worker_id: str, seconds: float,
                 values: Callable[[], dict] | None = None, log: logging.Logger | None = None):
        self.engine, self.kind, self.row_id, self.worker_id = engine, kind, row_id, worker_id
        self.seconds, self.values, self.log = seconds, values, log or logging.getLogger(__name__)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"openft-lease-{row_id}", daemon=True)

    def beat(self) -> bool:
        with self.engine.begin() as conn:
            won = heartbeat(conn, self.kind, self.row_id, self.worker_id, self.values() if self.values else None)
        if not won:
            self.lost.set()
        return won

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                if not self.beat():
                    return
            except sa.exc.OperationalError:
                self.log.warning("heartbeat of %s failed; retrying", self.row_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def poll_until_stopped(run_once: Callable[[], Any], stop: threading.Event, poll_seconds: float,
                       logger: logging.Logger) -> None:
    """Call `run_once()` until `stop` is set, waiting `poll_seconds` whenever it found nothing to do
    (returned None) or raised (logged; the loop goes on)."""
    while not stop.is_set():
        try:
            ran = run_once()
        except Exception:
            logger.exception("loop error")
            ran = None
        if ran is None:
            stop.wait(poll_seconds)
