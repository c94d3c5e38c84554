"""A model id is never a file-system path (issue 9, finding 1): every route that takes a model
id answers a path, relative or absolute, like any unknown id, and in the same words whether or
not the path exists. Hub ids need the operator's OPENFT_ALLOW_HUB_MODELS."""

from __future__ import annotations

import os

import httpx
import openai
import pytest

from tests.support.data import chat_jsonl, upload
from tests.support.servers import API, ServerSpec, running

MSG = [{"role": "user", "content": "hi"}]


def path_ids(real_folder: str) -> list[str]:
    """Ids that name folders: a relative path to a real model folder (the exploit: it loaded),
    the same through `..`, an absolute one, a folder outside the data dir, hub-shaped paths."""
    rel = os.path.relpath(real_folder)
    return [rel, "../" * 8 + real_folder.lstrip("/"), real_folder, "../../../../etc", "./openft-tiny",
            "a/b/c/d", "org/../name", "/etc/passwd", "..%2F..%2Fetc"]


def _not_found(exc) -> None:
    body = exc.value.body
    assert exc.value.status_code == 404 and body["code"] == "model_not_found" and body["param"] == "model", body


def _inference_is_not_found(api, model: str) -> None:
    """Chat and legacy completions with `model` both answer 404 model_not_found (param model)."""
    with pytest.raises(openai.NotFoundError) as e:
        api.chat.completions.create(model=model, messages=MSG, max_tokens=1)
    _not_found(e)
    with pytest.raises(openai.NotFoundError) as e:
        api.completions.create(model=model, prompt="hi", max_tokens=1)
    _not_found(e)


def test_chat_and_completions_refuse_paths(sec_server, tiny_model_dir):
    api = sec_server.client()
    for model in path_ids(tiny_model_dir):
        _inference_is_not_found(api, model)


def test_models_retrieve_and_delete_refuse_paths(sec_server, tiny_model_dir):
    api = sec_server.client()
    for model in path_ids(tiny_model_dir):
        with pytest.raises(openai.NotFoundError) as e:
            api.models.retrieve(model)
        assert e.value.status_code == 404, model
        with pytest.raises(openai.NotFoundError):
            api.models.delete(model)
    r = httpx.get(f"{sec_server.base_url}/models/a/b/c/d", headers={"Authorization": f"Bearer {sec_server.api_key}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_job_creation_refuses_paths(sec_server, tiny_model_dir):
    api = sec_server.client()
    f = upload(api, chat_jsonl())
    for model in path_ids(tiny_model_dir):
        with pytest.raises(openai.BadRequestError) as e:
            api.fine_tuning.jobs.create(model=model, training_file=f.id)
        assert e.value.body["param"] == "model", (model, e.value.body)


def test_errors_do_not_tell_whether_a_path_exists(sec_server, tiny_model_dir):
    api = sec_server.client()
    f = upload(api, chat_jsonl())

    def answers(model: str) -> list[str]:
        out = []
        for call in (lambda: api.chat.completions.create(model=model, messages=MSG, max_tokens=1),
                     lambda: api.models.retrieve(model),
                     lambda: api.fine_tuning.jobs.create(model=model, training_file=f.id)):
            with pytest.raises(openai.APIStatusError) as e:
                call()
            out.append((e.value.status_code, e.value.body["message"].replace(model, "<id>")))
        return out

    rel = os.path.relpath(tiny_model_dir)
    missing = os.path.join(os.path.dirname(rel), "no-such-model-folder")
    assert answers(rel) == answers(missing)
    assert answers("../../../../etc") == answers("../../../../no-such-dir-here")


def test_hub_ids_need_the_operator(sec_server):
    api = sec_server.client()
    with pytest.raises(openai.NotFoundError) as e:
        api.chat.completions.create(model="HuggingFaceTB/SmolLM2-135M-Instruct", messages=MSG, max_tokens=1)
    _not_found(e)
    assert "OPENFT_ALLOW_HUB_MODELS" in e.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("HuggingFaceTB/SmolLM2-135M-Instruct")


CACHED_HUB_ID = "openft-test/tiny-cached"


def _hub_cache_with(hf_home, repo_id: str, folder: str) -> None:
    """The hub cache layout `snapshot_download` reads offline: models--org--name/{refs/main, snapshots/REV/}."""
    import shutil

    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    rev = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    shutil.copytree(folder, repo / "snapshots" / rev)


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory, model_cache, tiny_model_dir):
    """Hub ids allowed, offline, with a hub cache holding only CACHED_HUB_ID (the tiny model);
    LoRA rank capped at 8 by the operator."""
    hf_home = tmp_path_factory.mktemp("hf-home")
    _hub_cache_with(hf_home, CACHED_HUB_ID, tiny_model_dir)
    spec = ServerSpec(API, worker=False, env={"OPENFT_MAX_UPLOAD_BYTES": "200000", "OPENFT_ALLOW_HUB_MODELS": "1",
                                              "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "OPENFT_LIMIT_LORA_R": "8"})
    with running(spec.server(tmp_path_factory.mktemp("hub") / "data", model_cache)) as server:
        yield server


def test_unknown_or_offline_hub_id_is_404_not_500(hub_server):
    api = hub_server.client()
    for model in ("no-such-org/no-such-model", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        _inference_is_not_found(api, model)
    with pytest.raises(openai.NotFoundError):  # still never a path
        api.chat.completions.create(model="../../../../etc", messages=MSG, max_tokens=1)


def test_an_allowed_cached_hub_model_serves_and_trains(hub_server):
    api = hub_server.client()
    out = api.chat.completions.create(model=CACHED_HUB_ID, messages=MSG, max_tokens=2, temperature=0)
    assert out.model == CACHED_HUB_ID and out.usage.completion_tokens >= 1
    f = upload(api, chat_jsonl())
    with pytest.raises(openai.BadRequestError) as e:  # its modules are read from the cached weights
        api.fine_tuning.jobs.create(model=CACHED_HUB_ID, training_file=f.id,
                                    hyperparameters={"target_modules": ["wq"], "lora_r": 8})
    assert e.value.body["param"] == "hyperparameters.target_modules" and "q_proj" in e.value.body["message"]
    job = api.fine_tuning.jobs.create(model=CACHED_HUB_ID, training_file=f.id,
                                      hyperparameters={"target_modules": ["q_proj"], "lora_r": 8})
    assert job.model == CACHED_HUB_ID


def test_operator_limits_apply(hub_server):
    api = hub_server.client()
    f = upload(api, chat_jsonl())
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id, hyperparameters={"lora_r": 16})
    assert e.value.body["param"] == "hyperparameters.lora_r" and "[1, 8]" in e.value.body["message"]
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id, hyperparameters={"lora_r": 8})
    assert job.status == "validating_files"


def test_a_default_above_the_operators_limit_is_explained(hub_server):
    api = hub_server.client()
    f = upload(api, chat_jsonl())
    with pytest.raises(openai.BadRequestError) as e:  # lora_r defaults to 16; this server allows 8
        api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id)
    assert e.value.body["param"] == "method.supervised.hyperparameters.lora_r"
    assert "OPENFT_LIMIT_LORA_R" in e.value.body["message"]
