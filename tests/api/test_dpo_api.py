"""DPO through the official SDK against a real server with its embedded worker: a dpo job from
the base model and one continuing an `ft:` model (SFT then DPO), "auto" echoed then resolved,
reward metrics in events, checkpoints and the results file; file validation of preference
data with located errors; hyperparameter checks."""

from __future__ import annotations

import csv
import io

import openai
import pytest

from tests.support.data import chat_jsonl, dpo_method, pair, pref_jsonl, upload
from tests.support.servers import API, ServerSpec
from tests.support.wait import wait_job

DONE = {"succeeded", "failed", "cancelled"}


SERVER = ServerSpec(API)


@pytest.fixture(scope="module")
def api(server):
    return server.client()


@pytest.fixture(scope="module")
def dpo_job(api, server):
    train = upload(api, pref_jsonl(12), "prefs.jsonl")
    valid = upload(api, pref_jsonl(4, seed=1), "prefs-valid.jsonl")
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id, validation_file=valid.id,
                                      suffix="dpo", method=dpo_method(n_epochs=2, batch_size=4, lora_r=8))
    created = job
    job = wait_job(api, job.id, DONE, timeout=480)
    assert job.status == "succeeded", (job.error, server.log.read_text()[-3000:])
    return created, job


@pytest.mark.slow
def test_dpo_job_end_to_end(api, dpo_job):
    created, job = dpo_job
    hp = created.method.dpo.hyperparameters
    assert created.method.type == "dpo" and (hp.beta, hp.learning_rate_multiplier) == ("auto", "auto")
    assert (hp.n_epochs, hp.batch_size) == (2, 4)
    hp = job.method.dpo.hyperparameters  # the values used
    assert hp.beta == 0.1 and isinstance(hp.learning_rate_multiplier, float) and job.trained_tokens > 0
    events = list(api.fine_tuning.jobs.list_events(job.id, limit=100))[::-1]
    metrics = [e.data for e in events if e.type == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 7))
    for key in ("train_loss", "train_reward_accuracy", "train_reward_margin", "train_chosen_reward",
                "train_rejected_reward"):
        assert all(isinstance(m[key], float) for m in metrics), key
    assert metrics[0]["train_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1
    assert any(m.get("full_valid_reward_accuracy") is not None for m in metrics)
    ckpts = list(api.fine_tuning.jobs.checkpoints.list(job.id))
    assert ckpts and all("train_reward_accuracy" in c.metrics.model_dump() for c in ckpts)
    content = api.files.content(job.result_files[0]).read().decode()
    rows = list(csv.DictReader(io.StringIO(content)))
    assert len(rows) == 6 and {"train_reward_accuracy", "train_reward_margin", "valid_reward_accuracy",
                               "train_chosen_reward", "train_rejected_reward"} <= set(rows[0])
    # the model and a checkpoint are usable models
    for model in (job.fine_tuned_model, ckpts[0].fine_tuned_model_checkpoint):
        out = api.chat.completions.create(model=model, max_tokens=3, messages=pair(99, "great")["input"]["messages"])
        assert out.choices[0].message.content is not None


@pytest.mark.slow
def test_sft_then_dpo_from_ft_model(api, server):
    sft = api.fine_tuning.jobs.create(model="openft-tiny", training_file=upload(api, chat_jsonl(10)).id,
                                      method={"type": "supervised", "supervised": {"hyperparameters": {
                                          "n_epochs": 1, "batch_size": 5}}})
    sft = wait_job(api, sft.id, DONE, timeout=480)
    assert sft.status == "succeeded", sft.error
    job = api.fine_tuning.jobs.create(model=sft.fine_tuned_model, training_file=upload(api, pref_jsonl(10)).id,
                                      method=dpo_method(n_epochs=1, batch_size=5, beta=0.5))
    job = wait_job(api, job.id, DONE, timeout=480)
    assert job.status == "succeeded", (job.error, server.log.read_text()[-3000:])
    assert job.method.dpo.hyperparameters.beta == 0.5
    first = next(e.data for e in list(api.fine_tuning.jobs.list_events(job.id, limit=100))[::-1] if e.type == "metrics")
    # the reference is the ft: model itself, so the first step starts at log(2), not at the base model's margin
    assert first["train_loss"] == pytest.approx(0.6931, abs=1e-3) and first["train_reward_margin"] == pytest.approx(0, abs=1e-4)


def _failed(api, data: bytes, method: dict) -> openai.types.fine_tuning.FineTuningJob:
    f = upload(api, data, "data.jsonl")
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id, method=method)
    job = wait_job(api, job.id, DONE | {"queued", "running"}, timeout=120)
    assert job.status == "failed", job.status
    assert job.error.param == "training_file"
    return job


def _drop_preferred(x):
    return {k: v for k, v in x.items() if k != "preferred_output"}


def _same(x):
    return {**x, "non_preferred_output": x["preferred_output"]}


def test_validation_no_preferred_output_is_located(api):
    job = _failed(api, pref_jsonl(12, broken={3: _drop_preferred}), dpo_method(n_epochs=1))
    assert ":3 [preferred_output]" in job.error.message and "no 'preferred_output'" in job.error.message


def test_validation_identical_outputs_is_located(api):
    job = _failed(api, pref_jsonl(12, broken={5: _same}), dpo_method(n_epochs=1))
    assert job.error.code == "identical_outputs"
    assert ":5 [non_preferred_output]" in job.error.message


def test_validation_supervised_file_for_dpo_job(api):
    job = _failed(api, chat_jsonl(12), dpo_method(n_epochs=1))
    assert job.error.code == "invalid_file_format"
    assert "chat format" in job.error.message and "expects preference examples" in job.error.message


def test_validation_preference_file_for_supervised_job(api):
    job = _failed(api, pref_jsonl(12), {"type": "supervised"})
    assert "preference format" in job.error.message and "expects chat or prompt_completion" in job.error.message


def test_hyperparameter_checks(api):
    f = upload(api, pref_jsonl(12))
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id, method=dpo_method(beta=5))
    assert e.value.body["param"] == "method.dpo.hyperparameters.beta"
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id,
                                    method={"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}})
    assert "beta" in e.value.body["param"]
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id, method=dpo_method(lora_r=4, beta=0.2))
    assert job.method.dpo.hyperparameters.beta == 0.2 and job.method.dpo.hyperparameters.n_epochs == "auto"
    api.fine_tuning.jobs.cancel(job.id)
