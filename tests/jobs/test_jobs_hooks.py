"""DBHooks: what the trainer's hook calls become in the database (no training needed)."""

from __future__ import annotations

import sqlalchemy as sa

from openft.jobs import queue
from openft.jobs.hooks import DBHooks, step_message
from openft.store.db import checkpoints, job_events, jobs
from openft.train.hooks import TrainHooks
from tests.support.jobs import event_messages, insert_job, job_row


def _hooks(engine, settings, flush_seconds: float = 0.5, **kw) -> tuple[str, DBHooks]:
    jid = insert_job(engine, "file-a", **kw)
    job = queue.claim_next(engine, "w1", settings.data_dir)
    return jid, DBHooks(engine, job, "ft:openft-tiny:openft:unit:abcdefgh", flush_seconds=flush_seconds)


def test_is_a_train_hooks(engine, settings):
    assert isinstance(_hooks(engine, settings)[1], TrainHooks)


def test_step_message():
    assert step_message({"step": 3, "total_steps": 40, "train_loss": 1.2345}) == "Step 3/40: training loss=1.23"
    assert step_message({"step": 4, "total_steps": 40, "train_loss": 1.0, "valid_loss": 2.004}) == \
        "Step 4/40: training loss=1.00, validation loss=2.00"


def test_metrics_and_progress(engine, settings):
    jid, h = _hooks(engine, settings)
    h.on_metrics({"step": 1, "train_loss": 2.5, "train_mean_token_accuracy": 0.25, "total_steps": 2})
    h.on_progress(1, 2, 123, 2_000_000_000)
    h.on_metrics({"step": 2, "train_loss": 2.0, "train_mean_token_accuracy": 0.5, "total_steps": 2,
                  "valid_loss": 2.2, "valid_mean_token_accuracy": 0.4})
    h.flush()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(job_events).where(job_events.c.job_id == jid, job_events.c.type == "metrics")
                            .order_by(job_events.c.seq)).all()
    assert [r.message for r in rows] == ["Step 1/2: training loss=2.50", "Step 2/2: training loss=2.00, validation loss=2.20"]
    assert rows[0].data == {"step": 1, "train_loss": 2.5, "train_mean_token_accuracy": 0.25, "valid_loss": None,
                            "valid_mean_token_accuracy": None, "full_valid_loss": None,
                            "full_valid_mean_token_accuracy": None, "total_steps": 2}
    job = job_row(engine, jid)
    assert job["trained_tokens"] == 123 and job["estimated_finish"] == 2_000_000_000


def test_resolved_hyperparameters_replace_auto(engine, settings):
    jid, h = _hooks(engine, settings, hyperparameters={"n_epochs": 2})
    h.on_resolved({"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5, "internal": 1})
    hp = job_row(engine, jid)["method"]["supervised"]["hyperparameters"]
    assert hp == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}


def test_checkpoints_rows_upsert_and_removal(engine, settings, tmp_path):
    jid, h = _hooks(engine, settings)
    m = {"step": 5, "train_loss": 1.5, "train_mean_token_accuracy": 0.5, "total_steps": 10}
    h.on_checkpoint(5, 1, str(tmp_path / "step-5"), m)
    h.on_checkpoint(10, 2, str(tmp_path / "step-10"), {**m, "step": 10})
    h.on_checkpoint(5, 1, str(tmp_path / "step-5"), {**m, "train_loss": 1.25})  # again, after a resume
    h.on_checkpoint_removed(str(tmp_path / "step-10"))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(checkpoints).where(checkpoints.c.job_id == jid)
                            .order_by(checkpoints.c.step_number)).all()
    assert [(r.step_number, r.deleted) for r in rows] == [(5, False), (10, True)]
    assert rows[0].fine_tuned_model_checkpoint == "ft:openft-tiny:openft:unit:abcdefgh:ckpt-step-5"
    assert rows[0].metrics["train_loss"] == 1.25 and rows[0].project_id == "proj-test"
    assert "total_steps" not in rows[0].metrics
    assert "Checkpoint created at step 10 with Snapshot ID: ft:openft-tiny:openft:unit:abcdefgh:ckpt-step-10" \
        in event_messages(engine, jid)


def test_should_stop_reads_the_job_row(engine, settings):
    jid, h = _hooks(engine, settings)
    assert h.should_stop() is None
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(requested_action="pause"))
    assert h.should_stop() == "pause"
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(worker_id="someone-else"))
    assert h.should_stop() == "cancel"  # the job was taken over: stop, write nothing
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(worker_id="w1", status="cancelled"))
    assert h.should_stop() == "cancel"
    # and fenced writes do nothing once the job is no longer ours
    h.on_progress(9, 10, 999, None)
    h.flush()
    assert job_row(engine, jid)["trained_tokens"] is None


def test_per_step_writes_are_buffered_and_kept_in_order(engine, settings):
    jid, h = _hooks(engine, settings, flush_seconds=3600)
    for step in (1, 2, 3):
        h.on_metrics({"step": step, "train_loss": 1.0, "train_mean_token_accuracy": 0.5, "total_steps": 3})
        h.on_progress(step, 3, 10 * step, None)
        assert h.should_stop() is None
    assert not any(m.startswith("Step") for m in event_messages(engine, jid))  # not written yet
    h.on_event("Something happened")  # any other write takes the buffer first
    msgs = event_messages(engine, jid)
    assert msgs[-4:] == ["Step 1/3: training loss=1.00", "Step 2/3: training loss=1.00",
                         "Step 3/3: training loss=1.00", "Something happened"]
    assert job_row(engine, jid)["trained_tokens"] == 30
