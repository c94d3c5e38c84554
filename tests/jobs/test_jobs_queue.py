"""The queue in the database: atomic claim, heartbeat fencing, lease expiry, naming, settings."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from openft.config import Settings
from openft.jobs import naming, queue
from openft.jobs.backends.local import describe_exit, settings_env
from openft.store.db import checkpoints, jobs
from tests.support.jobs import event_messages, insert_job, job_row


def _add_checkpoint(engine, jid: str, step: int, path: Path, deleted: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with engine.begin() as conn:
        conn.execute(checkpoints.insert().values(
            id=f"ftckpt_{jid[-6:]}{step}", job_id=jid, project_id="proj-test", created_at=int(time.time()),
            step_number=step, fine_tuned_model_checkpoint=f"ft:x:{jid}:ckpt-step-{step}", metrics={"step": step},
            path=str(path), deleted=deleted))


def test_model_names():
    assert naming.fine_tuned_model_id("openft-tiny", "acme", "reviews", "ftjob-AbCdEfGh123") == \
        "ft:openft-tiny:acme:reviews:AbCdEfGh"
    assert naming.fine_tuned_model_id("openft-tiny", "acme", None, "ftjob-AbCdEfGh123") == "ft:openft-tiny:acme::AbCdEfGh"
    assert naming.fine_tuned_model_id("org/Model", "acme", "a:b", "ftjob-x1234567z") == "ft:org--Model:acme:a--b:x1234567"
    assert naming.checkpoint_model_id("ft:m:o::abcdefgh", 12) == "ft:m:o::abcdefgh:ckpt-step-12"


def test_claim_takes_oldest_and_only_once(engine, settings):
    older = insert_job(engine, "file-a", created_at=1000)
    newer = insert_job(engine, "file-a", created_at=2000)
    insert_job(engine, "file-a", status="validating_files", created_at=10)
    first = queue.claim_next(engine, "w1", settings.data_dir)
    assert first["id"] == older and first["status"] == "running" and first["worker_id"] == "w1"
    assert first["attempts"] == 1 and first["started_at"] and first["heartbeat_at"]
    assert first["output_dir"] == str((settings.data_dir / "jobs" / older).resolve())
    second = queue.claim_next(engine, "w2", settings.data_dir)
    assert second["id"] == newer and second["worker_id"] == "w2"
    assert queue.claim_next(engine, "w3", settings.data_dir) is None  # validating_files is not claimable


def test_concurrent_claims_never_share_a_job(engine, settings):
    ids = {insert_job(engine, "file-a") for _ in range(5)}
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def claimer(w: str):
        while (job := queue.claim_next(engine, w, settings.data_dir)) is not None:
            with lock:
                claimed.append((job["id"], w))

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for j, _ in claimed) == sorted(ids)  # each job exactly once
    for jid, w in claimed:
        assert job_row(engine, jid)["worker_id"] == w


def test_heartbeat_is_fenced_on_the_claiming_worker(engine, settings):
    jid = insert_job(engine, "file-a")
    queue.claim_next(engine, "w1", settings.data_dir)
    assert queue.heartbeat(engine, jid, "w1")
    assert not queue.heartbeat(engine, jid, "w2")
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(status="cancelled"))
    assert not queue.heartbeat(engine, jid, "w1")


def test_expired_lease_requeues_from_newest_checkpoint(engine, settings, tmp_path):
    jid = insert_job(engine, "file-a")
    fresh = insert_job(engine, "file-a")
    queue.claim_next(engine, "dead", settings.data_dir)
    queue.claim_next(engine, "alive", settings.data_dir)
    _add_checkpoint(engine, jid, 4, tmp_path / "step-4")
    _add_checkpoint(engine, jid, 8, tmp_path / "step-8")
    _add_checkpoint(engine, jid, 12, tmp_path / "step-12", deleted=True)
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(heartbeat_at=time.time() - 100))
    reaped = queue.reap_expired(engine, lease_seconds=30)
    assert [(r.job_id, r.requeued, r.resume_step) for r in reaped] == [(jid, True, 8)]
    row = job_row(engine, jid)
    assert row["status"] == "queued" and row["worker_id"] is None
    assert row["resume_checkpoint"] == str(tmp_path / "step-8")
    assert "continue from checkpoint step 8" in event_messages(engine, jid)[-1]
    assert job_row(engine, fresh)["status"] == "running"  # its heartbeat is fresh
    # the dead worker can no longer write: its heartbeat is refused
    assert not queue.heartbeat(engine, jid, "dead")


def test_expired_lease_without_checkpoint_and_attempt_limit(engine, settings):
    jid = insert_job(engine, "file-a")
    for attempt in (1, 2):
        queue.claim_next(engine, f"w{attempt}", settings.data_dir)
        with engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == jid).values(heartbeat_at=time.time() - 100))
        (r,) = queue.reap_expired(engine, lease_seconds=30, max_attempts=2)
        if attempt == 1:
            assert r.requeued and r.resume_step is None
            assert "from the beginning" in event_messages(engine, jid)[-1]
    row = job_row(engine, jid)
    assert row["status"] == "failed" and row["error"]["code"] == "worker_lost" and row["finished_at"]


def test_describe_exit():
    code, msg = describe_exit(-9, "", oom_killed=True)  # the kernel recorded an OOM kill
    assert code == "out_of_memory" and "SIGKILL" in msg
    for oom_killed in (False, None):  # no record (or none readable): never called out-of-memory
        code, msg = describe_exit(-9, "", oom_killed=oom_killed)
        assert code == "training_process_died" and "killed by signal 9 (SIGKILL)" in msg
    code, msg = describe_exit(-11, "")
    assert code == "training_process_died" and "SIGSEGV" in msg
    code, msg = describe_exit(1, "Traceback...\nRuntimeError: boom\n")
    assert code == "training_process_died" and "RuntimeError: boom" in msg and "code 1" in msg


def test_settings_survive_the_trip_to_the_child(settings, monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith("OPENFT_"):
            monkeypatch.delenv(k)
    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    child = Settings()
    assert child.resolved_database_url() == settings.resolved_database_url()
    assert Path(child.data_dir) == Path(settings.data_dir).resolve()
    assert child.lease_seconds == settings.lease_seconds and child.api_key is None  # no credentials
    assert child.embedded_worker == settings.embedded_worker



def test_pauses_do_not_count_as_lost_workers(engine, settings):
    jid = insert_job(engine, "file-a")
    for _ in range(3):  # claimed, paused, resumed: three attempts, no worker lost
        queue.claim_next(engine, "w", settings.data_dir)
        with engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == jid).values(status="queued", worker_id=None))
    queue.claim_next(engine, "w", settings.data_dir)
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(heartbeat_at=time.time() - 100))
    (r,) = queue.reap_expired(engine, lease_seconds=30, max_attempts=2)
    assert r.requeued and job_row(engine, jid)["attempts"] == 4


def test_runner_leaves_a_job_that_is_not_running_alone(engine, settings):
    import os
    import subprocess
    import sys

    jid = insert_job(engine, "file-a", status="cancelled")
    out = subprocess.run([sys.executable, "-m", "openft.jobs.runner", jid], capture_output=True, text=True,
                         env={**os.environ, **settings_env(settings)}, timeout=120)
    assert out.returncode == 0 and "nothing to do" in out.stdout
    assert job_row(engine, jid)["status"] == "cancelled"
