"""Jobs end to end with the tiny model: the real worker, runner process and trainer.

Success (events, metrics, checkpoints, result file, model row, concrete hyperparameters),
cancel mid-run, pause then resume from the checkpoint, a killed worker whose job is requeued
after its lease and finishes from its checkpoint, and continuing from a fine-tuned model.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from openft.jobs.backends.local import settings_env
from openft.jobs.worker import Worker
from openft.store.blobs import BlobStore
from openft.store.db import checkpoints, files, job_events, jobs, models
from tests.support.data import chat_rows, write_jsonl
from tests.support.jobs import event_messages, insert_job, job_row, store_file
from tests.support.wait import wait_until

METRIC_KEYS = {"step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
               "full_valid_loss", "full_valid_mean_token_accuracy", "total_steps",
               # a supervised job's own (issue 21, 3.2: the legacy results file's columns)
               "elapsed_tokens", "elapsed_examples", "train_mean_sequence_accuracy"}
MEASURED = {"valid_mean_sequence_accuracy", "full_valid_mean_sequence_accuracy"}  # on the steps that measure them


@pytest.fixture(autouse=True)
def _tiny(tiny_model_dir):  # build the tiny model once, outside the runner's time
    return tiny_model_dir


def _files(settings, engine, tmp_path, n_train=12, n_valid=4):
    tf = store_file(settings, engine, write_jsonl(tmp_path / "train.jsonl", chat_rows(n_train)))
    vf = store_file(settings, engine, write_jsonl(tmp_path / "valid.jsonl", chat_rows(n_valid, seed=5))) \
        if n_valid else None
    return tf, vf


def _metrics(engine, jid) -> list[dict]:
    with engine.connect() as conn:
        return [r.data for r in conn.execute(sa.select(job_events.c.data).where(
            job_events.c.job_id == jid, job_events.c.type == "metrics").order_by(job_events.c.seq))]


def _checkpoints(engine, jid, deleted=False) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(checkpoints).where(checkpoints.c.job_id == jid,
                                                         checkpoints.c.deleted == deleted)
                            .order_by(checkpoints.c.step_number)).all()


def _steps_after(engine, jid, marker: str) -> list[int]:
    """Metric steps recorded after the first event containing `marker`."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(job_events.c.message, job_events.c.type, job_events.c.data)
                            .where(job_events.c.job_id == jid).order_by(job_events.c.seq)).all()
    i = next(k for k, r in enumerate(rows) if marker in r.message)
    return [r.data["step"] for r in rows[i:] if r.type == "metrics"]


def _run_in_thread(worker: Worker):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("job", worker.run_once()), daemon=True)
    t.start()
    return t, out


