"""An eval run's samples are the answers chat completions give for the same messages, item by
item, for base models (the default one, whose greedy answers mean something, and the tiny one) and
for a fine-tuned (LoRA) one: batching, shared prompt prefixes and the
merged adapter an eval run is served with change the speed, not the greedy answers. The server
runs in float32 so that equality is exact rather than at the mercy of bfloat16 near-ties."""

from __future__ import annotations

import pytest

from tests.support.data import write_chat_jsonl
from tests.support.servers import ServerSpec
from tests.support.wait import wait_eval_run, wait_job

REVIEWS = ["the product was great.", "awful, it broke in a day", "Fine.", "superb value for the money!",
           "bad", "lovely colours but it is too small for me", "poor", "nice"]
SYSTEM = "Classify the review as positive or negative."


SERVER = ServerSpec(env={"OPENFT_SERVE_DTYPE": "float32"})


@pytest.fixture(scope="module")
def api(server):
    return server.client()


def fine_tune(api, tmp_path) -> str:
    f = api.files.create(file=write_chat_jsonl(tmp_path / "t.jsonl", 12).open("rb"), purpose="fine-tune")
    job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id,
                                      hyperparameters={"n_epochs": 3, "batch_size": 4,
                                                       "learning_rate_multiplier": 10})
    job = wait_job(api, job.id, timeout=300)
    assert job.status == "succeeded", job.error
    return job.fine_tuned_model


def run_outputs(api, eval_id: str, model: str) -> dict[str, str]:
    run = api.evals.runs.create(eval_id, data_source={
        "type": "completions", "model": model,
        "source": {"type": "file_content", "content": [{"item": {"text": r}} for r in REVIEWS]},
        "input_messages": {"type": "template", "template": [{"role": "system", "content": SYSTEM},
                                                            {"role": "user", "content": "{{item.text}}"}]},
        "sampling_params": {"max_completion_tokens": 6, "temperature": 0, "seed": 3}})
    run = wait_eval_run(api, eval_id, run.id, timeout=300)
    assert run.status == "completed", run.error
    items = api.evals.runs.output_items.list(run.id, eval_id=eval_id, limit=100).data
    return {it.datasource_item["text"]: it.sample.output[0].content for it in items}


@pytest.mark.slow
def test_eval_run_samples_equal_sequential_chat_answers(api, tmp_path):
    ft = fine_tune(api, tmp_path)
    ev = api.evals.create(name="same answers", data_source_config={
        "type": "custom", "item_schema": {"type": "object", "properties": {"text": {"type": "string"}},
                                          "required": ["text"]}, "include_sample_schema": True},
        testing_criteria=[{"type": "string_check", "name": "any", "input": "{{sample.output_text}}",
                           "reference": "positive", "operation": "ne"}])
    answers = {}
    for model in ("smollm2-135m-instruct", "openft-tiny", ft):   # the default model: answers that mean something
        got = run_outputs(api, ev.id, model)
        want = {r: api.chat.completions.create(model=model, max_tokens=6, temperature=0, seed=3, messages=[
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": r}]).choices[0].message.content
            for r in REVIEWS}
        assert got == want, (model, [(r, got[r], want[r]) for r in REVIEWS if got[r] != want[r]])
        answers[model] = got
    assert answers["openft-tiny"] != answers[ft]           # the adapter was really applied
    assert len(set(answers["smollm2-135m-instruct"].values())) > 1, answers   # not one answer for every item


def test_eval_engine_batches_more_unless_the_operator_set_the_batch():
    from openft.config import Settings
    from openft.jobs.eval_runs import EVAL_BATCH, eval_engine_settings

    assert eval_engine_settings(Settings()).serve_max_batch == EVAL_BATCH > Settings().serve_max_batch
    assert eval_engine_settings(Settings(serve_max_batch=4)).serve_max_batch == 4
