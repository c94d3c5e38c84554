"""Kill -9 at named points: the training process (mid-step, while a checkpoint is written, while
the final model is written) and the server (mid-upload, with one job running and one queued).

Each point is hit deterministically by openft.faults (`OPENFT_FAULT`, inert unless set):
the runner kills itself, or holds still at a step until the test kills the server. Checked:
every acknowledged file and job survives, jobs continue from their newest checkpoint, nothing
is called out-of-memory, and no half-written folder is left behind. The real server
(`python -m openft serve`), the tiny model and the `openai` SDK throughout.
"""

from __future__ import annotations

import io
import os
import signal
import socket
from pathlib import Path

import openai
import pytest

from tests.support.data import write_chat_jsonl
from tests.support.servers import LiveServer
from tests.support.wait import wait_job, wait_until

OOM_CLAIM = "out-of-memory killer"  # what describe_exit says only when the kernel recorded an OOM kill


def _messages(client, job_id: str) -> list[str]:
    """The job's events, oldest first."""
    return [e.message for e in reversed(client.fine_tuning.jobs.list_events(job_id, limit=1000).data)]


def _partial_folders(data_dir: Path) -> list[Path]:
    jobs_dir = data_dir / "jobs"
    return sorted([*jobs_dir.glob("*/checkpoints/.step-*.tmp"), *jobs_dir.glob("*/.model.tmp")])


def _fault_env(once_dir: Path, faults: str, **extra) -> dict:
    once_dir.mkdir(parents=True, exist_ok=True)
    return {"OPENFT_FAULT": faults, "OPENFT_FAULT_ONCE_DIR": str(once_dir), **extra}


@pytest.mark.slow  # about a minute on two CPU cores
def test_a_runner_killed_mid_step_mid_checkpoint_and_mid_final_write_resumes_each_time(tmp_path, model_cache):
    """Three SIGKILLs of one job's training process, none recorded by the kernel as OOM: each is
    retried from the newest checkpoint with an event that says so, and the job succeeds."""
    once = tmp_path / "faults"
    server = LiveServer(tmp_path / "data", model_cache, env=_fault_env(
        once, "step@2:kill,checkpoint@4:kill,final:kill", OPENFT_RUNNER_MAX_RETRIES="3")).start()
    try:
        client = server.client()
        data = write_chat_jsonl(tmp_path / "train.jsonl", 12).read_bytes()
        train = client.files.create(file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id, method={
            "type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 1, "batch_size": 2, "checkpoint_every_steps": 2,
                "keep_checkpoints": 2}}})  # 6 steps; checkpoints 2, 4, 6, of which 2 is pruned
        job = wait_job(client, job.id)
        msgs = _messages(client, job.id)
        assert job.status == "succeeded", (job.error, msgs)
        assert sorted(p.name for p in once.iterdir()) == ["checkpoint@4", "final", "step@2"]  # each point was hit
        retries = [m for m in msgs if "retrying (attempt" in m]
        assert len(retries) == 3, msgs
        assert "killed by signal 9 (SIGKILL)" in retries[0] and "attempt 1 of 3), resuming from the beginning" \
            in retries[0]
        assert "attempt 2 of 3), resuming from checkpoint step 2" in retries[1]  # killed while writing step 4
        assert "attempt 3 of 3), resuming from checkpoint step 6" in retries[2]  # killed writing the final model
        assert job.error is None and not any(OOM_CLAIM in m for m in msgs)
        assert "Resumed from checkpoint at step 6." in msgs
        assert job.fine_tuned_model in {m.id for m in client.models.list().data}
        kept = client.fine_tuning.jobs.checkpoints.list(job.id).data
        assert [c.step_number for c in kept] == [6, 4]
        # step 2 was announced in the events, then pruned: its 404 says so and names the ones left
        pruned = next(m.split("Snapshot ID: ")[1] for m in msgs if m.startswith("Checkpoint created at step 2 "))
        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model=pruned, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
        assert "was pruned" in e.value.body["message"] and e.value.body["param"] == "model"
        assert all(c.fine_tuned_model_checkpoint in e.value.body["message"] for c in kept)
        out = server.data_dir / "jobs" / job.id
        assert (out / "model" / "adapter_config.json").exists() and not _partial_folders(server.data_dir)
        assert f"removed the partial folder {out / 'checkpoints' / '.step-4.tmp'}" in (out / "runner.log").read_text()
    finally:
        server.stop()


