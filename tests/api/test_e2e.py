"""End to end through the official SDK against a real server with its embedded worker: the
tiny model trains to `succeeded`; events, checkpoints, the result file, the models list, chat
(plain and streaming) with the fine-tuned model and with a checkpoint, continuing from the
fine-tuned model, isolation from another project, and deleting the model."""

from __future__ import annotations

import csv
import io
import re
import shutil
from pathlib import Path

import openai
import pytest

from tests.support.data import chat_jsonl, upload
from tests.support.servers import API, ServerSpec
from tests.support.wait import wait_job, wait_until

MSG = [{"role": "system", "content": "Classify the review as positive or negative."},
       {"role": "user", "content": "Review 99: the product was great."}]


SERVER = ServerSpec(API)


@pytest.fixture(scope="module")
def trained(server, model_cache):
    # the first job of this server has no measured pace (test_the_time_estimate_...): no probe kept from
    # an earlier run in the shared model cache
    shutil.rmtree(model_cache / "pace", ignore_errors=True)
    api = server.client()
    train = upload(api, chat_jsonl(12), "train.jsonl")
    valid = upload(api, chat_jsonl(4, seed=1), "valid.jsonl")
    job = api.fine_tuning.jobs.create(
        model="openft-tiny", training_file=train.id, validation_file=valid.id, suffix="e2e",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4, "lora_r": 8}}})
    assert job.hyperparameters.learning_rate_multiplier == "auto"
    job = wait_job(api, job.id, {"succeeded", "failed", "cancelled"}, timeout=480)
    assert job.status == "succeeded", (job.error, (server.log.read_text()[-3000:]))
    return api, job


@pytest.mark.slow
def test_job_succeeds_with_concrete_values(trained):
    api, job = trained
    assert job.fine_tuned_model == f"ft:openft-tiny:openft:e2e:{job.id.removeprefix('ftjob-')[:8]}"
    assert job.finished_at >= job.created_at and job.trained_tokens > 0
    hp = job.hyperparameters
    assert (hp.n_epochs, hp.batch_size) == (2, 4) and isinstance(hp.learning_rate_multiplier, float)
    assert job.method.supervised.hyperparameters.learning_rate_multiplier == hp.learning_rate_multiplier
    assert job.error is None and job.estimated_finish is None


@pytest.mark.slow
def test_model_row_points_at_a_peft_adapter_with_the_requested_rank(trained, server):
    import json

    import sqlalchemy as sa

    from openft.store.db import models

    api, job = trained
    db = server.db()
    with db.connect() as conn:
        path = conn.execute(sa.select(models.c.path).where(models.c.id == job.fine_tuned_model)).scalar()
    db.dispose()
    config = json.loads((Path(path) / "adapter_config.json").read_text())
    assert config["r"] == 8  # openft's own hyperparameter reached the trainer


@pytest.mark.slow
def test_events(trained):
    api, job = trained
    events = list(api.fine_tuning.jobs.list_events(job.id, limit=50))  # auto-paginates, newest first
    messages = [e.message for e in events][::-1]
    assert messages[0] == f"Created fine-tuning job: {job.id}"
    for expected in ("Validating training file", "Files validated, moving job to queued state",
                     "Fine-tuning job started", "Step 1/", "Checkpoint created at step",
                     "New fine-tuned model created", "The job has successfully completed"):
        assert any(m.startswith(expected) for m in messages), (expected, messages)
    assert messages[-1] == "The job has successfully completed"
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and {"step", "train_loss", "train_mean_token_accuracy", "total_steps"} <= set(metrics[0].data)
    assert any("valid_loss" in e.data for e in metrics)
    assert "validation loss=" in next(e.message for e in metrics if "valid_loss" in e.data)


