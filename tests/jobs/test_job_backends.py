"""Job backends: the choice from settings, and jobs run through the `JobBackend` / `JobRun` protocols.

The worker is handed a backend that forwards the protocol's methods and nothing else, so a worker
that reached for a pid, a signal or an OOM counter would fail here; the runs themselves are the
real local backend's runner processes on the real database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from openft.config import Settings
from openft.errors import InvalidRequest
from openft.jobs import queue
from openft.jobs.backends import BACKENDS, JobBackend, JobRun, RunExit, StartFailed, open_backend
from openft.jobs.backends.local import LocalBackend, settings_env
from openft.jobs.worker import Worker
from tests.support.data import chat_rows, write_jsonl
from tests.support.jobs import event_messages, insert_job, job_row, store_file
from tests.support.wait import wait_until


class ProtocolOnlyRun:
    """A JobRun that forwards the protocol's four methods of a real run, and has nothing else."""

    def __init__(self, run: JobRun, calls: list[str]):
        self._run, self._calls = run, calls

    def wait(self, timeout: float | None = None) -> bool:
        self._calls.append("wait")
        return self._run.wait(timeout)

    def stop(self, grace_seconds: float) -> None:
        self._calls.append("stop")
        self._run.stop(grace_seconds)

    def log_tail(self, n_chars: int = 2000) -> str:
        self._calls.append("log_tail")
        return self._run.log_tail(n_chars)

    def exit(self) -> RunExit:
        self._calls.append("exit")
        return self._run.exit()


class ProtocolOnlyBackend:
    """A JobBackend around the backend the settings name, handing out ProtocolOnlyRun handles."""

    def __init__(self, inner: JobBackend):
        self.inner, self.name, self.calls = inner, inner.name, []

    def start(self, job_id: str, output_dir: str) -> JobRun:
        self.calls.append("start")
        return ProtocolOnlyRun(self.inner.start(job_id, output_dir), self.calls)


@pytest.fixture(autouse=True)
def _tiny(tiny_model_dir):  # build the tiny model once, outside the runner's time
    return tiny_model_dir


def _job(settings, engine, tmp_path, **hyperparameters) -> str:
    fid = store_file(settings, engine, write_jsonl(tmp_path / "train.jsonl", chat_rows(12)))
    return insert_job(engine, fid, hyperparameters=hyperparameters or {"n_epochs": 1, "batch_size": 4})


def _protocol_worker(settings, engine, **kw) -> Worker:
    worker = Worker(settings, engine=engine, **kw)
    worker.backend = ProtocolOnlyBackend(worker.backend)
    return worker


def test_the_local_backend_is_the_default(settings, monkeypatch):
    monkeypatch.delenv("OPENFT_JOB_BACKEND", raising=False)
    assert Settings().job_backend == "local" and "local" in BACKENDS
    backend = open_backend(settings)
    assert isinstance(backend, LocalBackend) and isinstance(backend, JobBackend) and backend.name == "local"
    assert isinstance(Worker(settings).backend, LocalBackend)


def test_an_unknown_backend_is_refused_naming_the_setting_and_the_known_ones(settings, monkeypatch):
    monkeypatch.setenv("OPENFT_JOB_BACKEND", "slurm")
    chosen = Settings(data_dir=settings.data_dir)
    assert chosen.job_backend == "slurm"
    for make in (lambda: open_backend(chosen), lambda: Worker(chosen)):
        with pytest.raises(InvalidRequest) as e:
            make()
        assert e.value.param == "job_backend"
        assert "OPENFT_JOB_BACKEND" in e.value.message and "'slurm'" in e.value.message
        assert "local" in e.value.message


