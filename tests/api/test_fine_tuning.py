"""Fine-tuning jobs API through the official SDK (no worker: jobs stop at `queued`): create in both
forms, parameter errors naming `param`, list with cursor and metadata filter, events, state
changes (and their 400s), checkpoints, invalid training file, isolation between projects."""

from __future__ import annotations

import time

import openai
import pytest
import sqlalchemy as sa

from tests.support.data import chat_jsonl, upload
from tests.support.wait import wait_job

MODEL = "openft-tiny"


@pytest.fixture(scope="module")
def train_file(api):
    return upload(api, chat_jsonl(12)).id


@pytest.fixture(scope="module")
def valid_file(api):
    return upload(api, chat_jsonl(4, seed=1), "valid.jsonl").id


def test_create_method_form_echoes_auto(api, train_file, valid_file):
    job = api.fine_tuning.jobs.create(
        model=MODEL, training_file=train_file, validation_file=valid_file, suffix="reviews_v-1", seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        metadata={"team": "a"}, integrations=[{"type": "wandb", "wandb": {"project": "p"}}])
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert job.status == "validating_files" and job.model == MODEL
    assert (job.training_file, job.validation_file, job.seed, job.suffix) == (train_file, valid_file, 7, "reviews_v-1")
    assert job.hyperparameters.model_dump() == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert job.method.type == "supervised"
    assert job.method.supervised.hyperparameters.n_epochs == 2
    assert job.method.supervised.hyperparameters.batch_size == "auto"
    assert job.metadata == {"team": "a"} and job.integrations[0].wandb.project == "p"
    assert job.result_files == [] and job.fine_tuned_model is None and job.finished_at is None
    assert job.error is None and job.trained_tokens is None and job.organization_id
    raw = api.fine_tuning.jobs.with_raw_response.retrieve(job.id).http_response.json()
    for field in ("id", "object", "model", "created_at", "finished_at", "estimated_finish", "fine_tuned_model",
                  "organization_id", "status", "hyperparameters", "method", "training_file", "validation_file",
                  "result_files", "trained_tokens", "seed", "suffix", "metadata", "integrations", "error"):
        assert field in raw, field
    job = wait_job(api, job.id, {"queued"})
    assert job.hyperparameters.batch_size == "auto"  # still "auto" until the job starts
    warns = [e.message for e in api.fine_tuning.jobs.list_events(job.id) if e.level == "warn"]
    assert not any("wandb" in m for m in warns)  # used by the runner now (openft.jobs.integrations), no warning


def test_create_deprecated_hyperparameters_and_random_seed(api, train_file):
    a = api.fine_tuning.jobs.create(model=MODEL, training_file=train_file,
                                    hyperparameters={"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.5})
    assert a.method.type == "supervised"
    assert a.method.supervised.hyperparameters.model_dump() == {"n_epochs": 3, "batch_size": 2,
                                                                "learning_rate_multiplier": 0.5}
    assert a.hyperparameters.n_epochs == 3
    b = api.fine_tuning.jobs.create(model=MODEL, training_file=train_file)
    assert b.hyperparameters.model_dump() == {"n_epochs": "auto", "batch_size": "auto",
                                              "learning_rate_multiplier": "auto"}
    assert isinstance(a.seed, int) and isinstance(b.seed, int)
    for j in (a, b):
        api.fine_tuning.jobs.cancel(j.id)


@pytest.mark.parametrize("kwargs,param", [
    ({"extra_body": {"learning_rate": 0.1}}, "learning_rate"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
     "method.supervised.hyperparameters.n_epochs"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"lora_rank": 8}}}},
     "method.supervised.hyperparameters.lora_rank"),
    ({"hyperparameters": {"batch_size": "big"}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"learning_rate_multiplier": -1}}, "hyperparameters.learning_rate_multiplier"),
    ({"method": {"type": "reinforcement"}}, "method.type"),
    ({"method": {"type": "magic"}}, "method.type"),
    ({"hyperparameters": {"lora_r": 0}}, "hyperparameters.lora_r"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"lr_schedule": "zigzag"}}}},
     "method.supervised.hyperparameters.lr_schedule"),
    ({"suffix": "has space"}, "suffix"),
    ({"suffix": "x" * 65}, "suffix"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"seed": -1}, "seed"),
    ({"model": "no-such-model"}, "model"),
    ({"model": "ft:openft-tiny:openft:x:nothere"}, "model"),
    ({"training_file": "file-doesnotexist"}, "training_file"),
    ({"validation_file": "file-doesnotexist"}, "validation_file"),
])
def test_bad_create_parameters_are_400_with_param(api, train_file, kwargs, param):
    args = {"model": MODEL, "training_file": train_file, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(**args)
    assert e.value.body["param"] == param, e.value.body
    assert e.value.body["message"]
    if param == "learning_rate":
        assert e.value.body["message"] == "Unrecognized request argument supplied: learning_rate"


def test_openft_training_options_are_accepted(api, train_file):
    job = api.fine_tuning.jobs.create(model=MODEL, training_file=train_file, method={
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "lora_r": 4, "lr_schedule": "cosine"}}})
    raw = api.fine_tuning.jobs.with_raw_response.retrieve(job.id).http_response.json()
    assert raw["method"]["supervised"]["hyperparameters"]["lora_r"] == 4
    assert set(raw["hyperparameters"]) == {"n_epochs", "batch_size", "learning_rate_multiplier"}  # OpenAI's shape
    api.fine_tuning.jobs.cancel(job.id)


