"""Resource bounds and bad input (issue 9, findings 2 and 3): every trainer option the API takes
has an upper bound (OPENFT_LIMIT_*; threads up to this machine's cores), target_modules are
checked against the base model at creation, and numbers that overflow or text that is not
Unicode are a 400 naming the parameter, never a 500."""

from __future__ import annotations

import os

import httpx
import openai
import pytest

from tests.support.data import chat_jsonl, upload


@pytest.fixture(scope="module")
def training_file(sec_server):
    return upload(sec_server.client(), chat_jsonl()).id


def _post(server, path: str, raw: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", content=raw.encode("utf-8"), timeout=60,
                      headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"})


TOO_MUCH = [("num_threads", 1_000_000), ("num_threads", len(os.sched_getaffinity(0)) + 1), ("lora_r", 100_000),
            ("lora_alpha", 1e9), ("max_seq_len", 10**9), ("pack_tokens", 10**9), ("n_epochs", 51),
            ("batch_size", 257), ("checkpoint_every_steps", 10**12), ("keep_checkpoints", 10**6),
            ("eval_every_steps", 10**12), ("weight_decay", 1e30), ("max_grad_norm", 1e300),
            ("target_modules", ["q_proj"] * 65), ("lora_r", 0), ("num_threads", 0), ("keep_checkpoints", 0)]


@pytest.mark.parametrize("name,value", TOO_MUCH)
def test_trainer_options_are_bounded(sec_server, training_file, name, value):
    api = sec_server.client()
    for where, kw in (("hyperparameters", {"hyperparameters": {name: value}}),
                      ("method.supervised.hyperparameters",
                       {"method": {"type": "supervised", "supervised": {"hyperparameters": {name: value}}}})):
        with pytest.raises(openai.BadRequestError) as e:
            api.fine_tuning.jobs.create(model="openft-tiny", training_file=training_file, **kw)
        assert e.value.body["param"] == f"{where}.{name}", e.value.body


def test_within_bounds_is_accepted(sec_server, training_file):
    job = sec_server.client().fine_tuning.jobs.create(
        model="openft-tiny", training_file=training_file,
        hyperparameters={"num_threads": 1, "lora_r": 8, "max_seq_len": 512, "pack_tokens": 1024, "n_epochs": 1,
                         "batch_size": 2, "checkpoint_every_steps": 5, "keep_checkpoints": 2,
                         "target_modules": ["q_proj", "v_proj"]})
    assert job.status == "validating_files"


def test_target_modules_checked_against_the_model_at_creation(sec_server, training_file):
    api = sec_server.client()
    for bad in (["nope_proj"], ["q_proj", "attention.wq"], ["../x"], [""]):
        with pytest.raises(openai.BadRequestError) as e:
            api.fine_tuning.jobs.create(model="openft-tiny", training_file=training_file,
                                        hyperparameters={"target_modules": bad})
        assert e.value.body["param"] == "hyperparameters.target_modules", (bad, e.value.body)
    assert "q_proj" in e.value.body["message"] or bad == [""]
    for ok in (["all-linear"], ["self_attn.q_proj", "down_proj"]):
        api.fine_tuning.jobs.create(model="openft-tiny", training_file=training_file,
                                    hyperparameters={"target_modules": ok})


@pytest.mark.parametrize("raw,param", [
    ('{"n_epochs": 1e400}', "hyperparameters.n_epochs"),
    ('{"batch_size": -1e400}', "hyperparameters.batch_size"),
    ('{"learning_rate_multiplier": 1e400}', "hyperparameters.learning_rate_multiplier"),
    ('{"lora_r": 1e400}', "hyperparameters.lora_r"),
    ('{"weight_decay": 1e400}', "hyperparameters.weight_decay"),
    ('{"lora_dropout": NaN}', None),  # not JSON at all: still a 400
])
def test_overflowing_numbers_are_400(sec_server, training_file, raw, param):
    r = _post(sec_server, "/fine_tuning/jobs",
              f'{{"model": "openft-tiny", "training_file": "{training_file}", "hyperparameters": {raw}}}')
    assert r.status_code == 400, r.text
    if param:
        assert r.json()["error"]["param"] == param, r.text


@pytest.mark.parametrize("path,raw,param", [
    ("/chat/completions", '{"model": "openft-tiny", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
     "messages[0].content"),
    ("/chat/completions", '{"model": "openft-tiny", "messages": [{"role": "user", "content": '
                          '[{"type": "text", "text": "\\udfff"}]}]}', "messages[0].content"),
    ("/completions", '{"model": "openft-tiny", "prompt": "\\ud800", "max_tokens": 1}', "prompt"),
    ("/completions", '{"model": "openft-tiny", "prompt": ["ok", "\\ud800"], "max_tokens": 1}', "prompt"),
    ("/chat/completions", '{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ("/fine_tuning/jobs", '{"model": "openft-tiny", "training_file": "x", "metadata": {"k": "\\ud800"}}', "metadata"),
    ("/fine_tuning/jobs", '{"model": "openft-tiny", "training_file": "x", "hyperparameters": {"\\ud800": 1}}', None),
])
def test_lone_surrogates_are_400(sec_server, path, raw, param):
    r = _post(sec_server, path, raw)
    assert r.status_code == 400, r.text
    if param:
        assert r.json()["error"]["param"] == param, r.text
