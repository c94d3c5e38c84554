"""The job state machine (openft.jobs.state), its counters (migration 2), leftover cleanup, the
runner's output pipe, OOM records and the pruned-checkpoint 404."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from openft.errors import NotFound
from openft.jobs import oom, queue, state
from openft.jobs.worker import Worker
from openft.store.db import checkpoints, job_events, jobs, migrate
from openft.store.resolve import resolve_model
from tests.support.jobs import PROJECT, event_messages, insert_job, job_row


def test_an_illegal_transition_is_refused_before_anything_is_written(engine):
    jid = insert_job(engine, "file-a", status="succeeded")
    with engine.begin() as conn:
        with pytest.raises(state.IllegalTransition):
            state.fail(conn, jid, "x", "y", from_=("succeeded",))  # failed is never reached from succeeded
        assert not state.fail(conn, jid, "x", "y")  # a legal transition that lost the race: False
        assert not state.cancel(conn, jid) and not state.resume(conn, jid) and not state.pause(conn, jid)
    row = job_row(engine, jid)
    assert row["status"] == "succeeded" and row["error"] is None
    assert event_messages(engine, jid) == [f"Created fine-tuning job: {jid}"]


def test_a_worker_cannot_change_a_job_another_worker_holds(engine, settings):
    jid = insert_job(engine, "file-a")
    queue.claim_next(engine, "w1", settings.data_dir)
    with engine.begin() as conn:
        assert not state.fail(conn, jid, "boom", "boom", worker_id="w2")
        assert not state.pause(conn, jid, worker_id="w2")
        assert not state.requeue(conn, jid, event="x", resume_checkpoint=None, worker_id="w2")
        assert state.pause(conn, jid, worker_id="w1")
    row = job_row(engine, jid)
    assert row["status"] == "paused" and row["worker_id"] is None
    assert event_messages(engine, jid)[-1] == "Fine-tuning job paused; it will resume from the beginning."


def test_every_transition_names_real_statuses():
    for name, (sources, target) in state.TRANSITIONS.items():
        assert set(sources) <= set(state.STATUSES) and (target is None or target in state.STATUSES), name
        assert not set(sources) & set(state.TERMINAL), f"{name} leaves a finished job"


def test_lost_workers_are_counted_in_a_column_not_by_event_text(engine, settings):
    """An event that merely quotes the lost-worker text (a user's file name, a warning) must not
    count as a lost worker; the counter column does the counting."""
    jid = insert_job(engine, "file-a")
    with engine.begin() as conn:
        for _ in range(3):
            conn.execute(job_events.insert().values(
                id=f"ftevent-fake{_}", job_id=jid, created_at=1, level="warn", type="message",
                message=state.LOST_PREFIX + " (quoted in an unrelated warning)"))
    queue.claim_next(engine, "w1", settings.data_dir)
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(heartbeat_at=time.time() - 100))
    (r,) = queue.reap_expired(engine, lease_seconds=30, max_attempts=2)
    assert r.requeued, "counted the quoted events as lost workers"
    assert job_row(engine, jid)["workers_lost"] == 1


def test_migration_2_adds_the_counters_to_a_version_1_database(v1_database):
    """A database made before migration 2 (jobs without the counter columns) gets them, with
    workers_lost taken from the events that used to be its only record."""
    eng, old = v1_database
    with eng.begin() as conn:
        conn.execute(old["jobs"].insert().values(
            id="ftjob-old", project_id=PROJECT, seq=1, model="m", base_model="m", status="queued", created_at=1,
            method={}, training_file="file-a", result_files=[], seed=1, attempts=2))
        for i in range(2):
            conn.execute(job_events.insert().values(id=f"ftevent-{i}", job_id="ftjob-old", created_at=1, level="warn",
                                                    type="message", message=state.LOST_PREFIX + " for over 5 s; ..."))
    assert 2 in migrate(eng)
    row = job_row(eng, "ftjob-old")
    assert row["workers_lost"] == 2 and row["runner_retries"] == 0


def test_leftovers_of_killed_writers_are_removed_at_worker_start(engine, settings, tmp_path):
    """`.step-N.tmp` and `.model.tmp` of jobs that are not running go; real checkpoints, the final
    model and a running job's folder stay."""
    done, running = insert_job(engine, "file-a", status="failed"), insert_job(engine, "file-a", status="running")
    dirs = {}
    for jid in (done, running):
        out = tmp_path / "jobs" / jid
        for sub in ("checkpoints/.step-3.tmp/trainer_state", "checkpoints/step-2", ".model.tmp", "model"):
            (out / sub).mkdir(parents=True)
        (out / "checkpoints" / "step-2" / "adapter_config.json").write_text("{}")
        dirs[jid] = out
        with engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == jid).values(
                output_dir=str(out), worker_id="another-worker", heartbeat_at=time.time() + 3600))
    assert Worker(settings, engine=engine).run_once() is None
    out = dirs[done]
    assert not (out / "checkpoints" / ".step-3.tmp").exists() and not (out / ".model.tmp").exists()
    assert (out / "checkpoints" / "step-2" / "adapter_config.json").exists() and (out / "model").is_dir()
    assert (dirs[running] / "checkpoints" / ".step-3.tmp").exists()  # its runner may be writing it


