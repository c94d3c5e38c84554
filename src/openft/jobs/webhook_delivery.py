"""The webhook delivery loop: a worker thread beside the job and eval-run loops that sends the
pending deliveries (openft.webhooks.events.enqueue wrote them with the status change).

A due delivery is claimed by pushing its `next_attempt_at` one lease ahead (openft.jobs.lease's
due-time lease, `LEASE`: a fenced UPDATE, so two workers never send the same attempt, and a
worker that dies mid-attempt leaves a delivery that comes due again after the lease). The
attempt's record and outcome are written fenced on the lease the claim wrote, so a worker whose
lease ran out and whose delivery was claimed again records nothing. Each attempt is signed afresh (Standard
Webhooks, openft.webhooks.signing), sent to a checked public address (openft.webhooks.targets)
and recorded in `webhook_attempts` (HTTP status or error, time, duration). A 2xx answer delivers
it; anything else waits `webhooks_retry_seconds * 2**(attempt-1)` (at most
`webhooks_retry_max_seconds`) until `webhooks_max_attempts` attempts failed. Deliveries live
in the database, so they survive a restart. A slow endpoint holds up only its own thread of
a small pool, never a job.

Test-only fault point (openft.faults, inert unless OPENFT_FAULT is set): `webhook-attempt@N`
fires as a worker starts attempt N of a delivery, before anything is sent.

Knows the webhook tables and settings; nothing about HTTP routes or training.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from openft.config import Settings
from openft.faults import fault_point
from openft.jobs import lease
from openft.jobs.lease import poll_until_stopped
from openft.store.db import webhook_attempts, webhook_deliveries, webhook_endpoints
from openft.webhooks import signing, targets

log = logging.getLogger("openft.worker.webhooks")
BATCH = 4  # deliveries sent at once (threads)
LEASE = lease.Due(webhook_deliveries, waiting="pending", due_column="next_attempt_at")


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    return min(settings.webhooks_retry_max_seconds, settings.webhooks_retry_seconds * 2 ** (attempt - 1))


class WebhookDeliverer:
    def __init__(self, settings: Settings, db: sa.Engine):
        self.settings, self.db = settings, db
        self.lease = 2 * settings.webhooks_timeout_seconds + 30  # an attempt ends well within this
        self._pool: ThreadPoolExecutor | None = None  # run_forever's; run_once alone sends in this thread

    def run_forever(self, stop_event: threading.Event) -> None:
        with ThreadPoolExecutor(BATCH, thread_name_prefix="openft-webhook") as pool:
            self._pool = pool
            try:
                poll_until_stopped(self.run_once, stop_event, self.settings.worker_poll_seconds, log)
            finally:
                self._pool = None

    def run_once(self) -> int | None:
        """Claim the due deliveries (at most BATCH) and send them; None when none was due."""
        claimed = self.claim()
        if not claimed:
            return None
        if self._pool is None:
            for d in claimed:
                self.attempt(*d)
        else:
            list(self._pool.map(lambda c: self.attempt(*c), claimed))
        return len(claimed)

    def claim(self, limit: int = BATCH) -> list[tuple[str, float]]:
        """(delivery id, lease token) of each due delivery this worker won (one more attempt each)."""
        now = time.time()
        t = webhook_deliveries
        with self.db.begin() as conn:
            due = conn.execute(sa.select(t.c.id, t.c.next_attempt_at).where(
                t.c.status == "pending", t.c.next_attempt_at <= now)
                .order_by(t.c.next_attempt_at).limit(limit)).all()
            until = now + self.lease
            return [(row.id, until) for row in due
                    if lease.due_claim(conn, LEASE, row.id, row.next_attempt_at, until,
                                       {"attempts": t.c.attempts + 1})]

    def attempt(self, delivery_id: str, token: float) -> bool:
        """One attempt of a delivery claimed with lease `token`, recorded; True when delivered."""
        with self.db.connect() as conn:
            d = conn.execute(sa.select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)).first()
            ep = conn.execute(sa.select(webhook_endpoints).where(webhook_endpoints.c.id == d.endpoint_id)).first()
        fault_point("webhook-attempt", d.attempts)  # test-only, inert by default
        started = time.time()
        code, error = None, None
        if ep is None or ep.deleted:
            error = "The webhook endpoint was deleted."
        else:
            keep_old = ep.previous_secret and (ep.previous_secret_until or 0) > started
            keys = [ep.secret, ep.previous_secret] if keep_old else [ep.secret]
            body = d.payload.encode()
            try:
                code = targets.post(ep.url, body, signing.headers(keys, d.event_id, body),
                                    timeout=self.settings.webhooks_timeout_seconds,
                                    allow_private=self.settings.webhooks_allow_private)
                if not 200 <= code < 300:
                    error = f"The endpoint answered HTTP {code}."
            except targets.TargetRefused as e:
                error = str(e)
            except (OSError, http.client.HTTPException) as e:
                error = f"{type(e).__name__}: {e}"[:1000]
        ok = error is None
        gone = ep is None or ep.deleted
        finished = ok or gone or d.attempts >= self.settings.webhooks_max_attempts
        values = {"status": "delivered" if ok else "failed", "finished_at": int(time.time()),
                  "next_attempt_at": None} if finished else \
            {"next_attempt_at": time.time() + backoff(self.settings, d.attempts)}
        with self.db.begin() as conn:
            if not lease.due_settle(conn, LEASE, delivery_id, token, values):
                log.warning("webhook delivery %s: its lease ended during the attempt; not recorded", delivery_id)
                return ok
            conn.execute(webhook_attempts.insert().values(
                delivery_id=delivery_id, attempt=d.attempts, started_at=started,
                duration_ms=int((time.time() - started) * 1000), status_code=code, error=error))
        if not ok:
            log.info("webhook %s to %s: attempt %s failed: %s", d.event_type, ep.url if ep else "?", d.attempts, error)
        return ok


def start_thread(settings: Settings, db: sa.Engine, stop_event: threading.Event) -> threading.Thread:
    """The delivery loop in a daemon thread; it ends when `stop_event` is set."""
    t = threading.Thread(target=WebhookDeliverer(settings, db).run_forever, args=(stop_event,),
                         name="openft-webhooks", daemon=True)
    t.start()
    return t
