"""Tutorial code unchanged (issue 21, 3.3): responses validate against the official SDK's pydantic
types, strictly (`model_validate`, not the SDK's lenient construct): fine-tuning jobs carry OpenAI's
`user_provided_suffix`; eval runs carry an error object, never null; `openft evals create` prints
the API's `schema`, not the pydantic attribute `schema_`; openft-tiny has a context length before
it is built. A live server without a worker (nothing here needs a job or a run to progress)."""

from __future__ import annotations

import json

import httpx
import pytest
from openai.types.evals.run_create_response import RunCreateResponse
from openai.types.evals.run_list_response import RunListResponse
from openai.types.evals.run_retrieve_response import RunRetrieveResponse
from openai.types.fine_tuning.fine_tuning_job import FineTuningJob

from openft.config import Settings
from openft.models import get_base_model
from openft.models.metadata import base_metadata
from openft.models.registry import TINY_MODEL
from tests.support.cli import invoke
from tests.support.data import chat_jsonl, upload
from tests.support.servers import ServerSpec

SERVER = ServerSpec(worker=False)
SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}}
CRITERIA = [{"type": "string_check", "name": "x", "input": "{{item.text}}", "reference": "a",
             "operation": "eq"}]


@pytest.fixture(scope="module")
def api(live_server):
    return live_server.client()


def _get(server, path: str) -> dict:
    r = httpx.get(f"{server.base_url}{path}", headers={"Authorization": f"Bearer {server.api_key}"}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_job_has_user_provided_suffix_and_validates(api, live_server):
    f = upload(api, chat_jsonl())
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id, suffix="tutorial")
    raw = _get(live_server, f"/fine_tuning/jobs/{job.id}")
    assert raw["user_provided_suffix"] == "tutorial"
    assert FineTuningJob.model_validate(raw).user_provided_suffix == "tutorial"  # type: ignore[attr-defined]
    api.fine_tuning.jobs.cancel(job.id)


def test_eval_run_error_is_an_object_and_runs_validate(api, live_server):
    ev = api.evals.create(name="shapes", data_source_config={"type": "custom", "item_schema": SCHEMA},
                          testing_criteria=CRITERIA)
    created = api.evals.runs.with_raw_response.create(ev.id, data_source={
        "type": "completions", "model": "openft-tiny",
        "source": {"type": "file_content", "content": [{"item": {"text": "a"}}]},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.text}}"}]}})
    raw = created.http_response.json()
    assert isinstance(raw["error"], dict), raw["error"]
    RunCreateResponse.model_validate(raw)
    RunRetrieveResponse.model_validate(_get(live_server, f"/evals/{ev.id}/runs/{raw['id']}"))
    for run in _get(live_server, f"/evals/{ev.id}/runs")["data"]:
        RunListResponse.model_validate(run)


def test_evals_create_prints_schema_not_schema_(live_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENFT_API_KEY", live_server.api_key)
    monkeypatch.setenv("OPENFT_BASE_URL", live_server.base_url)
    out = invoke("evals", "create", "--name", "cli", "--item-schema", json.dumps(SCHEMA),
                 "--criteria", json.dumps(CRITERIA))
    assert out.exit_code == 0, out.output
    ev = json.loads(out.stdout)
    assert "schema_" not in out.stdout and ev["data_source_config"]["schema"]["type"] == "object"


def test_tiny_model_has_a_context_length_before_it_is_built(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=tmp_path / "empty-cache")
    assert base_metadata(settings, get_base_model(settings, TINY_MODEL))["context_length"] == 2048