def test_job_succeeds_with_events_checkpoints_result_file_and_model(engine, settings, tmp_path):
    tf, vf = _files(settings, engine, tmp_path)
    jid = insert_job(engine, tf, validation_file=vf, suffix="reviews",
                     hyperparameters={"n_epochs": 2, "batch_size": 4})
    assert Worker(settings, engine=engine).run_once() == jid
    job = job_row(engine, jid)
    assert job["status"] == "succeeded", job["error"]
    model_id = f"ft:openft-tiny:{settings.organization}:reviews:{jid[6:14]}"
    assert job["fine_tuned_model"] == model_id and job["finished_at"] and job["error"] is None
    hp = job["method"]["supervised"]["hyperparameters"]
    assert hp["n_epochs"] == 2 and hp["batch_size"] == 4
    assert isinstance(hp["learning_rate_multiplier"], float)  # "auto" replaced by the value used
    assert job["trained_tokens"] > 0 and job["estimated_finish"] is None

    msgs = event_messages(engine, jid)
    assert msgs[1] == "Fine-tuning job started"
    assert msgs[-2:] == [f"New fine-tuned model created: {model_id}", "The job has successfully completed"]
    metrics = _metrics(engine, jid)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert all(METRIC_KEYS <= set(m) <= METRIC_KEYS | MEASURED and m["total_steps"] == 6 for m in metrics), metrics
    assert [m["elapsed_examples"] for m in metrics] == [4, 8, 12, 16, 20, 24]
    assert metrics[-1]["elapsed_tokens"] == job["trained_tokens"]
    assert metrics[-1]["full_valid_loss"] is not None and metrics[-1]["valid_loss"] is not None
    assert "Step 6/6: training loss=" in msgs[msgs.index(f"New fine-tuned model created: {model_id}") - 2]
    assert any(m.startswith("Step 6/6: training loss=") and ", validation loss=" in m for m in msgs)

    ckpts = _checkpoints(engine, jid)
    assert [c.step_number for c in ckpts] == [3, 6]  # one per epoch
    for c in ckpts:
        assert c.fine_tuned_model_checkpoint == f"{model_id}:ckpt-step-{c.step_number}"
        assert c.id.startswith("ftckpt_") and Path(c.path, "adapter_config.json").exists()
        assert set(c.metrics) - MEASURED == METRIC_KEYS - {"total_steps"} and c.metrics["step"] == c.step_number
        assert f"Checkpoint created at step {c.step_number} with Snapshot ID: {c.fine_tuned_model_checkpoint}" in msgs

    (rf,) = job["result_files"]
    with engine.connect() as conn:
        frow = conn.execute(sa.select(files).where(files.c.id == rf)).one()
        mrow = conn.execute(sa.select(models).where(models.c.id == model_id)).one()
    assert frow.purpose == "fine-tune-results" and frow.project_id == job["project_id"]
    raw = BlobStore(settings.data_dir / "blobs").path(frow.sha256).read_bytes()
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert list(rows[0])[:5] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert len(rows) == 6 and frow.bytes == len(raw)
    assert mrow.project_id == job["project_id"] and mrow.base_model == "openft-tiny" and mrow.job_id == jid
    assert mrow.method == "lora" and Path(mrow.path, "adapter_config.json").exists()
    assert mrow.owned_by == settings.organization


def test_cancel_mid_run(engine, settings, tmp_path):
    tf, _ = _files(settings, engine, tmp_path, n_valid=0)
    jid = insert_job(engine, tf, hyperparameters={"n_epochs": 50, "batch_size": 1})
    worker = Worker(settings, engine=engine, cancel_grace_seconds=30)
    t, out = _run_in_thread(worker)
    wait_until(lambda: _metrics(engine, jid), 120, interval=0.1, what="the first step")
    with engine.begin() as conn:  # what POST /cancel does
        conn.execute(jobs.update().where(jobs.c.id == jid).values(status="cancelled", finished_at=1))
    t.join(120)
    assert not t.is_alive() and out["job"] == jid
    job = job_row(engine, jid)
    assert job["status"] == "cancelled" and job["error"] is None and job["fine_tuned_model"] is None
    assert _metrics(engine, jid)[-1]["step"] < 600  # it stopped, long before the end
    with engine.connect() as conn:
        assert conn.execute(sa.select(models.c.id).where(models.c.job_id == jid)).first() is None


def test_trainer_data_error_fails_the_job_naming_the_file(engine, settings, tmp_path):
    records = chat_rows(12)
    for r in records:  # valid JSON and roles, but nothing to train on
        r["messages"][-1]["weight"] = 0
    tf = store_file(settings, engine, write_jsonl(tmp_path / "train.jsonl", records))
    jid = insert_job(engine, tf, hyperparameters={"n_epochs": 1})
    assert Worker(settings, engine=engine).run_once() == jid
    job = job_row(engine, jid)
    assert job["status"] == "failed" and job["error"]["param"] == "training_file"
    assert job["error"]["code"] == "no_trained_tokens" and "training_file" in job["error"]["message"]
    assert event_messages(engine, jid)[-1].startswith("Fine-tuning job failed: ")