@pytest.mark.slow
def test_checkpoints_and_result_file(trained):
    api, job = trained
    ckpts = api.fine_tuning.jobs.checkpoints.list(job.id).data
    assert len(ckpts) == 2  # one per epoch
    assert ckpts[0].step_number > ckpts[1].step_number
    for c in ckpts:
        assert c.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{c.step_number}"
        assert c.metrics.train_loss is not None and c.metrics.step == c.step_number
    (rid,) = job.result_files
    f = api.files.retrieve(rid)
    assert f.purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(api.files.content(rid).text)))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert int(rows[-1]["step"]) == ckpts[0].step_number


@pytest.mark.slow
def test_chat_with_fine_tuned_model_and_checkpoint(trained):
    api, job = trained
    ids = {m.id: m for m in api.models.list()}
    assert ids[job.fine_tuned_model].owned_by == "openft"
    assert api.models.retrieve(job.fine_tuned_model).id == job.fine_tuned_model
    ckpt = api.fine_tuning.jobs.checkpoints.list(job.id).data[-1].fine_tuned_model_checkpoint
    for model in (job.fine_tuned_model, ckpt):
        r = api.chat.completions.create(model=model, messages=MSG, max_tokens=3, seed=0)
        assert r.model == model and r.usage.completion_tokens >= 1 and r.choices[0].finish_reason in ("stop", "length")
    base = api.chat.completions.create(model="openft-tiny", messages=MSG, max_tokens=3, temperature=0)
    tuned = api.chat.completions.create(model=job.fine_tuned_model, messages=MSG, max_tokens=3, temperature=0)
    assert base.system_fingerprint != tuned.system_fingerprint
    chunks = list(api.chat.completions.create(model=job.fine_tuned_model, messages=MSG, max_tokens=3,
                                              temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == tuned.choices[0].message.content
    comp = api.completions.create(model=ckpt, prompt="Review: great. Label:", max_tokens=2)
    assert comp.model == ckpt


@pytest.mark.slow
def test_other_project_cannot_see_the_model(trained, server):
    from openft.store.auth import create_key

    api, job = trained
    db = server.db()
    _, key = create_key(db, "e2e-other")
    db.dispose()
    other = server.client(api_key=key)
    assert job.fine_tuned_model not in [m.id for m in other.models.list()]
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=job.fine_tuned_model, messages=MSG, max_tokens=1)
    with pytest.raises(openai.NotFoundError):
        other.models.delete(job.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        other.files.content(job.result_files[0])


@pytest.mark.slow
def test_continue_from_fine_tuned_model_then_delete(trained, server):
    api, job = trained
    train = upload(api, chat_jsonl(12, seed=3), "more.jsonl")
    cont = api.fine_tuning.jobs.create(model=job.fine_tuned_model, training_file=train.id,
                                       hyperparameters={"n_epochs": 1})
    assert cont.model == job.fine_tuned_model
    api.fine_tuning.jobs.cancel(cont.id)
    deleted = api.models.delete(job.fine_tuned_model)
    assert deleted.deleted is True and deleted.id == job.fine_tuned_model
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve(job.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model=job.fine_tuned_model, messages=MSG, max_tokens=1)
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model=job.fine_tuned_model, training_file=train.id)
    assert e.value.body["param"] == "model"


def _wait_event(api, job_id: str, prefix: str, timeout: float = 300.0):
    return wait_until(lambda: next((e for e in api.fine_tuning.jobs.list_events(job_id, limit=100)
                                    if e.message.startswith(prefix)), None),
                      timeout, what=f"an event {prefix!r} of {job_id}", interval=0.3)


@pytest.mark.slow
def test_pause_resume_and_cancel_a_running_job(server, trained):
    api, _ = trained
    train = upload(api, chat_jsonl(30, seed=7), "pause.jsonl")  # 90 steps: the pause lands mid-run on a busy machine
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id,
                                      hyperparameters={"n_epochs": 3, "batch_size": 1})
    _wait_event(api, job.id, "Step 2/")
    assert api.fine_tuning.jobs.pause(job.id).status == "running"  # a request until the runner checkpoints
    paused = wait_job(api, job.id, {"paused"}, timeout=300)
    assert paused.hyperparameters.n_epochs == 3 and paused.hyperparameters.batch_size == 1
    assert api.fine_tuning.jobs.resume(job.id).status == "queued"
    done = wait_job(api, job.id, {"succeeded", "failed"}, timeout=480)
    assert done.status == "succeeded", done.error
    steps = [e.data["step"] for e in api.fine_tuning.jobs.list_events(job.id, limit=200) if e.type == "metrics"]
    assert max(steps) == 90

    other = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id,
                                        hyperparameters={"n_epochs": 3, "batch_size": 1})
    _wait_event(api, other.id, "Step 2/")
    running = api.fine_tuning.jobs.retrieve(other.id)  # progress is written with the step's event
    assert running.estimated_finish and running.estimated_finish >= running.created_at
    runner = _runner_process(server, other.id)
    cancelled = api.fine_tuning.jobs.cancel(other.id)
    assert cancelled.status == "cancelled"
    _wait_event(api, other.id, "Fine-tuning job cancelled")
    runner.wait(timeout=120)  # the runner sees the cancel and exits (psutil.TimeoutExpired if it never does)
    final = api.fine_tuning.jobs.retrieve(other.id)  # after the runner's last write
    assert final.status == "cancelled" and final.fine_tuned_model is None
    output_dir = _job_column(server, other.id, "output_dir")
    assert output_dir and not (Path(output_dir) / "model").exists()