def _start_upload(port: int, api_key: str, size: int) -> socket.socket:
    """A multipart upload of `size` bytes whose body is only half sent (the client hangs)."""
    boundary = "faultboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall((f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                  f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n").encode() + head)
    line = (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    sock.sendall(line * (size // 2 // len(line)))
    return sock


@pytest.mark.slow  # about a minute on two CPU cores
def test_server_killed_mid_upload_with_a_job_running_and_one_queued(tmp_path, model_cache):
    """kill -9 of the whole server while a file is half uploaded, one job is training (held at
    step 5, after its checkpoint at step 4) and another waits in the queue. After a restart on the
    same data folder: the acknowledged files are intact, the half upload is not a file, both jobs
    are there; the running one continues from checkpoint step 4 and both succeed."""
    once = tmp_path / "faults"
    env = _fault_env(once, "step@5:hold")
    server = LiveServer(tmp_path / "data", model_cache, env=env).start()
    contents = {}
    try:
        client = server.client()
        for name, n in (("train.jsonl", 12), ("valid.jsonl", 10)):
            data = write_chat_jsonl(tmp_path / name, n, seed=n).read_bytes()
            contents[client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune").id] = data
        train_id = next(iter(contents))
        hp = {"n_epochs": 1, "batch_size": 2, "checkpoint_every_steps": 2}
        running = client.fine_tuning.jobs.create(model="openft-tiny", training_file=train_id, suffix="run",
                                                 method={"type": "supervised", "supervised": {"hyperparameters": hp}})
        wait_until(lambda: (once / "step@5").exists(), 180, what="the runner to hold at step 5", interval=0.2)
        queued = client.fine_tuning.jobs.create(model="openft-tiny", training_file=train_id, suffix="queued",
                                                method={"type": "supervised", "supervised": {"hyperparameters": hp}})
        wait_until(lambda: client.fine_tuning.jobs.retrieve(queued.id).status == "queued", 60,
                   what="the second job to queue", interval=0.2)
        assert "Checkpoint created at step 4" in " ".join(_messages(client, running.id))
        blobs = server.data_dir / "blobs"
        upload = _start_upload(server.port, server.api_key, 4_000_000)
        wait_until(lambda: any(p.stat().st_size > 0 for p in blobs.glob(".upload-*")), 60,
                   what="the upload to reach the disk", interval=0.2)
        os.kill(server.proc.pid, signal.SIGKILL)  # the server, its embedded worker and (with it) the runner
        server.proc.wait(30)
        upload.close()
    finally:
        server.stop()

    again = LiveServer(server.data_dir, model_cache, env=env).start()
    try:
        client = again.client()
        files = {f.id: f for f in client.files.list().data}
        assert set(files) == set(contents)  # the acknowledged files, and not the half upload
        for fid, data in contents.items():
            assert client.files.content(fid).read() == data and files[fid].bytes == len(data)
        assert {j.id for j in client.fine_tuning.jobs.list().data} == {running.id, queued.id}
        for jid in (running.id, queued.id):
            job = wait_job(client, jid)
            assert job.status == "succeeded", (job.error, _messages(client, jid))
        msgs = _messages(client, running.id)
        lost = [m for m in msgs if "stopped responding" in m]
        assert len(lost) == 1 and "will continue from checkpoint step 4" in lost[0], msgs
        assert "Resumed from checkpoint at step 4." in msgs
        assert not any(OOM_CLAIM in m for m in msgs)
        assert not _partial_folders(again.data_dir)
    finally:
        again.stop()


def test_fault_points_are_inert_by_default(monkeypatch):
    from openft import faults

    monkeypatch.delenv(faults.ENV, raising=False)
    faults.fault_point("step", 1)  # nothing happens
    monkeypatch.setenv(faults.ENV, "checkpoint@3:raise")
    faults.fault_point("step", 3)
    faults.fault_point("checkpoint", 2)
    with pytest.raises(RuntimeError, match="fault injected at checkpoint step 3"):
        faults.fault_point("checkpoint", 3)
