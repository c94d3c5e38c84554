"""Job file validation: validating_files -> queued | failed, with OpenAI's events and located errors."""

from __future__ import annotations

import json
import time

from openft.jobs import queue
from openft.jobs.validate import recover_at_start, validate_job
from openft.store.db import jobs
from tests.support.data import chat_rows, write_jsonl
from tests.support.jobs import event_messages, insert_job, job_row, store_file


def _job(settings, engine, tmp_path, train: list, valid: list | None = None, **kw) -> str:
    tf = store_file(settings, engine, write_jsonl(tmp_path / "train.jsonl", train))
    vf = store_file(settings, engine, write_jsonl(tmp_path / "valid.jsonl", valid)) if valid is not None else None
    return insert_job(engine, tf, validation_file=vf, status="validating_files", **kw)


def test_valid_files_queue_the_job(engine, settings, tmp_path):
    jid = _job(settings, engine, tmp_path, chat_rows(12), chat_rows(3, seed=1))
    assert validate_job(settings, engine, jid) == "queued"
    row = job_row(engine, jid)
    assert row["status"] == "queued" and row["error"] is None
    msgs = event_messages(engine, jid)
    assert msgs[1] == f"Validating training file: {row['training_file']} and validation file: {row['validation_file']}"
    assert msgs[-1] == "Files validated, moving job to queued state"
    # the data toolkit's estimate (tokens counted with the model's tokenizer, auto epochs) is told
    assert msgs[-2].startswith("Training file: ") and "tokens per epoch, " in msgs[-2] and "(auto)" in msgs[-2]


def test_too_few_examples(engine, settings, tmp_path):
    jid = _job(settings, engine, tmp_path, chat_rows(5))
    assert validate_job(settings, engine, jid) == "failed"
    row = job_row(engine, jid)
    assert row["status"] == "failed" and row["finished_at"]
    err = row["error"]
    assert err["code"] == "invalid_n_examples" and err["param"] == "training_file"
    assert row["training_file"] in err["message"] and "train.jsonl" in err["message"]
    msgs = event_messages(engine, jid)
    assert msgs[1] == f"Validating training file: {row['training_file']}"
    assert msgs[-1] == err["message"]


def test_bad_json_line_is_located(engine, settings, tmp_path):
    lines = chat_rows(12)
    lines[2] = '{"messages": [{"role": "user", "content": "hi"}'  # line 3, cut short
    jid = _job(settings, engine, tmp_path, lines)
    assert validate_job(settings, engine, jid) == "failed"
    err = job_row(engine, jid)["error"]
    assert err["code"] == "invalid_json" and err["param"] == "training_file"
    assert "train.jsonl:3" in err["message"]


def test_validation_file_without_assistant_message(engine, settings, tmp_path):
    valid = chat_rows(3, seed=2)
    valid[1]["messages"] = valid[1]["messages"][:2]
    jid = _job(settings, engine, tmp_path, chat_rows(12), valid)
    assert validate_job(settings, engine, jid) == "failed"
    err = job_row(engine, jid)["error"]
    assert err["code"] == "example_missing_assistant_message" and err["param"] == "validation_file"
    assert "valid.jsonl:2" in err["message"] and job_row(engine, jid)["validation_file"] in err["message"]


def test_preference_data_for_supervised_job_is_rejected(engine, settings, tmp_path):
    pref = [{"input": {"messages": [{"role": "user", "content": f"q{i}"}]},
             "preferred_output": [{"role": "assistant", "content": "good"}],
             "non_preferred_output": [{"role": "assistant", "content": "bad"}]} for i in range(12)]
    jid = _job(settings, engine, tmp_path, pref)
    assert validate_job(settings, engine, jid) == "failed"
    err = job_row(engine, jid)["error"]
    assert err["param"] == "training_file" and "supervised" in err["message"]


def test_job_cancelled_during_validation_stays_cancelled(engine, settings, tmp_path):
    jid = _job(settings, engine, tmp_path, chat_rows(12))
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(status="cancelled"))
    assert validate_job(settings, engine, jid) is None
    assert job_row(engine, jid)["status"] == "cancelled"


def test_recover_at_start(engine, settings, tmp_path):
    left = _job(settings, engine, tmp_path, chat_rows(12))
    stale = insert_job(engine, job_row(engine, left)["training_file"])
    queue.claim_next(engine, "gone", settings.data_dir)
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == stale).values(heartbeat_at=time.time() - 1000))
    rec = recover_at_start(settings, engine)
    assert rec.requeued == [stale] and rec.revalidated == {left: "queued"}
    assert job_row(engine, stale)["status"] == "queued" and job_row(engine, left)["status"] == "queued"
    assert json.dumps(rec.revalidated)  # plain data, loggable


def test_over_long_example_gets_the_truncation_warning(engine, settings, tmp_path, tiny_model_dir):
    """The job's max_seq_len (capped by the model's context, as the trainer does) drives the check."""
    records = chat_rows(12)
    records[4]["messages"][1]["content"] = "This review is long. " * 20   # line 5: well over 64 tokens (the others are ~35)
    jid = _job(settings, engine, tmp_path, records, hyperparameters={"max_seq_len": 64})
    assert validate_job(settings, engine, jid) == "queued"
    warns = [m for m in event_messages(engine, jid) if "over the 64-token context" in m]
    assert len(warns) == 1 and "train.jsonl:5" in warns[0] and "truncated" in warns[0]
    assert job_row(engine, jid)["training_file"] in warns[0]


def test_context_of_the_model_caps_max_seq_len(tiny_model_dir):
    from pathlib import Path

    from openft.jobs.validate import effective_max_seq_len

    sup = lambda hp: {"type": "supervised", "supervised": {"hyperparameters": hp}}  # noqa: E731
    assert effective_max_seq_len(Path(tiny_model_dir), sup({"n_epochs": "auto"})) == 2048
    assert effective_max_seq_len(Path(tiny_model_dir), sup({"max_seq_len": 100})) == 100
    assert effective_max_seq_len(Path(tiny_model_dir), sup({"max_seq_len": 10**6})) == 2048
    assert effective_max_seq_len(None, sup({})) is None
