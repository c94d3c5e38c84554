"""Integrations at job creation, through the SDK against a server (in this process, so that a
test can block an import): wandb and tensorboard are accepted and shown on the job; a package
that is not installed is a 400 naming `integrations`; a malformed integration is a 400."""

from __future__ import annotations

import sys

import openai
import pytest

from tests.support.data import write_chat_jsonl
from tests.support.servers import in_process_server


@pytest.fixture
def api(settings, tmp_path):
    with in_process_server(settings, worker=False) as srv:
        client = srv.client
        client.training_file = client.files.create(file=write_chat_jsonl(tmp_path / "t.jsonl").open("rb"),
                                                   purpose="fine-tune").id
        yield client


WANDB = {"type": "wandb", "wandb": {"project": "p", "name": "n", "entity": "e", "tags": ["a"]}}


def test_wandb_and_tensorboard_are_accepted(api):
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=api.training_file,
                                      integrations=[WANDB, {"type": "tensorboard"}])
    got = api.fine_tuning.jobs.with_raw_response.retrieve(job.id).http_response.json()["integrations"]
    assert got == [WANDB, {"type": "tensorboard", "tensorboard": {}}]
    events = [e.message for e in api.fine_tuning.jobs.list_events(job.id)]
    assert not [m for m in events if "not used" in m]


@pytest.mark.parametrize("blocked,integration", [("wandb", WANDB), ("tensorboard", {"type": "tensorboard"})])
def test_a_missing_package_is_a_400_naming_integrations(api, monkeypatch, blocked, integration):
    monkeypatch.setitem(sys.modules, blocked, None)  # `import wandb` now raises ImportError
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="openft-tiny", training_file=api.training_file, integrations=[integration])
    assert e.value.body["param"] == "integrations" and f"pip install {blocked}" in e.value.body["message"]
    assert e.value.body["code"] == "integration_unavailable"


@pytest.mark.parametrize("integration", [{"type": "wandb"}, {"type": "mlflow"},
                                         {"type": "tensorboard", "wandb": {"project": "p"}},
                                         {"type": "wandb", "wandb": {"project": "p", "color": "red"}}])
def test_malformed_integrations_are_400(api, integration):
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="openft-tiny", training_file=api.training_file, integrations=[integration])
    assert e.value.body["param"].startswith("integrations")