def test_the_runners_own_error_reaches_the_job_when_its_log_cannot_be_written(engine, settings, tmp_path,
                                                                                monkeypatch):
    """runner.log cannot be opened (here: a folder is in its place; the tests run as root, so
    permissions would not stop a write) and the runner dies without recording anything: its
    last line on the pipe is in the job's error."""
    jid = insert_job(engine, "file-a")
    out = Path(queue.job_output_dir(settings.data_dir, jid))
    (out / "runner.log").mkdir(parents=True)
    monkeypatch.setenv("OPENFT_FAULT", "runner-start:exit")  # openft.faults: print a line, exit 3
    worker = Worker(settings, engine=engine)
    t = threading.Thread(target=worker.run_once, daemon=True)
    t.start()
    t.join(120)
    row = job_row(engine, jid)
    assert row["status"] == "failed" and row["error"]["code"] == "training_process_died", row["error"]
    assert "FaultInjected: exit at runner-start" in row["error"]["message"]
    assert "code 3" in row["error"]["message"] and row["runner_retries"] == 0  # an exit, not a kill: no retry


def test_oom_counters_are_read_from_the_cgroup_files(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/box\n0::/box\n")
    v1 = tmp_path / "root" / "memory" / "box"
    v2 = tmp_path / "root" / "box"
    v1.mkdir(parents=True)
    v2.mkdir(parents=True)
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 1\noom_kill 2\n")
    found = oom._sources(proc, tmp_path / "root")
    assert found == [v1 / "memory.oom_control", v2 / "memory.events"]  # in /proc/self/cgroup's order
    assert [oom._counter(p) for p in found] == [4, 2]
    assert oom.killed_since({"a": 1, "b": 4}, {"a": 1, "b": 5}) is True
    assert oom.killed_since({"a": 1}, {"a": 1}) is False
    assert oom.killed_since({}, {}) is None


def test_a_pruned_checkpoint_says_so_and_names_the_ones_left(engine, settings):
    jid = insert_job(engine, "file-a", status="succeeded")
    name = f"ft:openft-tiny:openft:unit:{jid[6:14]}:ckpt-step-"
    with engine.begin() as conn:
        for step in (1, 2, 3, 4):
            conn.execute(checkpoints.insert().values(
                id=f"ftckpt_{step}", job_id=jid, project_id=PROJECT, created_at=1, step_number=step,
                fine_tuned_model_checkpoint=f"{name}{step}", metrics={}, path=f"/nonexistent/{step}",
                deleted=step == 1))
    with engine.connect() as conn:
        with pytest.raises(NotFound) as e:
            resolve_model(settings, conn, PROJECT, f"{name}1")
        with pytest.raises(NotFound) as other:
            resolve_model(settings, conn, "another-project", f"{name}1")  # never says more to another project
    assert e.value.code == "model_not_found" and e.value.param == "model"
    assert "was pruned" in e.value.message and "keep_checkpoints" in e.value.message
    assert f"{name}2, {name}3, {name}4" in e.value.message
    assert "pruned" not in other.value.message


def test_a_validation_crash_fails_the_job_once(engine, settings, monkeypatch):
    """Both validation paths (the API's background thread and the server's recovery) fail a job
    through one function; a job that moved on meanwhile is left alone."""
    from openft.jobs import validate

    jid = insert_job(engine, "file-a", status="validating_files")
    monkeypatch.setattr(validate, "validate_job", lambda *a: (_ for _ in ()).throw(RuntimeError("disk gone")))
    rec = validate.recover_at_start(settings, engine)
    assert rec.revalidated == {jid: "failed"}
    row = job_row(engine, jid)
    assert row["error"] == {"code": "server_error", "message": "File validation crashed: disk gone", "param": None}
    validate.validation_crashed(engine, jid, RuntimeError("again"))
    assert job_row(engine, jid)["error"]["message"].endswith("disk gone")
    assert event_messages(engine, jid)[-1] == "File validation crashed: disk gone"
