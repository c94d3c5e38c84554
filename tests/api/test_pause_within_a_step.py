"""Pause lands within one optimizer step and says so while it is pending: the real server and
the SDK, a runner held mid-step by a fault point.

The runner waits inside step 3 (after its backward pass, before the optimizer step:
openft.faults `step@3:wait`) until the test lets it go, so "the step the pause was asked
in" is fixed, not raced: asked while step 3 runs, the job is paused with a checkpoint at step 3
(it used to run on to the next epoch-end checkpoint: minutes), shows `pause_requested` and a
"Pausing..." event until then, and resumes from there to the end."""

from __future__ import annotations

import pytest

from tests.support.data import chat_jsonl, upload
from tests.support.servers import LiveServer, running
from tests.support.wait import wait_job, wait_until


@pytest.mark.slow
def test_pause_is_pending_then_lands_within_the_step_and_resumes(tmp_path, model_cache):
    once = tmp_path / "faults"
    once.mkdir()
    env = {"OPENFT_FAULT": "step@3:wait", "OPENFT_FAULT_ONCE_DIR": str(once)}
    with running(LiveServer(tmp_path / "data", model_cache, env)) as server:
        api = server.client()
        train = upload(api, chat_jsonl(12), "train.jsonl")
        job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id,
                                          hyperparameters={"n_epochs": 2, "batch_size": 1})  # 24 steps, 2 checkpoints
        wait_until(lambda: (once / "step@3").exists(), 300, what="the runner to reach step 3")

        asked = api.fine_tuning.jobs.pause(job.id)
        assert asked.status == "running" and asked.pause_requested is True
        events = [e.message for e in api.fine_tuning.jobs.list_events(job.id, limit=50)]
        assert any(m.startswith("Pausing...") for m in events), events
        assert api.fine_tuning.jobs.retrieve(job.id).pause_requested is True   # still held in step 3

        (once / "step@3.go").touch()
        paused = wait_job(api, job.id, {"paused", "succeeded", "failed", "cancelled"}, timeout=300)
        assert paused.status == "paused" and paused.pause_requested is False
        at = max(c.step_number for c in api.fine_tuning.jobs.checkpoints.list(job.id))
        # the step it was asked in: the runner reads the job row after every step (it used to run on
        # to the epoch's end, 12, and with a 0.2 s throttle on that read, up to step 9 here)
        assert at == 3, at
        events = [e.message for e in api.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert any(f"resume from checkpoint step {at}" in m for m in events), events

        assert api.fine_tuning.jobs.resume(job.id).status == "queued"
        done = wait_job(api, job.id, timeout=480)
        assert done.status == "succeeded", done.error
        metric_steps = [e.data["step"] for e in api.fine_tuning.jobs.list_events(job.id, limit=200)
                        if e.type == "metrics"]
        assert max(metric_steps) == 24 and at + 1 in metric_steps
