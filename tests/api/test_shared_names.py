"""Names and paths decided once, seen through a real server (no worker) and the official SDK:

- metadata limits: jobs, evals and eval runs refuse the same metadata with the same error
  (openft.vocab.check_metadata);
- the metrics endpoint's `charts` name every column it serves, with labels, so the dashboard keeps
  no copy of the metric names (openft.train.metrics);
- the data-folder layout and file id -> blob path (openft.config.DataLayout,
  openft.store.blobs.stored_file) find what the API stored, per project.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from openft import vocab
from openft.config import Settings
from openft.store.blobs import stored_file
from openft.store.events import add_event
from openft.train import metrics as M
from tests.support.data import chat_jsonl, upload
from tests.support.wait import wait_job

CRITERIA = [{"type": "string_check", "name": "l", "input": "{{item.label}}", "reference": "yes", "operation": "eq"}]
SOURCE_CONFIG = {"type": "custom", "item_schema": {"type": "object", "properties": {"label": {"type": "string"}}}}


def _error(call) -> dict:
    with pytest.raises(openai.BadRequestError) as e:
        call()
    return e.value.body


@pytest.mark.parametrize("metadata, param", [
    ({f"k{i}": "v" for i in range(vocab.MAX_METADATA_KEYS + 1)}, "metadata"),
    ({"k" * (vocab.MAX_METADATA_KEY_CHARS + 1): "v"}, "metadata." + "k" * vocab.MAX_METADATA_KEY_CHARS),
    ({"team": "x" * (vocab.MAX_METADATA_VALUE_CHARS + 1)}, "metadata.team"),
])
def test_metadata_limits_are_one_check_with_one_error(api, metadata, param):
    job = _error(lambda: api.fine_tuning.jobs.create(model="openft-tiny", training_file="file-x", metadata=metadata))
    ev = _error(lambda: api.evals.create(name="e", data_source_config=SOURCE_CONFIG, testing_criteria=CRITERIA,
                                         metadata=metadata))
    assert job == ev and job["param"] == param and job["code"] == "invalid_value"
    assert "metadata" in job["message"]
    fine = dict(list(metadata.items())[:1])
    fine = {k[:vocab.MAX_METADATA_KEY_CHARS]: v[:vocab.MAX_METADATA_VALUE_CHARS] for k, v in fine.items()}
    made = api.evals.create(name="e", data_source_config=SOURCE_CONFIG, testing_criteria=CRITERIA, metadata=fine)
    run = _error(lambda: api.evals.runs.create(made.id, data_source={
        "type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"label": "yes"}}]}},
        metadata=metadata))
    assert run == job


def test_metrics_answer_names_and_labels_its_columns(api, api_server):
    f = upload(api, chat_jsonl(12))
    job = wait_job(api, api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id).id, {"queued"})
    point = dict.fromkeys(M.METRIC_KEYS + M.DPO_METRIC_KEYS, 0.5)
    db = api_server.db()
    try:
        with db.begin() as conn:
            for step in (1, 2):
                add_event(conn, job.id, f"Step {step}/2", type="metrics", data={**point, "step": step, "total_steps": 2})
    finally:
        db.dispose()
    answer = httpx.get(f"{api_server.base_url}/fine_tuning/jobs/{job.id}/metrics",
                       headers={"Authorization": f"Bearer {api_server.api_key}"}).json()
    charts = answer["charts"]
    assert [c["name"] for c in charts] == ["loss", "accuracy", "reward_margin", "reward_accuracy"]
    series = [s for c in charts for s in c["series"]]
    for s in series:  # every charted column is served, aligned with `steps`
        assert answer[s["key"]] == [0.5, 0.5] and answer["steps"] == [1, 2]
    assert {s["key"] for s in series} <= set(M.METRIC_KEYS + M.DPO_METRIC_KEYS)
    assert len({s["label"] for s in series}) == len(series)
    loss = {s["key"]: (s["label"], s["per_epoch"]) for s in charts[0]["series"]}
    assert loss == {"train_loss": ("training loss", False), "valid_loss": ("validation loss", False),
                    "full_valid_loss": ("full validation loss (per epoch)", True)}
    assert [c["optional"] for c in charts] == [False, False, True, True]
    assert [c["share"] for c in charts] == [False, True, False, True]


def test_layout_and_stored_file_find_what_the_api_stored(api, other_api, api_server):
    data = chat_jsonl(12, seed=7)
    f = upload(api, data)
    settings = Settings(data_dir=api_server.data_dir)
    layout = settings.layout
    assert layout.blobs == api_server.data_dir / "blobs" and layout.job_dir("ftjob-x") == layout.jobs / "ftjob-x"
    assert settings.resolved_database_url().endswith(str(layout.database.resolve()))
    db = api_server.db()
    try:
        with db.connect() as conn:
            found = stored_file(conn, layout, f.id)
            assert found is not None and found.path.parent.parent == layout.blobs
            assert found.path.read_bytes() == data == api.files.content(f.id).read()
            assert stored_file(conn, layout, f.id, found.row.project_id) == found
            assert stored_file(conn, layout, f.id, "proj_elsewhere") is None
            assert stored_file(conn, layout, "file-nope") is None
    finally:
        db.dispose()
    with pytest.raises(openai.NotFoundError):
        other_api.files.retrieve(f.id)
