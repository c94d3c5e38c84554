"""Tutorial code unchanged (issue 21, 3.1): `model="gpt-4o-mini-2024-07-18"` / `"gpt-3.5-turbo"`
run on the operator's aliases (OPENFT_MODEL_ALIASES) wherever a model is named; aliases are
listed in `models.list`; a name that is neither a model nor an alias is answered with the list
of available models. A live server on openft-tiny, driven by the official SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types import Model

from openft.config import Settings
from openft.errors import InvalidRequest
from openft.models.aliases import alias_target, aliases
from tests.support.data import chat_jsonl, upload
from tests.support.servers import ServerSpec

ALIASES = {"gpt-4o-mini*": "openft-tiny", "gpt-3.5-turbo": "openft-tiny", "gpt-4.1*": "no-such-base"}
SERVER = ServerSpec(worker=False, env={"OPENFT_MODEL_ALIASES": json.dumps(ALIASES)})
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def api(live_server):
    return live_server.client()


def test_chat_completions_and_responses_accept_aliases(api):
    for name in ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", "gpt-3.5-turbo"):
        out = api.chat.completions.create(model=name, messages=MSG, max_tokens=1)
        assert out.model == name and out.choices[0].message is not None  # the name asked for, as OpenAI echoes
    assert api.completions.create(model="gpt-3.5-turbo", prompt="hi", max_tokens=1).model == "gpt-3.5-turbo"
    assert api.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=16).model == "gpt-4o-mini"


def test_fine_tuning_job_accepts_an_alias(api):
    f = upload(api, chat_jsonl())
    job = api.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=f.id)
    assert job.id.startswith("ftjob-")
    api.fine_tuning.jobs.cancel(job.id)


def test_eval_run_accepts_an_alias(api):
    ev = api.evals.create(name="alias", data_source_config={
        "type": "custom", "item_schema": {"type": "object", "properties": {"text": {"type": "string"}}}},
        testing_criteria=[{"type": "string_check", "name": "x", "input": "{{sample.output_text}}",
                           "reference": "a", "operation": "eq"}])
    run = api.evals.runs.create(ev.id, data_source={
        "type": "completions", "model": "gpt-4o-mini", "source": {"type": "file_content", "content": [
            {"item": {"text": "a"}}]},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.text}}"}]}})
    assert run.model == "gpt-4o-mini"


def test_models_list_shows_aliases_and_retrieve_answers_them(api, live_server):
    raw = httpx.get(f"{live_server.base_url}/models", headers={"Authorization": f"Bearer {live_server.api_key}"},
                    timeout=120)
    for obj in raw.json()["data"]:
        Model.model_validate(obj)  # strictly, as the SDK's type has it
    listed = {m.id: m for m in api.models.list()}
    for src, dst in ALIASES.items():
        assert listed[src].model_extra["alias_for"] == dst
    got = api.models.retrieve("gpt-3.5-turbo")
    assert got.id == "gpt-3.5-turbo" and got.model_extra["alias_for"] == "openft-tiny"
    with pytest.raises(openai.BadRequestError) as e:
        api.models.delete("gpt-3.5-turbo")
    assert e.value.body["param"] == "model"


def test_unknown_model_lists_the_available_ones(api):
    with pytest.raises(openai.NotFoundError) as e:
        api.chat.completions.create(model="gpt-4", messages=MSG, max_tokens=1)
    message = e.value.body["message"]
    assert e.value.body["code"] == "model_not_found" and "Available models:" in message
    assert "openft-tiny" in message and "gpt-4o-mini* (alias of openft-tiny)" in message
    f = upload(api, chat_jsonl())
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="gpt-4", training_file=f.id)
    assert e.value.body["param"] == "model" and "openft-tiny" in e.value.body["message"]


def test_evals_with_an_unknown_model_list_the_available_ones(api):
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    judge = {"type": "label_model", "name": "j", "model": "gpt-4", "labels": ["a"], "passing_labels": ["a"],
             "input": [{"role": "user", "content": "{{item.text}}"}]}
    with pytest.raises(openai.BadRequestError) as e:
        api.evals.create(name="x", data_source_config={"type": "custom", "item_schema": schema},
                         testing_criteria=[judge])
    assert e.value.body["param"] == "testing_criteria[0].model" and "Available models:" in e.value.body["message"]
    ev = api.evals.create(name="x", data_source_config={"type": "custom", "item_schema": schema},
                          testing_criteria=[{**judge, "model": "gpt-4o-mini"}])  # an alias is a judge too
    with pytest.raises(openai.BadRequestError) as e:
        api.evals.runs.create(ev.id, data_source={
            "type": "completions", "model": "gpt-4", "source": {"type": "file_content", "content": [
                {"item": {"text": "a"}}]},
            "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.text}}"}]}})
    body = e.value.body
    assert body["param"] == "data_source.model" and "openft-tiny" in body["message"], body


def test_an_alias_of_a_missing_model_says_so(api):
    with pytest.raises(openai.NotFoundError) as e:
        api.chat.completions.create(model="gpt-4.1-mini", messages=MSG, max_tokens=1)
    message = e.value.body["message"]
    assert "alias of `no-such-base`" in message and "Available models:" in message


def test_aliases_from_a_file_in_the_map_file_format(tmp_path):
    toml = tmp_path / "aliases.toml"
    toml.write_text('[models]\n"gpt-4o-mini*" = "openft-tiny"\n"gpt-4o-mini-2024-07-18" = "smollm2-135m-instruct"\n')
    s = Settings(data_dir=tmp_path, model_aliases=str(toml))
    assert alias_target(s, "gpt-4o-mini-2024-07-18") == "smollm2-135m-instruct"  # exact before patterns
    assert alias_target(s, "gpt-4o-mini") == "openft-tiny" and alias_target(s, "gpt-4") is None
    js = tmp_path / "aliases.json"
    js.write_text(json.dumps({"gpt-3.5-turbo*": "openft-tiny"}))
    assert aliases(Settings(data_dir=tmp_path, model_aliases=str(js))) == (("gpt-3.5-turbo*", "openft-tiny"),)
    with pytest.raises(InvalidRequest, match="OPENFT_MODEL_ALIASES"):
        aliases(Settings(data_dir=tmp_path, model_aliases='{"a": 1}'))


def test_serve_refuses_to_start_with_malformed_aliases(tmp_path, monkeypatch):
    from tests.support.cli import invoke

    monkeypatch.setenv("OPENFT_MODEL_ALIASES", "{not json")
    out = invoke("serve", "--data-dir", str(tmp_path / "data"), "--port", "1")
    assert out.exit_code == 1 and "OPENFT_MODEL_ALIASES: not valid JSON" in out.stderr, out.output
