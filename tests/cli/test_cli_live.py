"""The CLI against a real server (`python -m openft serve`, tiny model), in-process via CliRunner.

Fast tests cover files, models, keys, errors and a job that fails validation; the `slow` ones
train `openft-tiny` through `openft jobs create --follow` / `openft api fine_tunes.create` and
use the result (events, checkpoints, results CSV, chat, export, delete).
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from typer.testing import CliRunner

from openft.cli import app
from openft.train.metrics import LEGACY_CSV_FIELDS
from tests.support.data import write_chat_jsonl
from tests.support.wait import JOB_STATES, wait_job, wait_until

runner = CliRunner()
FT_MODEL = re.compile(r"Fine-tuned model: (ft:\S+)")


@pytest.fixture(scope="module", autouse=True)
def _env(live_server):
    """The CLI finds the server and its key from the environment (autouse: set before module fixtures run)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OPENAI_API_KEY", raising=False)
        mp.setenv("OPENFT_API_KEY", live_server.api_key)  # the admin key the server was started with
        mp.setenv("OPENFT_BASE_URL", live_server.base_url)
        mp.setenv("OPENFT_DATA_DIR", str(live_server.data_dir))
        yield


def cli(*args: str, key: str | None = None, input: str | None = None, ok: bool = True):
    pre = ["--api-key", key] if key else []
    result = runner.invoke(app, [*pre, *args], prog_name="openft", input=input)
    if ok:
        assert result.exit_code == 0, (args, result.output)
    return result


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in result.output, err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-data")
    return {"train": write_chat_jsonl(d / "train.jsonl", 12), "valid": write_chat_jsonl(d / "valid.jsonl", 10, seed=1),
            "small": write_chat_jsonl(d / "small.jsonl", 3), "dir": d}


def test_files_round_trip(data):
    file_id = cli("files", "upload", str(data["train"]), "-q").stdout.strip()
    assert file_id.startswith("file-")
    assert file_id in cli("files", "list").stdout
    listed = json.loads(cli("files", "list", "--purpose", "fine-tune", "--json").stdout)
    assert file_id in [f["id"] for f in listed]
    got = json.loads(cli("files", "get", file_id).stdout)
    assert got["filename"] == "train.jsonl" and got["bytes"] == data["train"].stat().st_size
    assert cli("files", "content", file_id).stdout_bytes == data["train"].read_bytes()
    out = data["dir"] / "copy.jsonl"
    cli("files", "content", file_id, "-o", str(out))
    assert out.read_bytes() == data["train"].read_bytes()
    assert json.loads(cli("files", "delete", file_id).stdout)["deleted"] is True
    one_line_error(cli("files", "get", file_id, ok=False), "error: 404")


def test_api_key_read_from_the_data_dir(live_server, tmp_path, monkeypatch):
    # no --api-key, no env: the key comes from <data_dir>/admin_key (what a server writes when it
    # generates its key; this one was started with OPENFT_API_KEY, so the file is made here)
    monkeypatch.delenv("OPENFT_API_KEY")
    one_line_error(cli("--data-dir", str(tmp_path), "files", "list", ok=False), "no API key")
    (tmp_path / "admin_key").write_text(live_server.api_key + "\n")
    cli("--data-dir", str(tmp_path), "files", "list")


def test_wrong_key_is_one_line_401():
    one_line_error(cli("files", "list", key="sk-wrong", ok=False), "error: 401")


def test_bad_parameter_names_the_param(data):
    file_id = cli("files", "upload", str(data["train"]), "-q").stdout.strip()
    err = one_line_error(cli("jobs", "create", "-t", file_id, "-m", "no-such-model", ok=False), "error: ")
    assert "model" in err


def test_models_list_and_get():
    assert "openft-tiny" in cli("models", "list").stdout
    ids = [m["id"] for m in json.loads(cli("models", "list", "--json").stdout)]
    assert "openft-tiny" in ids
    assert json.loads(cli("models", "get", "openft-tiny").stdout)["id"] == "openft-tiny"
    one_line_error(cli("models", "get", "ft:nope:x:y:z", ok=False), "error: 404")


def test_keys_create_isolates_projects(data):
    out = cli("keys", "create", "--project", "cli-other").stdout
    key = re.search(r"API key: (\S+)", out).group(1)
    mine = cli("files", "upload", str(data["valid"]), "-q").stdout.strip()
    assert json.loads(cli("files", "list", "--json", key=key).stdout) == []
    one_line_error(cli("files", "get", mine, key=key, ok=False), "error: 404")
    theirs = cli("files", "upload", str(data["valid"]), "-q", key=key).stdout.strip()
    assert [f["id"] for f in json.loads(cli("files", "list", "--json", key=key).stdout)] == [theirs]


def test_job_that_fails_validation_exits_1(data):
    result = cli("jobs", "create", "-t", str(data["small"]), "-m", "openft-tiny", "--follow", "--interval", "0.3",
                 ok=False)
    assert result.exit_code == 1, result.output
    assert "Job failed:" in result.stdout and "invalid_n_examples" in result.stdout
    assert "Created fine-tuning job: ftjob-" in result.stdout