def test_the_worker_command_says_so_in_one_line(settings, tmp_path):
    env = {**os.environ, **settings_env(settings), "OPENFT_JOB_BACKEND": "slurm"}
    done = subprocess.run([sys.executable, "-m", "openft", "worker", "--once"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: OPENFT_JOB_BACKEND (job_backend) must be one of: local; got 'slurm'."]


def test_a_job_succeeds_through_the_protocol(engine, settings, tmp_path):
    jid = _job(settings, engine, tmp_path)
    worker = _protocol_worker(settings, engine)
    assert worker.run_once() == jid
    row = job_row(engine, jid)
    assert row["status"] == "succeeded", row["error"]
    assert row["fine_tuned_model"] and row["trained_tokens"] > 0
    calls = worker.backend.calls
    assert calls[0] == "start" and "wait" in calls and "exit" not in calls and "stop" not in calls
    assert (Path(row["output_dir"]) / "runner.log").stat().st_size > 0


def test_a_run_stopped_from_outside_is_retried_then_fails_with_what_its_backend_says(
        engine, settings, tmp_path, monkeypatch):
    """The run ends without finishing its job (stopped by a signal nobody in openft sent): the
    backend's exit() says it is worth a retry; the worker requeues, then fails at the bound.
    Each attempt holds mid-step (openft.faults) until it is stopped, so it can never finish
    first however fast the machine trains."""
    once = tmp_path / "once"
    once.mkdir()
    monkeypatch.setenv("OPENFT_FAULT", "step@3:hold,step@5:hold")
    monkeypatch.setenv("OPENFT_FAULT_ONCE_DIR", str(once))
    jid = _job(settings, engine, tmp_path, n_epochs=1, batch_size=1)
    worker = _protocol_worker(settings.model_copy(update={"runner_max_retries": 1}), engine)
    for attempt, held_at in ((1, "step@3"), (2, "step@5")):
        out = {}
        t = threading.Thread(target=lambda out=out: out.setdefault("job", worker.run_once()), daemon=True)
        t.start()
        run = wait_until(lambda: worker.process, 60, interval=0.01, what="the run to start")
        wait_until(lambda held_at=held_at: (once / held_at).exists(), 120, interval=0.05,
                   what=f"the runner to hold at {held_at}")
        run.stop(30.0)  # SIGTERM inside the runner's try: it exits 130, as a signal it did not expect
        t.join(60)
        assert not t.is_alive() and out["job"] == jid
        row = job_row(engine, jid)
        if attempt == 1:
            assert row["status"] == "queued" and row["runner_retries"] == 1
            assert "SIGTERM" in event_messages(engine, jid)[-1]
            assert "retrying (attempt 1 of 1)" in event_messages(engine, jid)[-1]
    assert row["status"] == "failed" and row["error"]["code"] == "training_process_died", row["error"]
    assert "SIGTERM" in row["error"]["message"] and "retried 1 time " in row["error"]["message"]
    assert worker.backend.calls.count("exit") == 2 and worker.backend.calls.count("start") == 2


def test_a_backend_that_cannot_start_fails_the_job(engine, settings, tmp_path):
    jid = _job(settings, engine, tmp_path)
    worker = Worker(settings, engine=engine)
    worker.backend = LocalBackend(settings, python=str(tmp_path / "no-such-python"))
    with pytest.raises(StartFailed):
        worker.backend.start("ftjob-x", str(tmp_path / "x"))
    assert worker.run_once() == jid
    row = job_row(engine, jid)
    assert row["status"] == "failed" and row["error"]["code"] == "runner_start_failed"
    assert row["error"]["message"].startswith("Could not start the training process: ")
    assert "no-such-python" in row["error"]["message"]


def test_a_run_that_exits_without_its_job_is_described_with_its_last_output(engine, settings, tmp_path):
    """Driven by hand through the protocol: a run for a job that is not running exits 0 at once;
    its exit is not worth a retry, and says what the runner printed last."""
    run = open_backend(settings).start("ftjob-nosuchjob", str(tmp_path / "out"))
    assert isinstance(run, JobRun)
    assert run.wait(120)
    assert "ftjob-nosuchjob is not running" in run.log_tail()
    ended = run.exit()
    assert not ended.retryable and ended.error_code == "training_process_died"
    assert ended.message.startswith("The training process exited with code 0 without finishing the job.")
    assert "Last output: job ftjob-nosuchjob is not running" in ended.message
    assert "Last output" not in ended.reason
    assert "nothing to do" in (tmp_path / "out" / "runner.log").read_text()
    with engine.connect() as conn:  # nothing was claimed or written
        assert queue.latest_checkpoint(conn, "ftjob-nosuchjob") is None
