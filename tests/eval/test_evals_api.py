"""The Evals API against a live server on openft-tiny, driven by the official SDK: create an
eval, run it (generation through the engine, grading), read results and output items; bad input
answers 400 naming the param; a missing field errors one item and the run goes on; cancel."""

from __future__ import annotations

import openai
import pytest

from tests.support.servers import LiveServer
from tests.support.wait import wait_eval_run, wait_until

ITEM_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}, "label": {"type": "string"}},
               "required": ["text", "label"]}
CRITERIA = [
    {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.label}}",
     "operation": "eq"},
    {"type": "text_similarity", "name": "fuzzy", "input": "{{sample.output_text}}", "reference": "{{item.label}}",
     "evaluation_metric": "fuzzy_match", "pass_threshold": 0.0},
]


@pytest.fixture(scope="module")
def api(live_server):  # tests/conftest.py's live server (API + embedded worker), one per module
    return live_server.client()


def _eval(api, criteria=CRITERIA):
    return api.evals.create(name="sentiment", data_source_config={
        "type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True}, testing_criteria=criteria)


def _source(items, max_tokens=3, model="openft-tiny"):
    return {"type": "completions", "model": model,
            "source": {"type": "file_content", "content": [{"item": it} for it in items]},
            "input_messages": {"type": "template", "template": [
                {"role": "system", "content": "Classify the review."},
                {"role": "user", "content": "{{item.text}}"}]},
            "sampling_params": {"max_completion_tokens": max_tokens, "temperature": 0, "seed": 1}}


def test_sdk_create_run_retrieve_output_items(api):
    ev = _eval(api)
    assert ev.object == "eval" and ev.data_source_config.type == "custom"
    assert ev.data_source_config.schema_["required"] == ["item", "sample"]
    assert api.evals.retrieve(ev.id).name == "sentiment"
    items = [{"text": f"review {i}", "label": "positive"} for i in range(6)] + [{"text": "no label here"}]
    run = api.evals.runs.create(ev.id, name="r1", data_source=_source(items))
    assert run.object == "eval.run" and run.status in ("queued", "in_progress")
    run = wait_eval_run(api, ev.id, run.id)
    assert run.status == "completed", run.error
    errors = [o.sample.error for o in api.evals.runs.output_items.list(run.id, eval_id=ev.id, status="error")]
    assert run.result_counts.total == 7 and run.result_counts.errored == 1, errors
    assert run.result_counts.passed + run.result_counts.failed == 6
    crit = {c.testing_criteria: c for c in run.per_testing_criteria_results}
    assert crit["fuzzy"].passed == 6 and crit["exact"].passed + crit["exact"].failed == 6
    usage = run.per_model_usage[0]
    assert usage.run_model_name == "openft-tiny" and usage.invocation_count == 6 and usage.completion_tokens > 0
    assert run.report_url == f"{str(api.base_url).removesuffix('/v1/')}/#/evals/{ev.id}/runs/{run.id}"
    out = list(api.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=3))
    assert [o.datasource_item_id for o in out] == list(range(7))
    errored = [o for o in out if o.status == "error"]
    assert len(errored) == 1 and errored[0].datasource_item_id == 6 and "label" in errored[0].sample.error.message
    ok = out[0]
    assert ok.sample.model == "openft-tiny" and ok.sample.input[1].content == "review 0"
    assert {r.name for r in ok.results} == {"exact", "fuzzy"}
    text = ok.sample.output[0].content
    exact = next(r for r in ok.results if r.name == "exact")
    assert exact.passed == (text == "positive")
    again = api.evals.runs.output_items.retrieve(ok.id, eval_id=ev.id, run_id=run.id)
    assert again.id == ok.id
    assert [r.id for r in api.evals.runs.list(ev.id)] == [run.id]


def test_jsonl_source_grades_given_samples(api):
    ev = _eval(api)
    content = [{"item": {"text": "a", "label": "yes"}, "sample": {"output_text": "yes"}},
               {"item": {"text": "b", "label": "yes"}, "sample": {"output_text": "no"}}]
    run = api.evals.runs.create(ev.id, data_source={"type": "jsonl",
                                                    "source": {"type": "file_content", "content": content}})
    run = wait_eval_run(api, ev.id, run.id)
    assert (run.result_counts.passed, run.result_counts.failed) == (1, 1)
    assert run.per_model_usage == []


@pytest.mark.parametrize("criteria,param", [
    ([{"type": "regex", "name": "x"}], "testing_criteria[0].type"),
    ([{**CRITERIA[0], "reference": "{{item.missing}}"}], "testing_criteria[0].reference"),
    ([{"type": "label_model", "name": "j", "model": "ft:nope:x:y:z", "labels": ["a"], "passing_labels": ["a"],
       "input": [{"role": "user", "content": "{{item.text}}"}]}], "testing_criteria[0].model"),
    ([{"type": "python", "name": "p", "source": "def grade(s, i): return 1"}], "testing_criteria[0].type"),
    ([{**CRITERIA[1], "evaluation_metric": "cosine"}], "testing_criteria[0].evaluation_metric"),
])
def test_bad_criteria_are_400_naming_the_param(api, criteria, param):
    with pytest.raises(openai.BadRequestError) as e:
        _eval(api, criteria)
    assert e.value.body["param"] == param


def test_bad_run_sources_are_400(api):
    ev = _eval(api)
    with pytest.raises(openai.BadRequestError) as e:
        api.evals.runs.create(ev.id, data_source=_source([{"text": "a", "label": "b"}], model="no-such-model"))
    assert e.value.body["param"] == "data_source.model"
    bad = _source([{"text": "a", "label": "b"}])
    bad["input_messages"]["template"][1]["content"] = "{{item.body}}"
    with pytest.raises(openai.BadRequestError) as e:
        api.evals.runs.create(ev.id, data_source=bad)
    assert e.value.body["param"] == "data_source.input_messages.template[1].content"
    frac = _source([{"text": "a", "label": "b"}])
    frac["sampling_params"]["max_completion_tokens"] = 2.5
    with pytest.raises(openai.BadRequestError) as e:
        api.evals.runs.create(ev.id, data_source=frac)
    assert e.value.body["param"] == "data_source.sampling_params.max_completion_tokens"
    with pytest.raises(openai.NotFoundError):
        api.evals.runs.retrieve("evalrun_nope", eval_id=ev.id)


def test_cancel_run_stops_it(api):
    ev = _eval(api)
    items = [{"text": f"review {i}", "label": "positive"} for i in range(64)]
    run = api.evals.runs.create(ev.id, data_source=_source(items, max_tokens=1000))
    wait_eval_run(api, ev.id, run.id, statuses=("in_progress",))
    cancelled = api.evals.runs.cancel(run.id, eval_id=ev.id)
    assert cancelled.status == "canceled"
    # the worker drops the cancelled run's requests and moves on: a new run completes meanwhile
    quick = api.evals.runs.create(ev.id, data_source=_source(items[:1], max_tokens=2))
    assert wait_eval_run(api, ev.id, quick.id, timeout=60).status == "completed"
    final = api.evals.runs.retrieve(run.id, eval_id=ev.id)
    assert final.status == "canceled"
    done = final.result_counts.passed + final.result_counts.failed + final.result_counts.errored
    assert done < 64
    with pytest.raises(openai.BadRequestError):
        api.evals.runs.cancel(run.id, eval_id=ev.id)


def test_status_codes_as_openai_spec(api, live_server):
    import httpx

    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    body = {"name": "s", "data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA},
            "testing_criteria": [{"type": "string_check", "name": "l", "input": "{{item.label}}", "reference": "x",
                                  "operation": "eq"}]}
    r = httpx.post(f"{live_server.base_url}/evals", json=body, headers=headers)
    assert r.status_code == 201 and r.json()["object"] == "eval"
    eid = r.json()["id"]
    run = httpx.post(f"{live_server.base_url}/evals/{eid}/runs", headers=headers, json={"data_source": {
        "type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"text": "a", "label": "x"}}] * 50}}})
    assert run.status_code == 201 and run.json()["status"] == "queued"
    cancel = httpx.post(f"{live_server.base_url}/evals/{eid}/runs/{run.json()['id']}", headers=headers)  # spec's cancel
    if cancel.status_code == 200:
        assert cancel.json()["status"] == "canceled"
    else:  # the worker finished the 50 given samples first: then a cancel is refused
        assert cancel.status_code == 400 and "completed" in cancel.json()["error"]["message"]
    assert httpx.delete(f"{live_server.base_url}/evals/eval_nope", headers=headers).status_code == 404


def test_update_list_delete(api):
    ev = _eval(api)
    assert api.evals.update(ev.id, name="renamed", metadata={"k": "v"}).name == "renamed"
    assert ev.id in [e.id for e in api.evals.list(limit=100)]
    assert api.evals.delete(ev.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        api.evals.retrieve(ev.id)


@pytest.mark.slow
def test_run_survives_a_server_restart(tmp_path, model_cache):
    data = tmp_path / "data"
    waves = {"OPENFT_SERVE_MAX_BATCH": "4", "OPENFT_SERVE_MAX_QUEUE": "0"}  # 24 items in 6 waves of 4
    # The fault point stops the first server's worker right after the run's first output item is
    # written, as a server stop at that moment would: the run goes back to the queue mid-run, every
    # time, however fast the machine (openft.jobs.eval_runs, openft.faults).
    first = LiveServer(data, model_cache, env={**waves, "OPENFT_FAULT": "eval-item:raise"}).start()
    try:
        api = first.client()
        ev = _eval(api)
        items = [{"text": f"review {i}", "label": "positive"} for i in range(24)]
        run = api.evals.runs.create(ev.id, data_source=_source(items, max_tokens=48))
        wait_until(lambda: list(api.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=100))
                   and api.evals.runs.retrieve(run.id, eval_id=ev.id).status == "queued", 120,
                   what="the run to stop after its first item", interval=0.2)
    finally:
        first.stop()
    db = first.db()
    try:
        import sqlalchemy as sa

        from openft.store.db import eval_output_items, eval_runs

        with db.connect() as conn:
            status = conn.execute(sa.select(eval_runs.c.status).where(eval_runs.c.id == run.id)).scalar()
            kept = conn.execute(sa.select(eval_output_items.c.id).where(eval_output_items.c.run_id == run.id)).all()
    finally:
        db.dispose()
    assert status == "queued" and 0 < len(kept) < 24  # stopped mid-run, back in the queue
    second = LiveServer(data, model_cache, env=waves).start()
    try:
        api = second.client()
        final = wait_eval_run(api, ev.id, run.id)
        assert final.status == "completed" and final.result_counts.total == 24
        assert final.result_counts.passed + final.result_counts.failed == 24
        after = {o.id for o in api.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=100)}
        assert {r[0] for r in kept} <= after and len(after) == 24  # what was done before was kept, not redone
    finally:
        second.stop()


def test_file_id_source(api, tmp_path):
    import json

    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"item": {"text": "a", "label": "yes"}, "sample": {"output_text": "yes"}}) + "\n"
                    + json.dumps({"text": "b", "label": "no"}) + "\n")  # a bare item object: no sample
    f = api.files.create(file=path.open("rb"), purpose="evals")
    ev = api.evals.create(name="f", data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA},
                          testing_criteria=[{"type": "string_check", "name": "l", "input": "{{item.label}}",
                                             "reference": "yes", "operation": "eq"}])
    run = wait_eval_run(api, ev.id, api.evals.runs.create(ev.id, data_source={
        "type": "jsonl", "source": {"type": "file_id", "id": f.id}}).id)
    assert (run.result_counts.total, run.result_counts.passed, run.result_counts.failed) == (2, 1, 1)
    with pytest.raises(openai.BadRequestError) as e:
        api.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": "file-nope"}})
    assert e.value.body["param"] == "data_source.source.id"