def test_invalid_state_change_is_one_line(data):
    job = json.loads(cli("jobs", "create", "-t", str(data["small"]), "-m", "openft-tiny").stdout)
    cli("jobs", "follow", job["id"], "--interval", "0.3", ok=False)  # ends failed
    one_line_error(cli("jobs", "cancel", job["id"], ok=False), "error: 400")
    one_line_error(cli("jobs", "get", "ftjob-nope", ok=False), "error: 404")


# ------------------------------------------------------------------ slow: real training

@pytest.fixture(scope="module")
def trained(data):
    result = cli("jobs", "create", "-t", str(data["train"]), "-v", str(data["valid"]), "-m", "openft-tiny",
                 "--suffix", "cli", "--n-epochs", "2", "--batch-size", "4", "--metadata", "via=cli",
                 "--follow", "--interval", "0.3")
    out = result.output  # stdout and stderr
    job_id = re.search(r"Created fine-tuning job: (ftjob-\S+)", out).group(1)
    return {"job": job_id, "model": FT_MODEL.search(out).group(1), "output": out}


@pytest.mark.slow
def test_follow_prints_events_and_the_model(trained):
    out = trained["output"]
    assert out.count("Uploaded file from") == 2
    for text in ("Validating training file", "Fine-tuning job started", "Step 6/6", "Checkpoint created",
                 "New fine-tuned model created", "The job has successfully completed"):
        assert text in out, text
    assert trained["model"].startswith("ft:openft-tiny:") and ":cli:" in trained["model"]
    # following a finished job prints its history and ends at once
    again = cli("jobs", "follow", trained["job"]).stdout
    assert f"Fine-tuned model: {trained['model']}" in again


