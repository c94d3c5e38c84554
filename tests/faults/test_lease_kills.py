"""Kill -9 of the server during an export, during an eval run and during a webhook retry: each
resumes from its lease like a job. After a restart on the same data folder the row still says a
worker holds it; once that lease expires (OPENFT_LEASE_SECONDS, 5 s here; a webhook delivery's
own lease of 2 x timeout + 30 s) the new server's worker takes it over and finishes it.

Each kill lands at a named fault point (openft.faults, `OPENFT_FAULT` with a once-folder):
the server holds there until the test, seeing the point's file appear, kills it; the restarted
server runs past the point. The real server (`python -m openft serve`), the `openai` SDK (httpx
for openft's export extension) and a receiver that counts requests; on SQLite, and on PostgreSQL
when OPENFT_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from openft.store.db import eval_output_items, eval_runs, exports, webhook_attempts, webhook_deliveries
from tests.support.receiver import Receiver
from tests.support.servers import LiveServer
from tests.support.wait import wait_until

PG_URL = os.environ.get("OPENFT_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite"] + (["postgres"] if PG_URL else []))
def database(request):
    """{} for SQLite in the data folder, or OPENFT_DATABASE_URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
        return
    name = "openft_test_" + secrets.token_hex(6)
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield {"OPENFT_DATABASE_URL": sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)}
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def _kill_at(server: LiveServer, point: Path, timeout: float = 120) -> None:
    """Wait until the server holds at the fault point, then kill -9 it (its worker threads with it)."""
    wait_until(point.exists, timeout, what=f"the server to reach {point.name}")
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)
    server.stop()


def _row(server: LiveServer, env: dict, table: sa.Table, row_id: str):
    url = env.get("OPENFT_DATABASE_URL")
    db = sa.create_engine(url) if url else server.db()
    try:
        with db.connect() as conn:
            return conn.execute(sa.select(table).where(table.c.id == row_id)).one()
    finally:
        db.dispose()


def _items(server: LiveServer, env: dict, run_id: str) -> list[str]:
    url = env.get("OPENFT_DATABASE_URL")
    db = sa.create_engine(url) if url else server.db()
    try:
        with db.connect() as conn:
            return list(conn.execute(sa.select(eval_output_items.c.id).where(
                eval_output_items.c.run_id == run_id)).scalars())
    finally:
        db.dispose()


def _env(tmp_path: Path, database: dict, fault: str, **extra) -> dict:
    once = tmp_path / "faults"
    once.mkdir(exist_ok=True)
    return {"OPENFT_FAULT": fault, "OPENFT_FAULT_ONCE_DIR": str(once), **database, **extra}


def test_an_export_killed_mid_run_is_taken_over_after_its_lease(tmp_path, model_cache, database):
    env = _env(tmp_path, database, "export-start@1:hold")
    server = LiveServer(tmp_path / "data", model_cache, env=env).start()
    try:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        e = httpx.post(f"{server.base_url}/models/openft-tiny/exports", json={"format": "gguf", "quantization": "f16"},
                       headers=headers, timeout=60).json()
        _kill_at(server, tmp_path / "faults" / "export-start@1")
    finally:
        server.stop()
    held = _row(server, env, exports, e["id"])
    assert (held.status, held.attempts) == ("running", 1) and held.worker_id  # the dead worker's lease

    again = LiveServer(server.data_dir, model_cache, env=env).start()
    try:
        http = httpx.Client(base_url=again.base_url, headers=headers, timeout=60)
        done = wait_until(lambda: (x := http.get(f"/exports/{e['id']}").json())["status"] in ("succeeded", "failed") and x,
                     240, what="the export to finish")
        assert done["status"] == "succeeded" and done["error"] is None and done["progress"] == 1.0, done
        content = http.get(f"/exports/{e['id']}/content")
        assert content.status_code == 200 and content.content[:4] == b"GGUF" and len(content.content) == done["bytes"]
        row = _row(again, env, exports, e["id"])
        assert row.attempts == 2 and row.worker_id is None and row.worker_id != held.worker_id
    finally:
        again.stop()