def test_llm_judges_run_through_the_engine(api):
    judge_input = [{"role": "system", "content": "Is this review positive?"},
                   {"role": "user", "content": "{{item.text}} / answer: {{sample.output_text}}"}]
    ev = _eval(api, [
        {"type": "label_model", "name": "judge", "model": "openft-tiny", "input": judge_input,
         "labels": ["positive", "negative"], "passing_labels": ["positive"]},
        {"type": "score_model", "name": "score", "model": "openft-tiny", "input": judge_input, "range": [0, 10],
         "pass_threshold": 0}])
    content = [{"item": {"text": f"review {i}", "label": "positive"}, "sample": {"output_text": "positive"}}
               for i in range(3)]
    run = wait_eval_run(api, ev.id, api.evals.runs.create(ev.id, data_source={
        "type": "jsonl", "source": {"type": "file_content", "content": content}}).id)
    usage = {u.run_model_name: u for u in run.per_model_usage}
    assert usage["openft-tiny"].invocation_count == 6  # two judges per item
    # the tiny random judge answers no number: each sample is errored (not failed at the range's bottom)
    assert run.status == "completed" and run.result_counts.total == run.result_counts.errored == 3
    for item in api.evals.runs.output_items.list(run.id, eval_id=ev.id).data:
        assert item.status == "error" and item.sample.error.code == "unreadable_judge_answer"
        assert "The judge model openft-tiny answered" in item.sample.error.message
    ev = _eval(api, [{"type": "label_model", "name": "judge", "model": "openft-tiny", "input": judge_input,
                      "labels": ["positive", "negative"], "passing_labels": ["positive"]}])
    run = wait_eval_run(api, ev.id, api.evals.runs.create(ev.id, data_source={
        "type": "jsonl", "source": {"type": "file_content", "content": content}}).id)
    assert run.status == "completed" and run.result_counts.errored == 0 and run.result_counts.total == 3
    item = api.evals.runs.output_items.list(run.id, eval_id=ev.id).data[0]
    judged = next(r for r in item.results if r.name == "judge")
    assert judged.sample["output"][0]["role"] == "assistant"
