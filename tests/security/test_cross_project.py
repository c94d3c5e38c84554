"""Cross-project access through every route that takes an id: project B's key gets a 404 (or a
400 naming the parameter, for ids inside a job request) for everything project A owns, and A
still sees its objects afterwards."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.data import chat_jsonl, upload

MSG = [{"role": "user", "content": "hi"}]


def test_owner_sees_its_objects(two_projects):
    a, _, own = two_projects  # the control: every id below is real and reachable by its owner
    assert a.files.retrieve(own.file_id).id == own.file_id
    assert a.fine_tuning.jobs.retrieve(own.job_id).id == own.job_id
    assert a.models.retrieve(own.model_id).id == own.model_id
    assert a.models.retrieve(own.checkpoint_id).id == own.checkpoint_id
    assert [c.fine_tuned_model_checkpoint for c in a.fine_tuning.jobs.checkpoints.list(own.job_id)] == \
        [own.checkpoint_id]
    assert own.event_id in [e.id for e in a.fine_tuning.jobs.list_events(own.job_id)]


def test_files_routes(two_projects, sec_server):
    a, b, own = two_projects
    for call in (lambda: b.files.retrieve(own.file_id), lambda: b.files.content(own.file_id),
                 lambda: b.files.delete(own.file_id), lambda: b.files.list(after=own.file_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert own.file_id not in [f.id for f in b.files.list()]
    assert a.files.content(own.file_id).content == chat_jsonl()


def test_job_routes(two_projects):
    a, b, own = two_projects
    jobs = b.fine_tuning.jobs
    for call in (lambda: jobs.retrieve(own.job_id), lambda: jobs.cancel(own.job_id), lambda: jobs.pause(own.job_id),
                 lambda: jobs.resume(own.job_id), lambda: jobs.list_events(own.job_id),
                 lambda: jobs.checkpoints.list(own.job_id), lambda: jobs.list(after=own.job_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert own.job_id not in [j.id for j in jobs.list()]
    assert a.fine_tuning.jobs.retrieve(own.job_id).status not in ("cancelled", "paused")


def test_model_routes(two_projects):
    a, b, own = two_projects
    for model in (own.model_id, own.checkpoint_id):
        with pytest.raises(openai.NotFoundError):
            b.models.retrieve(model)
        with pytest.raises(openai.NotFoundError):
            b.models.delete(model)
    assert own.model_id not in [m.id for m in b.models.list()]
    assert a.models.retrieve(own.model_id).id == own.model_id  # B's delete did nothing


def test_generation_routes(two_projects):
    _, b, own = two_projects
    for model in (own.model_id, own.checkpoint_id):
        with pytest.raises(openai.NotFoundError) as e:
            b.chat.completions.create(model=model, messages=MSG, max_tokens=1)
        assert e.value.body["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError) as e:
            b.completions.create(model=model, prompt="hi", max_tokens=1)
        assert e.value.body["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            b.chat.completions.create(model=model, messages=MSG, max_tokens=1, stream=True)


def test_job_creation_with_anothers_ids(two_projects):
    _, b, own = two_projects
    mine = upload(b, chat_jsonl(seed=1))
    cases = [({"model": "openft-tiny", "training_file": own.file_id}, "training_file"),
             ({"model": "openft-tiny", "training_file": mine.id, "validation_file": own.file_id}, "validation_file"),
             ({"model": own.model_id, "training_file": mine.id}, "model"),
             ({"model": own.checkpoint_id, "training_file": mine.id}, "model")]
    for kw, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            b.fine_tuning.jobs.create(**kw)
        assert e.value.body["param"] == param, (kw, e.value.body)


def test_no_key_or_a_wrong_key(sec_server, two_projects):
    _, _, own = two_projects
    url = f"{sec_server.base_url}/files/{own.file_id}"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer sk-openft-wrong"}).status_code == 401
    assert httpx.get(url, params={"api_key": sec_server.api_key}).status_code == 401  # keys ride only in headers