def test_an_eval_run_killed_after_its_first_item_continues_after_its_lease(tmp_path, model_cache, database):
    env = _env(tmp_path, database, "eval-item@1:hold")
    server = LiveServer(tmp_path / "data", model_cache, env=env).start()
    n = 8
    try:
        client = server.client()
        ev = client.evals.create(name="kill", data_source_config={
            "type": "custom", "include_sample_schema": True,
            "item_schema": {"type": "object", "properties": {"label": {"type": "string"}}}},
            testing_criteria=[{"type": "string_check", "name": "eq", "input": "{{sample.output_text}}",
                               "reference": "{{item.label}}", "operation": "eq"}])
        content = [{"item": {"label": "yes"}, "sample": {"output_text": "yes" if i % 2 == 0 else "no"}}
                   for i in range(n)]
        run = client.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {
            "type": "file_content", "content": content}})
        _kill_at(server, tmp_path / "faults" / "eval-item@1")
    finally:
        server.stop()
    held = _row(server, env, eval_runs, run.id)
    assert held.status == "in_progress" and held.worker_id
    before = _items(server, env, run.id)
    assert len(before) == 1  # the kill landed after the first item and before any other

    again = LiveServer(server.data_dir, model_cache, env=env).start()
    try:
        client = again.client()
        done = wait_until(lambda: (r := client.evals.runs.retrieve(run.id, eval_id=ev.id)).status
                     in ("completed", "failed", "canceled") and r, 120, what="the run to finish")
        assert done.status == "completed", done.error
        assert (done.result_counts.total, done.result_counts.passed, done.result_counts.failed) == (n, n // 2, n // 2)
        items = client.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=100).data
        assert sorted(i.datasource_item_id for i in items) == list(range(n))  # each item once
        assert before[0] in {i.id for i in items}  # the item written before the kill was kept, not redone
        assert _row(again, env, eval_runs, run.id).worker_id != held.worker_id
    finally:
        again.stop()


@pytest.mark.slow  # the delivery's lease is 2 x 1 s + 30 s
# SQLite only: the due-time lease's fenced UPDATEs run on PostgreSQL in tests/jobs/test_lease.py, and a
# second 35 s wait for the same lease would only repeat the restart
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_webhook_retry_killed_mid_attempt_is_sent_after_its_lease(tmp_path, model_cache, database):
    """Attempt 1 gets a 500; the server is killed as it starts attempt 2 (the retry). After the
    restart the delivery comes due again when that attempt's lease ends: attempt 3 delivers it.
    The killed attempt counted (attempts 1 and 3 are recorded) and sent nothing."""
    receiver = Receiver([500])
    env = _env(tmp_path, database, "webhook-attempt@2:hold", OPENFT_WEBHOOKS_ALLOW_PRIVATE="1",
               OPENFT_WEBHOOKS_RETRY_SECONDS="0.2", OPENFT_WEBHOOKS_TIMEOUT_SECONDS="1")
    server = LiveServer(tmp_path / "data", model_cache, env=env).start()
    try:
        client = server.client()
        ep = client.webhooks.create(url=receiver.url, event_types=["eval.run.succeeded"], name="kill")
        ev = client.evals.create(name="w", data_source_config={
            "type": "custom", "include_sample_schema": True,
            "item_schema": {"type": "object", "properties": {"label": {"type": "string"}}}},
            testing_criteria=[{"type": "string_check", "name": "eq", "input": "{{sample.output_text}}",
                               "reference": "{{item.label}}", "operation": "eq"}])
        client.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": [
            {"item": {"label": "yes"}, "sample": {"output_text": "yes"}}]}})
        _kill_at(server, tmp_path / "faults" / "webhook-attempt@2")
    finally:
        server.stop()
    assert len(receiver.requests) == 1
    url = env.get("OPENFT_DATABASE_URL")
    db = sa.create_engine(url) if url else server.db()
    try:
        with db.connect() as conn:
            d = conn.execute(sa.select(webhook_deliveries)).one()
    finally:
        db.dispose()
    assert (d.status, d.attempts) == ("pending", 2) and d.next_attempt_at > time.time()  # held under its lease

    again = LiveServer(server.data_dir, model_cache, env=env).start()
    try:
        client = again.client()
        deliveries = lambda: client.get(f"/webhook_endpoints/{ep.id}/deliveries", cast_to=object)["data"]  # noqa: E731
        done = wait_until(lambda: [x for x in deliveries() if x["status"] == "delivered"], 90, what="the delivery")[0]
        assert [(a["attempt"], a["status_code"]) for a in done["attempts"]] == [(1, 500), (3, 200)]
        assert len(receiver.requests) == 2
        assert _row(again, env, webhook_deliveries, d.id).attempts == 3
        db = again.db() if not url else sa.create_engine(url)
        try:
            with db.connect() as conn:
                assert conn.execute(sa.select(sa.func.count()).select_from(webhook_attempts)).scalar() == 2
        finally:
            db.dispose()
    finally:
        again.stop()
        receiver.close()
