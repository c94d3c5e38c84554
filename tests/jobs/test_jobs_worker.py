"""The worker with real runner child processes: failures, kills, cancel, stop, worker death.

These do not need training to succeed: they act while the runner starts up or fails, and
check what the worker and the database make of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import sqlalchemy as sa

from openft.jobs import queue
from openft.jobs.backends.local import settings_env
from openft.jobs.worker import Worker
from openft.store.db import jobs
from tests.support.data import chat_rows, write_jsonl
from tests.support.jobs import event_messages, insert_job, job_row, store_file
from tests.support.wait import wait_until


def _valid_job(settings, engine, tmp_path, **kw) -> str:
    fid = store_file(settings, engine, write_jsonl(tmp_path / "train.jsonl", chat_rows(12)))
    return insert_job(engine, fid, hyperparameters={"n_epochs": 50, "batch_size": 1}, **kw)


@contextlib.contextmanager
def _standalone_worker_running(engine, settings, jid):
    """`python -m openft.jobs.worker` once it has claimed `jid` and started its runner: yields
    (worker process, runner process); the worker is killed on the way out if still alive."""
    env = {**os.environ, **settings_env(settings)}
    proc = subprocess.Popen([sys.executable, "-m", "openft.jobs.worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: job_row(engine, jid)["status"] == "running", 60, interval=0.05, what="the job to be claimed")
        yield proc, wait_until(lambda: next(iter(psutil.Process(proc.pid).children()), None), 30, interval=0.02,
                               what="the runner")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _in_thread(worker: Worker):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("job", worker.run_once()), daemon=True)
    t.start()
    wait_until(lambda: worker.process is not None or not t.is_alive(), 30, interval=0.01, what="the runner to start")
    return t, out


def test_run_once_without_jobs_returns_none(engine, settings):
    assert Worker(settings, engine=engine).run_once() is None


def test_runner_error_fails_the_job_with_its_code_and_param(engine, settings):
    jid = insert_job(engine, "file-doesnotexist")
    assert Worker(settings, engine=engine).run_once() == jid
    row = job_row(engine, jid)
    assert row["status"] == "failed" and row["finished_at"]
    assert row["error"]["code"] == "file_not_found" and row["error"]["param"] == "training_file"
    assert "file-doesnotexist" in row["error"]["message"]
    assert event_messages(engine, jid)[-1].startswith("Fine-tuning job failed: File file-doesnotexist")



def test_continuing_from_weights_that_are_not_an_adapter_fails_naming_the_model(engine, settings, tmp_path):
    """A full fine-tune's folder is never handed to the trainer as a LoRA adapter (the API
    refuses such jobs; this guards rows made another way)."""
    full = tmp_path / "full-model"
    full.mkdir()
    (full / "config.json").write_text("{}")
    jid = _valid_job(settings, engine, tmp_path, model="ft:openft-tiny:openft:full:abcdefgh", init_adapter=str(full))
    assert Worker(settings, engine=engine).run_once() == jid
    row = job_row(engine, jid)
    assert row["status"] == "failed" and row["error"]["param"] == "model"
    assert row["error"]["code"] == "model_not_available" and "not a LoRA adapter" in row["error"]["message"]

def test_runner_killed_by_sigkill_is_retried_then_fails_without_claiming_out_of_memory(engine, settings, tmp_path):
    """A SIGKILL the kernel did not record as an OOM kill is an infrastructure fault: the job is
    retried from its newest checkpoint (an event says so), and after runner_max_retries it fails
    saying what happened, never "out_of_memory"."""
    jid = _valid_job(settings, engine, tmp_path)
    worker = Worker(settings.model_copy(update={"runner_max_retries": 1}), engine=engine)
    t, out = _in_thread(worker)
    os.kill(worker.process.pid, signal.SIGKILL)
    t.join(60)
    assert out["job"] == jid
    row = job_row(engine, jid)
    assert row["status"] == "queued" and row["runner_retries"] == 1 and row["worker_id"] is None
    assert "killed by signal 9 (SIGKILL)" in event_messages(engine, jid)[-1]
    assert "retrying (attempt 1 of 1), resuming from the beginning" in event_messages(engine, jid)[-1]
    t, out = _in_thread(worker)  # the retry is claimed like any queued job; killed again: the bound is reached
    os.kill(worker.process.pid, signal.SIGKILL)
    t.join(60)
    row = job_row(engine, jid)
    assert row["status"] == "failed" and row["error"]["code"] == "training_process_died", row["error"]
    assert "killed by signal 9 (SIGKILL)" in row["error"]["message"]
    assert "out-of-memory killer" not in row["error"]["message"] and "retried 1 time " in row["error"]["message"]


def test_an_oom_kill_recorded_by_the_kernel_is_out_of_memory_and_not_retried(engine, settings, tmp_path, monkeypatch):
    """The kernel's OOM counter went up while the runner ran (faked here: the counter file is a
    boundary this test cannot make the kernel write) -> out_of_memory, no retry."""
    from openft.jobs import oom

    counter = tmp_path / "memory.events"
    counter.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    monkeypatch.setattr(oom, "_sources", lambda: [counter])
    monkeypatch.setattr(oom, "VMSTAT", tmp_path / "no-vmstat")
    jid = _valid_job(settings, engine, tmp_path)
    worker = Worker(settings, engine=engine)
    t, out = _in_thread(worker)
    counter.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    os.kill(worker.process.pid, signal.SIGKILL)
    t.join(60)
    row = job_row(engine, jid)
    assert row["status"] == "failed" and row["error"]["code"] == "out_of_memory" and row["runner_retries"] == 0
    assert "out-of-memory killer" in row["error"]["message"]


def test_cancel_stops_the_runner(engine, settings, tmp_path):
    jid = _valid_job(settings, engine, tmp_path)
    worker = Worker(settings, engine=engine, cancel_grace_seconds=1.0)
    t, out = _in_thread(worker)
    pid = worker.process.pid
    with engine.begin() as conn:  # what POST /cancel does
        conn.execute(jobs.update().where(jobs.c.id == jid).values(status="cancelled", finished_at=int(time.time())))
    t.join(60)
    assert not t.is_alive() and out["job"] == jid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    row = job_row(engine, jid)
    assert row["status"] == "cancelled" and row["error"] is None and row["fine_tuned_model"] is None


def test_stopping_the_worker_requeues_its_job(engine, settings, tmp_path):
    jid = _valid_job(settings, engine, tmp_path)
    worker = Worker(settings, engine=engine, stop_grace_seconds=2.0)
    t, out = _in_thread(worker)
    worker.stop()
    t.join(60)
    assert not t.is_alive()
    row = job_row(engine, jid)
    assert row["status"] == "queued" and row["worker_id"] is None and row["attempts"] == 1
    assert "The worker was stopped while running this job" in event_messages(engine, jid)[-1]


def test_run_forever_stops_on_its_event(engine, settings):
    stop = threading.Event()
    worker = Worker(settings, engine=engine)
    t = threading.Thread(target=worker.run_forever, args=(stop,))
    t.start()
    time.sleep(0.3)
    stop.set()
    t.join(10)
    assert not t.is_alive()


def test_worker_death_kills_the_runner_and_the_lease_expires(engine, settings, tmp_path):
    jid = _valid_job(settings, engine, tmp_path)
    with _standalone_worker_running(engine, settings, jid) as (proc, runner):
        proc.kill()
        proc.wait(10)
        runner.wait(10)  # the kernel kills the runner with its worker (PR_SET_PDEATHSIG)
    assert job_row(engine, jid)["status"] == "running"  # nobody knows yet...
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(
            heartbeat_at=sa.literal(time.time() - settings.lease_seconds - 1)))
    reaped = queue.reap_expired(engine, settings.lease_seconds)  # ...until the lease expires
    assert [r.job_id for r in reaped] == [jid]
    assert job_row(engine, jid)["status"] == "queued"


def test_sigterm_to_a_standalone_worker_requeues_its_job(engine, settings, tmp_path):
    jid = _valid_job(settings, engine, tmp_path)
    with _standalone_worker_running(engine, settings, jid) as (proc, runner):
        proc.send_signal(signal.SIGTERM)  # `kill <pid>` / Ctrl-C: stop in order
        assert proc.wait(60) == 0
        runner.wait(10)
    row = job_row(engine, jid)
    assert row["status"] == "queued" and row["worker_id"] is None
    assert "The worker was stopped while running this job" in event_messages(engine, jid)[-1]