def test_missing_required_and_wrong_purpose(api, train_file):
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model=MODEL, training_file=None)  # type: ignore[arg-type]
    assert e.value.body["param"] == "training_file"
    other = upload(api, chat_jsonl(12), "u.jsonl", purpose="user_data").id
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model=MODEL, training_file=other)
    assert e.value.body["param"] == "training_file" and "fine-tune" in e.value.body["message"]


def test_list_cursor_and_metadata_filter(api, train_file):
    ids = [api.fine_tuning.jobs.create(model=MODEL, training_file=train_file,
                                       metadata={"batch": "list-test", "i": str(i)}).id for i in range(3)]
    page = api.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == ids[::-1][:2] and page.has_more
    nxt = api.fine_tuning.jobs.list(limit=2, after=ids[1])
    assert nxt.data[0].id == ids[0]
    got = api.fine_tuning.jobs.list(metadata={"batch": "list-test"})
    assert [j.id for j in got.data] == ids[::-1]
    assert [j.id for j in api.fine_tuning.jobs.list(metadata={"batch": "list-test", "i": "1"}).data] == [ids[1]]
    assert api.fine_tuning.jobs.list(metadata={"batch": "nope"}).data == []
    paged = [j.id for j in api.fine_tuning.jobs.list(metadata={"batch": "list-test"}, limit=1)]
    assert paged == ids[::-1]
    for jid in ids:
        api.fine_tuning.jobs.cancel(jid)


def test_events_newest_first_with_cursor(api, train_file):
    job = api.fine_tuning.jobs.create(model=MODEL, training_file=train_file)
    wait_job(api, job.id, {"queued"})
    events = api.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events[-1].message == f"Created fine-tuning job: {job.id}"
    assert any(e.message.startswith("Validating training file") for e in events)
    assert events[0].message == "Files validated, moving job to queued state"
    assert all(e.object == "fine_tuning.job.event" and e.id.startswith("ftevent-") for e in events)
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    first = api.fine_tuning.jobs.list_events(job.id, limit=1)
    assert first.has_more and first.data[0].id == events[0].id
    rest = api.fine_tuning.jobs.list_events(job.id, after=events[0].id, limit=100).data
    assert [e.id for e in rest] == [e.id for e in events[1:]]
    assert [e.id for e in api.fine_tuning.jobs.list_events(job.id, limit=1)] == [e.id for e in events]
    api.fine_tuning.jobs.cancel(job.id)


