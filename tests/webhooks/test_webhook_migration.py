"""Migration 6 gives a database of the first release the webhook tables, and a job on it that
is cancelled afterwards enqueues its delivery."""

from __future__ import annotations

import sqlalchemy as sa

from openft.jobs import state
from openft.store.db import migrate, webhook_deliveries, webhook_endpoints


def test_migration_6_adds_the_webhook_tables(v1_database):
    eng, old = v1_database
    assert "webhook_endpoints" not in sa.inspect(eng).get_table_names()
    with eng.begin() as conn:
        conn.execute(old["jobs"].insert().values(
            id="ftjob-old", project_id="p", seq=1, model="m", base_model="m", status="queued", created_at=1,
            method={}, training_file="file-a", result_files=[], seed=1, attempts=0))
    assert 6 in migrate(eng)
    assert {"webhook_endpoints", "webhook_deliveries", "webhook_attempts"} <= set(sa.inspect(eng).get_table_names())
    with eng.begin() as conn:
        conn.execute(webhook_endpoints.insert().values(
            id="wh_1", project_id="p", seq=1, name="n", url="https://93.184.215.14/", secret="whsec_AAAA",
            event_types=["fine_tuning.job.cancelled"], created_at=1, updated_at=1, deleted=False))
        assert state.cancel(conn, "ftjob-old")
    with eng.connect() as conn:
        rows = conn.execute(sa.select(webhook_deliveries.c.event_type, webhook_deliveries.c.status)).all()
    assert [tuple(r) for r in rows] == [("fine_tuning.job.cancelled", "pending")]
    assert migrate(eng) == []