def _runner_process(server, job_id: str):
    """The training process (`python -m openft.jobs.runner JOB_ID`) the server's worker started."""
    import psutil

    for p in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if "openft.jobs.runner" in p.cmdline() and job_id in p.cmdline():
                return p
        except psutil.Error:
            continue
    raise AssertionError(f"no runner process for {job_id}")


def _job_column(server, job_id: str, column: str):
    import sqlalchemy as sa

    from openft.store.db import jobs

    db = server.db()
    try:
        with db.connect() as conn:
            return conn.execute(sa.select(jobs.c[column]).where(jobs.c.id == job_id)).scalar()
    finally:
        db.dispose()


@pytest.mark.slow
def test_a_file_with_a_byte_order_mark_trains(server):
    """Validation and the trainer read JSONL with one reader: a BOM file that validates also trains."""
    import codecs

    api = server.client()
    train = upload(api, codecs.BOM_UTF8 + chat_jsonl(12, seed=3), "bom.jsonl")
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id,
                                      hyperparameters={"n_epochs": 1, "batch_size": 4})
    done = wait_job(api, job.id, {"succeeded", "failed", "cancelled"}, timeout=480)
    assert done.status == "succeeded", done.error  # failed with "Unexpected UTF-8 BOM" before
    assert done.trained_tokens > 0


def _estimate_seconds(api, job_id: str) -> tuple[int, str]:
    """(seconds, source) of the validation event's time estimate."""
    ev = _wait_event(api, job_id, "Training file: ", timeout=120)
    m = re.search(r"estimated training time on this machine: (?:(\d+) h )?(?:(\d+) min )?(?:(\d+) s)? ?\(from (.+)\)$",
                  ev.message)
    assert m, ev.message
    h, mins, s, source = m.groups()
    return int(h or 0) * 3600 + int(mins or 0) * 60 + int(s or 0), source


@pytest.mark.slow
def test_the_time_estimate_is_measured_on_this_machine(server, trained):
    api, job = trained
    _, source = _estimate_seconds(api, job.id)  # the server's first job: nothing measured yet
    # validation never waits on a probe (it took 2-5 minutes): the table's guess, named as such
    assert source.startswith("a table for ") and source.endswith("until this job's own steps are measured"), source
    train = upload(api, chat_jsonl(12, seed=4), "again.jsonl")
    again = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id, hyperparameters={"n_epochs": 1})
    _, source = _estimate_seconds(api, again.id)
    api.fine_tuning.jobs.cancel(again.id)
    assert re.fullmatch(r"\d+ earlier jobs? of openft-tiny", source), source