def test_state_changes_and_invalid_ones(api, api_server, train_file):
    job = api.fine_tuning.jobs.create(model=MODEL, training_file=train_file)
    wait_job(api, job.id, {"queued"})
    assert api.fine_tuning.jobs.pause(job.id).status == "paused"
    assert api.fine_tuning.jobs.pause(job.id).status == "paused"  # idempotent
    assert api.fine_tuning.jobs.resume(job.id).status == "queued"
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.resume(job.id)
    assert "queued" in e.value.body["message"]
    # a running job: pause is a request the runner honours at its next checkpoint
    from openft.store.db import jobs

    db = api_server.db()
    with db.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job.id).values(status="running"))
    try:
        assert api.fine_tuning.jobs.pause(job.id).status == "running"
        with db.connect() as conn:
            assert conn.execute(sa.select(jobs.c.requested_action).where(jobs.c.id == job.id)).scalar() == "pause"
        api.fine_tuning.jobs.resume(job.id)  # withdraws the request
        with db.connect() as conn:
            assert conn.execute(sa.select(jobs.c.requested_action).where(jobs.c.id == job.id)).scalar() is None
    finally:
        db.dispose()
    done = api.fine_tuning.jobs.cancel(job.id)
    assert done.status == "cancelled" and done.finished_at >= done.created_at
    for call in (api.fine_tuning.jobs.cancel, api.fine_tuning.jobs.pause, api.fine_tuning.jobs.resume):
        with pytest.raises(openai.BadRequestError) as e:  # a 400, never a 409 (the SDK would retry it)
            call(job.id)
        assert "cancelled" in e.value.body["message"]
    msgs = [e.message for e in api.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Fine-tuning job cancelled" in msgs


def test_invalid_training_file_fails_with_located_error(api, train_file):
    lines = chat_jsonl(12).decode().splitlines()
    lines[3] = '{"messages": [{"role": "user", "content": "no closing brace"}'
    bad = upload(api, ("\n".join(lines) + "\n").encode(), "bad.jsonl").id
    job = api.fine_tuning.jobs.create(model=MODEL, training_file=bad)
    job = wait_job(api, job.id, {"failed"})
    assert job.error.param == "training_file"
    assert job.error.code == "invalid_json"
    assert "bad.jsonl:4" in job.error.message and job.finished_at
    few = upload(api, chat_jsonl(3), "few.jsonl").id
    job = wait_job(api, api.fine_tuning.jobs.create(model=MODEL, training_file=few).id, {"failed"})
    assert job.error.code == "invalid_n_examples"
    assert api.fine_tuning.jobs.list_events(job.id).data[0].level == "error"


def _insert_checkpoints(api_server, job_id: str, project: str, steps: list[int]) -> None:
    """Checkpoint rows as the runner writes them (the e2e test makes real ones)."""
    from openft.store.db import checkpoints

    db = api_server.db()
    with db.begin() as conn:
        for s in steps:
            conn.execute(checkpoints.insert().values(
                id=f"ftckpt_test{job_id[-6:]}{s}", job_id=job_id, project_id=project, created_at=int(time.time()),
                step_number=s, fine_tuned_model_checkpoint=f"ft:{MODEL}:openft::{job_id[6:14]}:ckpt-step-{s}",
                metrics={"step": s, "train_loss": 1.0 / s}, path="/nonexistent", deleted=False))
    db.dispose()


def test_checkpoints_list_and_isolation(api, other_api, api_server, train_file):
    from openft.store.auth import DEFAULT_PROJECT_ID

    job = api.fine_tuning.jobs.create(model=MODEL, training_file=train_file)
    api.fine_tuning.jobs.cancel(job.id)
    assert api.fine_tuning.jobs.checkpoints.list(job.id).data == []
    _insert_checkpoints(api_server, job.id, DEFAULT_PROJECT_ID, [2, 4, 6])
    page = api.fine_tuning.jobs.checkpoints.list(job.id, limit=2)
    assert [c.step_number for c in page.data] == [6, 4] and page.has_more
    c = page.data[0]
    assert c.object == "fine_tuning.job.checkpoint" and c.fine_tuning_job_id == job.id
    assert c.metrics.step == 6 and c.metrics.train_loss == pytest.approx(1 / 6)
    assert [x.step_number for x in api.fine_tuning.jobs.checkpoints.list(job.id, limit=1)] == [6, 4, 2]
    assert api.models.retrieve(c.fine_tuned_model_checkpoint).id == c.fine_tuned_model_checkpoint
    with pytest.raises(openai.NotFoundError):
        other_api.models.retrieve(c.fine_tuned_model_checkpoint)
    with pytest.raises(openai.NotFoundError):
        other_api.fine_tuning.jobs.checkpoints.list(job.id)


def test_other_project_gets_404(api, other_api, train_file):
    job = api.fine_tuning.jobs.create(model=MODEL, training_file=train_file)
    for call in (other_api.fine_tuning.jobs.retrieve, other_api.fine_tuning.jobs.cancel,
                 other_api.fine_tuning.jobs.pause, other_api.fine_tuning.jobs.resume,
                 other_api.fine_tuning.jobs.list_events):
        with pytest.raises(openai.NotFoundError) as e:
            call(job.id)
        assert e.value.body["param"] == "fine_tuning_job_id"
    assert job.id not in [j.id for j in other_api.fine_tuning.jobs.list()]
    with pytest.raises(openai.BadRequestError) as e:  # nor can it train on this project's file
        other_api.fine_tuning.jobs.create(model=MODEL, training_file=train_file)
    assert e.value.body["param"] == "training_file"
    api.fine_tuning.jobs.cancel(job.id)


def test_unknown_ids_are_404(api):
    with pytest.raises(openai.NotFoundError) as e:
        api.fine_tuning.jobs.retrieve("ftjob-nope")
    assert "ftjob-nope" in e.value.body["message"]
    for call in (lambda: api.fine_tuning.jobs.list(after="ftjob-nope"), lambda: api.files.list(after="file-nope")):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.body["param"] == "after"


def test_continuing_a_full_fine_tune_is_refused(api, api_server, train_file, tmp_path):
    """The trainer continues LoRA adapters only: a full fine-tune's folder (model or checkpoint)
    must not be handed to it as an adapter, and full fine-tuning on top of an adapter is refused."""
    from openft.store.auth import DEFAULT_PROJECT_ID
    from openft.store.db import models

    full_dir, lora_dir = tmp_path / "full", tmp_path / "lora"
    full_dir.mkdir()
    (full_dir / "config.json").write_text("{}")   # a full model folder: weights, no adapter_config.json
    lora_dir.mkdir()
    (lora_dir / "adapter_config.json").write_text("{}")
    full_id, lora_id = f"ft:{MODEL}:openft:full:ftjob-fullx", f"ft:{MODEL}:openft:lora:ftjob-lorax"
    db = api_server.db()
    with db.begin() as conn:
        for mid, kind, path in ((full_id, "full", full_dir), (lora_id, "lora", lora_dir)):
            conn.execute(models.insert().values(id=mid, project_id=DEFAULT_PROJECT_ID, created_at=int(time.time()),
                                                owned_by="openft", base_model=MODEL, job_id=None, method=kind,
                                                path=str(path), deleted=False))
    db.dispose()
    n_before = len(api.fine_tuning.jobs.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model=full_id, training_file=train_file)
    body = e.value.body
    assert body["param"] == "model" and "not supported yet" in body["message"] and full_id in body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model=lora_id, training_file=train_file, method={
            "type": "supervised", "supervised": {"hyperparameters": {"method": "full"}}})
    assert e.value.body["param"] == "model" and "'full'" in e.value.body["message"]
    assert len(api.fine_tuning.jobs.list(limit=100).data) == n_before   # nothing was created
    job = api.fine_tuning.jobs.create(model=lora_id, training_file=train_file)   # a LoRA model continues
    assert job.model == lora_id
    db = api_server.db()
    with db.connect() as conn:
        from openft.store.db import jobs

        assert conn.execute(sa.select(jobs.c.init_adapter).where(jobs.c.id == job.id)).scalar() == str(lora_dir)
    db.dispose()
    api.fine_tuning.jobs.cancel(job.id)