@pytest.mark.slow
def test_job_commands_on_a_finished_job(trained):
    job = json.loads(cli("jobs", "get", trained["job"]).stdout)
    assert job["status"] == "succeeded" and job["metadata"] == {"via": "cli"}
    assert job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    listed = json.loads(cli("jobs", "list", "--metadata", "via=cli", "--json").stdout)
    assert [j["id"] for j in listed] == [trained["job"]]
    assert trained["job"] in cli("jobs", "list").stdout
    events = cli("jobs", "events", trained["job"]).stdout.splitlines()
    assert "Created fine-tuning job" in events[0] and "successfully completed" in events[-1]
    assert len(json.loads(cli("jobs", "events", trained["job"], "-n", "2", "--json").stdout)) == 2
    ckpts = json.loads(cli("jobs", "checkpoints", trained["job"], "--json").stdout)
    assert {c["step_number"] for c in ckpts} == {3, 6}
    assert f"{trained['model']}:ckpt-step-3" in cli("jobs", "checkpoints", trained["job"]).stdout
    # the legacy results file (issue 21, 3.2): its columns, computed: cumulative tokens and examples
    rows = list(csv.DictReader(io.StringIO(cli("api", "fine_tunes.results", "-i", trained["job"]).stdout)))
    assert list(rows[0]) == list(LEGACY_CSV_FIELDS) and [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [int(r["elapsed_examples"]) for r in rows] == [4, 8, 12, 16, 20, 24]  # 12 examples, batch 4
    tokens = [int(r["elapsed_tokens"]) for r in rows]
    assert all(a < b for a, b in zip(tokens, tokens[1:])) and tokens[-1] == job["trained_tokens"]
    for r in rows:
        for col in ("training_loss", "training_sequence_accuracy", "training_token_accuracy"):
            assert r[col] != "", (col, r)
        assert 0 <= float(r["training_sequence_accuracy"]) <= 1 and 0 <= float(r["training_token_accuracy"]) <= 1
    measured = [r for r in rows if r["validation_loss"]]
    assert measured and all(r["validation_sequence_accuracy"] and r["validation_token_accuracy"] for r in measured)


@pytest.mark.slow
def test_chat_with_the_fine_tuned_model_and_a_checkpoint(trained):
    one = cli("chat", "-m", trained["model"], "-p", "Review: great.", "--max-tokens", "5", "--seed", "1").stdout
    same = cli("chat", "-m", trained["model"], "-p", "Review: great.", "--max-tokens", "5", "--seed", "1",
               "--no-stream").stdout
    assert one.strip() and one == same  # streamed and whole answers agree for one seed
    cli("chat", "-m", f"{trained['model']}:ckpt-step-3", "-p", "hi", "--max-tokens", "3")
    repl = cli("chat", "-m", trained["model"], "--max-tokens", "3", "-s", "Be brief.",
               input="hello\n/reset\n/nope\nagain\n/exit\nnot sent\n")
    assert "(conversation forgotten)" in repl.stderr and "unknown command /nope" in repl.stderr
    assert len([line for line in repl.stdout.splitlines() if line.strip()]) >= 1


@pytest.mark.slow
def test_export_then_delete_the_model(trained, tmp_path):
    out = tmp_path / "adapter"
    result = cli("models", "export", trained["model"], "--format", "peft", "-o", str(out))
    assert "Exported" in result.stdout
    assert (out / "adapter_config.json").exists()
    assert json.loads(cli("models", "delete", trained["model"]).stdout)["deleted"] is True
    one_line_error(cli("models", "get", trained["model"], ok=False), "error: 404")


@pytest.mark.slow
def test_legacy_create_follow_results(data):
    result = cli("api", "fine_tunes.create", "-t", str(data["train"]), "-v", str(data["valid"]), "-m", "openft-tiny",
                 "--suffix", "legacy", "--n_epochs", "1", "--batch_size", "6", "--learning_rate_multiplier", "2")
    out = result.stdout
    assert "Uploaded file from" in out and "Streaming events until fine-tuning is complete" in out
    job_id = re.search(r"Created fine-tune: (ftjob-\S+)", out).group(1)
    assert ":legacy:" in FT_MODEL.search(out).group(1)
    assert "openft chat -m ft:" in out
    assert "successfully completed" in cli("api", "fine_tunes.follow", "-i", job_id).stdout
    hp = json.loads(cli("jobs", "get", job_id).stdout)["method"]["supervised"]["hyperparameters"]
    assert hp["batch_size"] == 6 and hp["learning_rate_multiplier"] == 2
    no_follow = cli("api", "fine_tunes.create", "-t", str(data["train"]), "-m", "openft-tiny", "--no_follow").stdout
    new_id = re.search(r"Created fine-tune: (ftjob-\S+)", no_follow).group(1)
    assert "Streaming" not in no_follow
    cli("jobs", "cancel", new_id)
    follow = cli("api", "fine_tunes.follow", "-i", new_id, ok=False)
    assert follow.exit_code == 1 and "Job cancelled." in follow.stdout


@pytest.mark.slow
def test_pause_resume_cancel(data, client):
    job = json.loads(cli("jobs", "create", "-t", str(data["train"]), "-m", "openft-tiny", "--n-epochs", "25",
                         "--batch-size", "1").stdout)
    wait_job(client, job["id"], JOB_STATES - {"validating_files"}, timeout=120)
    cli("jobs", "pause", job["id"])
    wait_job(client, job["id"], {"paused"}, timeout=120)
    paused = cli("jobs", "follow", job["id"])  # stops at a pause, exit 0
    assert "Job paused" in paused.stdout
    assert json.loads(cli("jobs", "resume", job["id"]).stdout)["status"] == "queued"
    assert json.loads(cli("jobs", "cancel", job["id"]).stdout)["status"] == "cancelled"
    follow = cli("jobs", "follow", job["id"], ok=False)
    assert follow.exit_code == 1 and "Job cancelled." in follow.stdout


@pytest.mark.slow
def test_serve_no_worker_then_openft_worker(tmp_path, model_cache, data):
    """`openft serve --no-worker` leaves jobs queued; `openft worker --once` runs one from the same data dir."""
    import os
    import subprocess
    import sys

    import httpx
    import sqlalchemy as sa
    from openai import OpenAI

    from tests.support.servers import ADMIN_KEY, free_port

    port, data_dir = free_port(), tmp_path / "data"
    env = {**os.environ, "OPENFT_API_KEY": ADMIN_KEY, "OPENFT_MODEL_CACHE_DIR": str(model_cache),
           "OPENFT_WORKER_POLL_SECONDS": "0.2", "HF_HUB_OFFLINE": "1"}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "openft", "serve", "--no-worker", "--port", str(port),
                                 "--data-dir", str(data_dir)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        def healthy():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 60, what="the server to answer /health", interval=0.2)
        api = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=ADMIN_KEY, max_retries=0)
        base = ["--base-url", f"http://127.0.0.1:{port}/v1", "--api-key", ADMIN_KEY]
        job_id = cli(*base, "jobs", "create", "-t", str(data["train"]), "-m", "openft-tiny", "--n-epochs", "1",
                     "-q").stdout.strip()
        wait_job(api, job_id, JOB_STATES - {"validating_files"}, timeout=120)
        assert api.fine_tuning.jobs.retrieve(job_id).status == "queued"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPENFT_MODEL_CACHE_DIR", str(model_cache))
            out = cli("worker", "--once", "--data-dir", str(data_dir)).stdout
        assert f"ran {job_id}" in out
        assert api.fine_tuning.jobs.retrieve(job_id).status == "succeeded"
        # who ran it: the claim is recorded on the job row. The standalone worker (this process; the
        # CLI runs in-process) made the one and only claim, so the server never claimed it.
        from openft.config import Settings
        from openft.store.db import jobs, make_engine

        db = make_engine(Settings(data_dir=data_dir).resolved_database_url())
        try:
            with db.connect() as conn:
                row = conn.execute(sa.select(jobs.c.worker_id, jobs.c.attempts).where(jobs.c.id == job_id)).one()
        finally:
            db.dispose()
        assert row.attempts == 1 and row.worker_id.rsplit(":", 2)[1] == str(os.getpid()), row
        # an embedded worker logs "worker HOST:PID:ID started" when it starts, long before this point
        assert not re.search(r"openft\.worker: worker \S+ started", (tmp_path / "server.log").read_text())
    finally:
        proc.terminate()
        proc.wait(30)
