"""Job integrations: a real job on the tiny model with the wandb (offline) and tensorboard
integrations writes every step's metrics and the hyperparameters, read back from wandb's offline
run file and with TensorBoard's EventAccumulator; a logger that fails becomes a warning event
and the job goes on."""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

import pytest
import sqlalchemy as sa

from openft.jobs import queue
from openft.jobs.hooks import DBHooks
from openft.jobs.worker import Worker
from openft.store.db import job_events, jobs
from tests.support.data import chat_rows, write_jsonl
from tests.support.jobs import event_messages, insert_job, job_row, store_file

WANDB = {"type": "wandb", "wandb": {"project": "openft-tests", "name": "tiny-run", "entity": None,
                                    "tags": ["ci", "tiny"]}}
TENSORBOARD = {"type": "tensorboard", "tensorboard": {}}


def wandb_records(path: str):
    """The records of a .wandb file: wandb's protobuf `Record`s in LevelDB's log framing (7-byte
    file header, 32 KiB blocks, records split FIRST/MIDDLE/LAST). wandb 0.31 dropped its Python
    reader of this file (wandb-core, in Go, reads it now), so the framing is read here."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = Path(path).read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left - 7
            continue
        buf, pos = buf + data[pos:pos + length], pos + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _metrics(engine, jid) -> list[dict]:
    with engine.connect() as conn:
        return [r.data for r in conn.execute(sa.select(job_events.c.data).where(
            job_events.c.job_id == jid, job_events.c.type == "metrics").order_by(job_events.c.seq))]


@pytest.mark.slow
def test_wandb_offline_and_tensorboard_get_every_step(engine, settings, tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    tf = store_file(settings, engine, write_jsonl(tmp_path / "train.jsonl", chat_rows(12)))
    vf = store_file(settings, engine, write_jsonl(tmp_path / "valid.jsonl", chat_rows(4, seed=5)))
    jid = insert_job(engine, tf, validation_file=vf, hyperparameters={"n_epochs": 2, "batch_size": 4, "lora_r": 4})
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(integrations=[WANDB, TENSORBOARD]))
    assert Worker(settings, engine=engine).run_once() == jid
    job = job_row(engine, jid)
    assert job["status"] == "succeeded", (job["error"], event_messages(engine, jid))
    assert not [m for m in event_messages(engine, jid) if "integration" in m]
    metrics = _metrics(engine, jid)
    steps = [m["step"] for m in metrics]
    assert steps == list(range(1, 7))  # 12 examples / batch 4 x 2 epochs
    out = Path(job["output_dir"])

    [run_file] = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = list(wandb_records(run_file))
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.display_name, list(run.tags), run.run_id) == ("openft-tests", "tiny-run",
                                                                         ["ci", "tiny"], jid)
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert (config["n_epochs"], config["batch_size"], config["lora_r"], config["job_id"]) == (2, 4, 4, jid)
    assert config["learning_rate_multiplier"] == job["method"]["supervised"]["hyperparameters"][
        "learning_rate_multiplier"]
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [h["_step"] for h in history] == steps
    for h, m in zip(history, metrics):
        assert h["train_loss"] == pytest.approx(m["train_loss"])
        assert h["train_mean_token_accuracy"] == pytest.approx(m["train_mean_token_accuracy"])
    measured = [(h["_step"], h["valid_loss"]) for h in history if "valid_loss" in h]
    assert measured and measured == [(m["step"], pytest.approx(m["valid_loss"])) for m in metrics
                                     if m["valid_loss"] is not None]
    [exit_record] = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert {"train_loss", "train_mean_token_accuracy", "valid_loss"} <= set(acc.Tags()["scalars"])
    loss = acc.Scalars("train_loss")
    assert [e.step for e in loss] == steps
    assert [e.value for e in loss] == pytest.approx([m["train_loss"] for m in metrics], rel=1e-6)
    text = acc.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"lora_r": 4' in text


def test_a_failing_logger_becomes_one_warning_and_training_goes_on(engine, settings, tmp_path):
    jid = insert_job(engine, "file-a")
    job = queue.claim_next(engine, "w1", settings.data_dir)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the tensorboard/ folder cannot be made inside a file
    job = {**job, "output_dir": str(blocker), "integrations": [TENSORBOARD]}
    hooks = DBHooks(engine, job, "ft:openft-tiny:openft:unit:abcdefgh", flush_seconds=0)
    hooks.on_resolved({"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 0.1})
    for step in (1, 2):
        hooks.on_metrics({"step": step, "total_steps": 2, "train_loss": 1.0, "train_mean_token_accuracy": 0.5})
        hooks.on_progress(step, 2, 10 * step, None)
    hooks.flush()
    hooks.close()
    messages = event_messages(engine, jid)
    warnings = [m for m in messages if "integration" in m]
    assert len(warnings) == 1 and warnings[0].startswith("The tensorboard integration stopped (starting)")
    assert [m for m in messages if m.startswith("Step ")] == ["Step 1/2: training loss=1.00",
                                                             "Step 2/2: training loss=1.00"]
    with engine.connect() as conn:
        level = conn.execute(sa.select(job_events.c.level).where(
            job_events.c.job_id == jid, job_events.c.message == warnings[0])).scalar()
    assert level == "warn"