@pytest.mark.slow
def test_pause_then_resume_continues_from_the_checkpoint(engine, settings, tmp_path):
    tf, vf = _files(settings, engine, tmp_path)
    jid = insert_job(engine, tf, validation_file=vf, hyperparameters={"n_epochs": 3, "batch_size": 2})
    worker = Worker(settings, engine=engine)
    t, out = _run_in_thread(worker)
    wait_until(lambda: job_row(engine, jid)["status"] == "running", 60, interval=0.05, what="the job to start")
    with engine.begin() as conn:  # what POST /pause does to a running job
        conn.execute(jobs.update().where(jobs.c.id == jid).values(requested_action="pause"))
    t.join(120)
    job = job_row(engine, jid)
    assert job["status"] == "paused" and job["requested_action"] is None and job["worker_id"] is None
    paused_at = _metrics(engine, jid)[-1]["step"]
    assert paused_at < 18
    assert job["resume_checkpoint"] and Path(job["resume_checkpoint"]).name == f"step-{paused_at}"
    assert _checkpoints(engine, jid)[-1].step_number == paused_at
    assert f"Fine-tuning job paused; it will resume from checkpoint step {paused_at}." in event_messages(engine, jid)

    with engine.begin() as conn:  # POST /resume
        conn.execute(jobs.update().where(jobs.c.id == jid).values(status="queued"))
    assert worker.run_once() == jid
    job = job_row(engine, jid)
    assert job["status"] == "succeeded", job["error"]
    assert _steps_after(engine, jid, f"Resumed from checkpoint at step {paused_at}") == list(range(paused_at + 1, 19))
    assert job["attempts"] == 2


@pytest.mark.slow
def test_killed_worker_job_is_requeued_and_finishes_from_its_checkpoint(engine, settings, tmp_path):
    tf, _ = _files(settings, engine, tmp_path, n_valid=0)
    jid = insert_job(engine, tf, hyperparameters={"n_epochs": 3, "batch_size": 1, "checkpoint_every_steps": 3})
    env = {**os.environ, **settings_env(settings)}
    proc = subprocess.Popen([sys.executable, "-m", "openft.jobs.worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _checkpoints(engine, jid), 120, interval=0.02, what="the first checkpoint")
        runner = psutil.Process(proc.pid).children()[0]
        proc.kill()  # the worker dies mid-job (and the kernel takes its runner down with it)
        proc.wait(10)
        runner.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed = job_row(engine, jid)
    assert killed["status"] == "running" and killed["attempts"] == 1
    last_ckpt = _checkpoints(engine, jid)[-1].step_number
    assert last_ckpt < 36

    # A new worker: the job's lease expires (settings.lease_seconds), it is requeued and claimed.
    worker = Worker(settings, engine=engine)
    wait_until(lambda: worker.run_once() == jid, 60, interval=0.2, what="the reaped job to be run again")
    job = job_row(engine, jid)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    msgs = event_messages(engine, jid)
    requeue = next(m for m in msgs if "stopped responding" in m)
    assert f"will continue from checkpoint step {last_ckpt}" in requeue
    assert _steps_after(engine, jid, "stopped responding") == list(range(last_ckpt + 1, 37))
    assert msgs[-1] == "The job has successfully completed"


@pytest.mark.slow
def test_continue_from_a_fine_tuned_model(engine, settings, tmp_path):
    tf, _ = _files(settings, engine, tmp_path, n_valid=0)
    first = insert_job(engine, tf, hyperparameters={"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 10.0})
    worker = Worker(settings, engine=engine)
    assert worker.run_once() == first
    parent = job_row(engine, first)
    with engine.connect() as conn:
        adapter = conn.execute(sa.select(models.c.path).where(models.c.id == parent["fine_tuned_model"])).scalar()
    second = insert_job(engine, tf, model=parent["fine_tuned_model"], init_adapter=adapter, suffix="more",
                        hyperparameters={"n_epochs": 1, "batch_size": 1})
    assert worker.run_once() == second
    child = job_row(engine, second)
    assert child["status"] == "succeeded", child["error"]
    assert child["fine_tuned_model"].startswith("ft:openft-tiny:openft:more:")
    meta = json.loads(Path(child["output_dir"], "job.json").read_text())
    assert meta["spec"]["init_adapter"] == adapter and meta["model"] == parent["fine_tuned_model"]
    # it starts where the first job ended, not from the random base
    assert _metrics(engine, second)[0]["train_loss"] < _metrics(engine, first)[0]["train_loss"] - 0.05
