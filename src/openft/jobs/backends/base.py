"""The interface every job backend implements: where a claimed job's trainer run happens.

The worker claims a job, asks its backend to `start` the job's run (`python -m openft.jobs.runner
JOB_ID` somewhere: a child process here, a Ray job on a cluster), then drives the `JobRun` it got
back: `wait` for it a little at a time while it heartbeats the lease, `stop` it (a grace period,
then a kill) when the job is cancelled, taken away or the worker stops, read its `log_tail`, and,
when it ended without finishing the job, ask its `exit()`: what happened, in words fit for the
job's error, and whether it is worth a retry (an infrastructure fault) or not (out of memory, a
crash). What an exit means is the backend's knowledge: the worker never sees a pid, a signal
number, a process group or an OOM counter.

Knows nothing about the database, the queue or training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class StartFailed(Exception):
    """The backend could not start the run (the message says why); the job fails with it."""


@dataclass(frozen=True)
class RunExit:
    """How a run that did not finish its job ended."""

    error_code: str   # the job's error code: "out_of_memory", "training_process_died", ...
    message: str      # the job's error message: what happened, with the run's last output line
    reason: str       # what happened in one clause, without output (the requeue event's words)
    retryable: bool   # killed from outside (an infrastructure fault): worth resuming from a checkpoint


@runtime_checkable
class JobRun(Protocol):
    """One started trainer run of one job; the handle `JobBackend.start` returns."""

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (None: until it ends; 0: only look); True once it ended."""
        ...

    def stop(self, grace_seconds: float) -> None:
        """Ask the run to stop, give it `grace_seconds`, then kill it; returns once it ended."""
        ...

    def log_tail(self, n_chars: int = 2000) -> str:
        """The end of the run's output (stdout and stderr), also when its job folder is unwritable."""
        ...

    def exit(self) -> RunExit:
        """How the run ended (call once `wait` returned True): its job error and whether to retry."""
        ...


@runtime_checkable
class JobBackend(Protocol):
    """Starts trainer runs; built once per worker by `openft.jobs.backends.open_backend(settings)`."""

    name: str  # what `job_backend` (OPENFT_JOB_BACKEND) calls it

    def start(self, job_id: str, output_dir: str) -> JobRun:
        """Start the run of claimed job `job_id` whose folder is `output_dir` (its `runner.log` is
        written there when it can be). Raises StartFailed when the run cannot be started."""
        ...
