"""Two real openft servers: one plays OpenAI (the source: files, trained jobs, fine-tuned models on
`openft-tiny`), the other is the target that `openft migrate` fills (no worker: migrated jobs
wait in the queue, the test looks at what was created, not at training it again)."""

from __future__ import annotations

import pytest

from tests.support.data import write_chat_jsonl
from tests.support.servers import ADMIN_KEY, CLI_NO_WORKER, LiveServer
from tests.support.wait import wait_job


@pytest.fixture(scope="module")
def source(tmp_path_factory, model_cache):
    """The source server with two succeeded jobs (A: with a validation file, B: without) and a
    failed one (C) whose training file was deleted afterwards."""
    d = tmp_path_factory.mktemp("source")
    server = LiveServer(d / "data", model_cache).start()
    api = server.client()

    def upload(path):
        with open(path, "rb") as fh:
            return api.files.create(file=(path.name, fh), purpose="fine-tune").id

    try:
        train, valid = upload(write_chat_jsonl(d / "train.jsonl", 12)), upload(write_chat_jsonl(d / "valid.jsonl", 10, seed=1))
        train_b, small = upload(write_chat_jsonl(d / "more.jsonl", 14, seed=2)), upload(write_chat_jsonl(d / "small.jsonl", 3))
        a = api.fine_tuning.jobs.create(
            model="openft-tiny", training_file=train, validation_file=valid, suffix="alpha", seed=7,
            metadata={"team": "support", "ticket": "T-1"},
            method={"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 2.0}}})
        b = api.fine_tuning.jobs.create(
            model="openft-tiny", training_file=train_b, suffix="beta", seed=11,
            method={"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 1, "batch_size": 7, "learning_rate_multiplier": 0.5}}})
        c = api.fine_tuning.jobs.create(model="openft-tiny", training_file=small)  # too few examples: fails
        assert [wait_job(api, j.id).status for j in (a, b, c)] == ["succeeded", "succeeded", "failed"]
        api.files.delete(small)
        yield {"server": server, "api": api, "a": api.fine_tuning.jobs.retrieve(a.id),
               "b": api.fine_tuning.jobs.retrieve(b.id), "c": c.id, "dir": d}
    finally:
        server.stop()


@pytest.fixture
def target(tmp_path, model_cache, monkeypatch):
    """A fresh, empty target server; the CLI finds it (and its key) in the environment."""
    server = LiveServer(tmp_path / "target" / "data", model_cache, argv=CLI_NO_WORKER).start()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENFT_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENFT_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("OPENFT_DATA_DIR", str(tmp_path / "no-local-data"))
    monkeypatch.setenv("OPENFT_MODEL_CACHE_DIR", str(model_cache))
    try:
        yield server
    finally:
        server.stop()
