"""Waiting for something to become true: one polling loop, `wait_until`, and the waits that the
tests share on top of it (a fine-tuning job, an eval run).

A wait fails with an AssertionError naming what it waited for and the last value it saw.
Knows the `openai` SDK's job and eval-run objects; nothing about how they are produced.
"""

from __future__ import annotations

import time

JOB_DONE = frozenset({"succeeded", "failed", "cancelled"})
JOB_STATES = frozenset({"validating_files", "queued", "running", "paused"}) | JOB_DONE
RUN_DONE = frozenset({"completed", "failed", "canceled"})


def wait_until(predicate, timeout: float = 120.0, *, what: str = "condition", interval: float = 0.1):
    """Call `predicate()` every `interval` seconds until it returns something truthy, and return
    that; after `timeout` seconds raise AssertionError("timed out ... waiting for <what>")."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def wait_job(client, job_id: str, statuses=JOB_DONE, timeout: float = 300.0):
    """The job (an SDK object) once its status is one of `statuses` (default: finished)."""
    def reached():
        job = client.fine_tuning.jobs.retrieve(job_id)
        return job if job.status in statuses else None

    try:
        return wait_until(reached, timeout, what=f"job {job_id} to be {'/'.join(sorted(statuses))}", interval=0.2)
    except AssertionError as e:
        job = client.fine_tuning.jobs.retrieve(job_id)
        raise AssertionError(f"job {job_id} stayed {job.status!r}, wanted {set(statuses)}: {job.error}") from e


def wait_eval_run(client, eval_id: str, run_id: str, statuses=RUN_DONE, timeout: float = 300.0):
    """The eval run (an SDK object) once its status is one of `statuses` (default: finished)."""
    def reached():
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        return run if run.status in statuses else None

    try:
        return wait_until(reached, timeout, what=f"eval run {run_id} to be {'/'.join(sorted(statuses))}",
                          interval=0.2)
    except AssertionError as e:
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        raise AssertionError(f"eval run {run_id} stayed {run.status!r}, wanted {set(statuses)}: {run.error}") from e
