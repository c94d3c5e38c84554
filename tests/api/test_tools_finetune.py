"""A tiny model fine-tuned on a tool-calling set returns parsed calls, in its template's tool format
and in openft's default one (a template without a format): a real fine-tuning job
(through the SDK, embedded worker) on generated lines with `tools` and assistant `tool_calls`,
then chat with tools and tool_choice auto. The base model, given the same request, writes no
call: the call comes from the fine-tune (the format's grammar only keeps an opened call valid)."""

from __future__ import annotations

import io
import json

import pytest

from tests.support.models import make_tool_model, register
from tests.support.wait import wait_job

CITIES = ["Paris", "Rome", "Oslo", "Lima"]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"enum": CITIES}},
                                          "required": ["city"], "additionalProperties": False}}}


def tool_lines(n: int = 12) -> bytes:
    out = []
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        ask = ["What is the weather in {}?", "Weather for {} please.", "Is it raining in {}?"][i % 3].format(city)
        out.append(json.dumps({"tools": [WEATHER], "parallel_tool_calls": False, "messages": [
            {"role": "user", "content": ask},
            {"role": "assistant", "tool_calls": [{"id": f"call_{i}", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": city})}}]}]}))
    return ("\n".join(out) + "\n").encode()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-tools", "openft-tiny"])
def test_fine_tuned_tiny_model_returns_parsed_tool_calls(live_server, client, tiny_model_dir, tmp_path, model):
    """tiny-tools: the template's own Hermes format; openft-tiny: no template format, openft's default."""
    if model == "tiny-tools":
        register(live_server.data_dir, "tiny-tools", make_tool_model(tiny_model_dir, tmp_path / "tiny-tools"))
    f = client.files.create(file=("tools.jsonl", io.BytesIO(tool_lines())), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=model, training_file=f.id, suffix="tools",
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 25, "batch_size": 1, "learning_rate_multiplier": 10, "method": "full"}}})
    job = wait_job(client, job.id, {"succeeded", "failed", "cancelled"}, timeout=900)
    assert job.status == "succeeded", (job.error, live_server.log.read_text()[-3000:])

    ask = [{"role": "user", "content": "What is the weather in Oslo?"}]
    kw = dict(messages=ask, tools=[WEATHER], parallel_tool_calls=False, temperature=0, max_tokens=60)
    r = client.chat.completions.create(model=job.fine_tuned_model, **kw)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in CITIES

    base = client.chat.completions.create(model=model, **kw).choices[0]
    assert base.message.tool_calls is None and base.finish_reason == "length"
