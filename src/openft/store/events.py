"""Job events: the one function every writer (API, validator, worker, runner) uses."""

from __future__ import annotations

import time

import sqlalchemy as sa

from openft.ids import event_id
from openft.store.db import job_events


def add_event(conn: sa.Connection, job_id: str, message: str, *, level: str = "info",
              type: str = "message", data: dict | None = None) -> str:
    eid = event_id()
    conn.execute(job_events.insert().values(
        id=eid, job_id=job_id, created_at=int(time.time()), level=level, message=message,
        type=type, data=data))
    return eid
