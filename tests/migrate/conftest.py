"""Two real openft servers: one plays OpenAI (the source: files, trained jobs, fine-tuned models on
`openft-tiny`), the other is the target that `openft migrate` fills (no worker: migrated jobs
wait in the queue, the test looks at what was created, not at training it again)."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from openft.cli import app
from tests.conftest import ADMIN_KEY, LiveServer, write_chat_jsonl

runner = CliRunner()


class TargetServer(LiveServer):
    argv = ("-m", "openft", "serve", "--no-worker")


def wait_done(client, job_id: str, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.fine_tuning.jobs.retrieve(job_id).status
        if status in ("succeeded", "failed", "cancelled"):
            return status
        time.sleep(0.3)
    raise AssertionError(f"{job_id} still {status} after {timeout} s")


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
        assert [wait_done(api, j.id) for j in (a, b, c)] == ["succeeded", "succeeded", "failed"]
        api.files.delete(small)
        yield {"server": server, "api": api, "a": api.fine_tuning.jobs.retrieve(a.id),
               "b": api.fine_tuning.jobs.retrieve(b.id), "c": c.id, "dir": d}
    finally:
        server.stop()


@pytest.fixture
def target(tmp_path, model_cache, monkeypatch):
    """A fresh, empty target server; the CLI finds it (and its key) in the environment."""
    server = TargetServer(tmp_path / "target" / "data", model_cache).start()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENFT_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENFT_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("OPENFT_DATA_DIR", str(tmp_path / "no-local-data"))
    monkeypatch.setenv("OPENFT_MODEL_CACHE_DIR", str(model_cache))
    try:
        yield server
    finally:
        server.stop()


def migrate(*args: str, source_url: str, key: str = ADMIN_KEY, pre: tuple[str, ...] = (), code: int | None = 0):
    """`openft [pre] migrate from-openai --source-base-url URL --source-api-key KEY ARGS` in-process."""
    result = runner.invoke(app, [*pre, "migrate", "from-openai", "--source-base-url", source_url,
                                 "--source-api-key", key, "--max-retries", "0", *args], prog_name="openft")
    if code is not None:
        assert result.exit_code == code, (args, result.output)
    return result


def invoke(*args: str):
    return runner.invoke(app, list(args), prog_name="openft")
