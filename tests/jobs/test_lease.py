"""openft.jobs.lease on a real database (SQLite, and PostgreSQL when configured): one holder per
row, every holder's write fenced on its lease, expired leases taken over; the due-time lease of
webhook deliveries fenced on its token; the eval-run state module's one cancel rule."""

from __future__ import annotations

import time

import sqlalchemy as sa

from openft.jobs import eval_state, exports, lease
from openft.jobs.webhook_delivery import LEASE as DELIVERY
from openft.store.db import eval_runs, webhook_deliveries, webhook_endpoints
from tests.support.jobs import PROJECT


def _export(engine, eid="export-" + "a" * 24):
    with engine.begin() as conn:
        conn.execute(exports.exports.insert().values(
            id=eid, project_id=PROJECT, seq=1, model="openft-tiny", format="merged", status="queued", progress=0.0,
            stage="queued", created_at=int(time.time()), attempts=0))
    return eid


def test_one_holder_and_every_write_fenced_on_the_lease(engine):
    eid = _export(engine)
    kind = exports.LEASE
    with engine.begin() as conn:
        assert lease.claim(conn, kind, eid, "w1")
        assert not lease.claim(conn, kind, eid, "w2")  # held: nobody else wins it
        assert lease.heartbeat(conn, kind, eid, "w1", {"stage": "merging"})
        assert not lease.heartbeat(conn, kind, eid, "w2")
        assert not lease.finish(conn, kind, eid, "w2", "succeeded")
        row = conn.execute(sa.select(exports.exports).where(exports.exports.c.id == eid)).one()
    assert lease.mine(row, kind, "w1") and not lease.mine(row, kind, "w2") and row.stage == "merging"
    # w1's heartbeat goes stale: w2 takes the row over, and w1 can no longer write anything
    with engine.begin() as conn:
        conn.execute(exports.exports.update().values(heartbeat_at=time.time() - 60))
        assert not lease.claim(conn, kind, eid, "w2", take_over_before=time.time() - 120)  # not stale enough
        assert lease.candidates(conn, kind, order_by=[exports.exports.c.seq], take_over_before=time.time() - 30) \
            == [eid]
        ids, _ = lease.expired_ids(conn, kind, 30)
        assert ids == [eid]
        assert lease.claim(conn, kind, eid, "w2", take_over_before=time.time() - 30)
        assert not lease.heartbeat(conn, kind, eid, "w1")
        assert not lease.release(conn, kind, eid, "w1")
        assert not lease.finish(conn, kind, eid, "w1", "failed")
        assert lease.release(conn, kind, eid, "w2")
        row = conn.execute(sa.select(exports.exports).where(exports.exports.c.id == eid)).one()
    assert (row.status, row.worker_id, row.heartbeat_at) == ("queued", None, None)


def test_the_heartbeat_thread_sees_a_lost_lease(engine):
    eid = _export(engine)
    with engine.begin() as conn:
        assert lease.claim(conn, exports.LEASE, eid, "w1")
    with lease.Heartbeat(engine, exports.LEASE, eid, "w1", 0.05) as beat:
        assert beat.beat() and not beat.lost.is_set()
        with engine.begin() as conn:  # taken away (as a takeover or a delete would)
            conn.execute(exports.exports.update().values(worker_id="w2"))
        assert beat.lost.wait(5)


def test_a_due_lease_is_fenced_on_its_token(engine):
    with engine.begin() as conn:
        conn.execute(webhook_endpoints.insert().values(
            id="we_1", project_id=PROJECT, seq=1, name="x", url="http://example.com", event_types=[], secret="s",
            created_at=0, updated_at=0, deleted=False))
        conn.execute(webhook_deliveries.insert().values(
            id="wd_1", seq=1, endpoint_id="we_1", project_id=PROJECT, event_id="evt_1", event_type="x", payload="{}",
            created_at=0, status="pending", attempts=0, next_attempt_at=1.0))
        assert lease.due_claim(conn, DELIVERY, "wd_1", 1.0, 100.0)
        assert not lease.due_claim(conn, DELIVERY, "wd_1", 1.0, 200.0)  # already taken
        assert lease.due_claim(conn, DELIVERY, "wd_1", 100.0, 300.0)  # the first lease ended: claimed again
        assert not lease.due_settle(conn, DELIVERY, "wd_1", 100.0, {"status": "delivered"})  # the first holder
        assert lease.due_settle(conn, DELIVERY, "wd_1", 300.0, {"status": "delivered", "next_attempt_at": None})


def test_eval_runs_have_one_cancel_rule(engine):
    def run(rid, status="queued"):
        with engine.begin() as conn:
            conn.execute(eval_runs.insert().values(
                id=rid, eval_id="eval_1", project_id=PROJECT, seq=int(rid[-1]), name=rid, status=status,
                created_at=0, data_source={}, items=[], usage={}, deleted=False))

    for rid in ("evalrun_1", "evalrun_2", "evalrun_3"):
        run(rid)
    with engine.begin() as conn:
        assert lease.candidates(conn, eval_state.LEASE, order_by=[eval_runs.c.seq]) == ["evalrun_1", "evalrun_2",
                                                                                         "evalrun_3"]
        assert eval_state.claim_next(conn, "w1", 5) == "evalrun_1"  # the oldest
        assert eval_state.cancel(conn, "evalrun_1")  # in progress
        assert eval_state.cancel(conn, "evalrun_2")  # queued
        assert not eval_state.cancel(conn, "evalrun_2")  # finished: not again
        assert not eval_state.heartbeat(conn, "evalrun_1", "w1", {})  # its worker stops
        assert not eval_state.finish(conn, "evalrun_1", "w1", "completed")
        eval_state.delete(conn, ["evalrun_3"])  # deleting a live run cancels it by the same rule
        rows = {r.id: r for r in conn.execute(sa.select(eval_runs))}
    for rid in ("evalrun_1", "evalrun_2", "evalrun_3"):
        assert rows[rid].status == "canceled" and rows[rid].finished_at and rows[rid].worker_id is None, rid
    assert rows["evalrun_3"].deleted and not rows["evalrun_1"].deleted
