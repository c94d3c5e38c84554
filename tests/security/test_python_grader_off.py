"""The python grader is checked when a run starts, not only when the eval is saved (issue 21,
section 4, item 6): an eval saved with a python grader while OPENFT_EVAL_PYTHON_GRADER was on, and
a run queued then, must not run user code after the operator turned the setting off. The queued
run fails with a clear error (no code ran: the grader would have written a marker file), and a
new run is a 400 naming testing_criteria."""

from __future__ import annotations

import openai
import pytest

from tests.support.servers import API, ServerSpec, running
from tests.support.wait import wait_eval_run


def test_a_python_grader_saved_while_allowed_does_not_run_once_disallowed(tmp_path, model_cache):
    marker = tmp_path / "user-code-ran"
    source = f"def grade(sample, item):\n    open({str(marker)!r}, 'w').write('ran')\n    return 1.0\n"
    criteria = [{"type": "multi", "name": "m", "calculate_output": "p",
                 "graders": {"p": {"type": "python", "name": "p", "source": source}}}]
    content = [{"item": {"text": "a"}, "sample": {"output_text": "yes"}}]
    source_spec = {"type": "jsonl", "source": {"type": "file_content", "content": content}}
    data = tmp_path / "data"
    with running(ServerSpec(API, worker=False, env={"OPENFT_EVAL_PYTHON_GRADER": "true"}).server(data, model_cache)) as on:
        api = on.client()
        ev = api.evals.create(name="py", data_source_config={
            "type": "custom", "item_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
            "include_sample_schema": True}, testing_criteria=criteria)
        queued = api.evals.runs.create(ev.id, data_source=source_spec)
        assert queued.status == "queued"
    with running(ServerSpec(env={"OPENFT_EVAL_PYTHON_GRADER": "false"}).server(data, model_cache)) as off:
        api = off.client()
        run = wait_eval_run(api, ev.id, queued.id)
        assert run.status == "failed", run
        assert run.error.code == "python_grader_disabled"
        assert "OPENFT_EVAL_PYTHON_GRADER" in run.error.message and "p" in run.error.message
        with pytest.raises(openai.BadRequestError) as e:
            api.evals.runs.create(ev.id, data_source=source_spec)
        assert (e.value.body["param"], e.value.body["code"]) == ("testing_criteria", "python_grader_disabled")
    assert not marker.exists()
