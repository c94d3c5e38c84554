"""The job worker: reap expired leases, claim one queued job, run it in a child process.

`Worker(settings).run_forever(stop_event)` is what `openft worker` runs and what `openft serve`
starts in a background thread; `run_once()` handles at most one job and returns. While the
child (`python -m openft.jobs.runner JOB_ID`) runs, the worker heartbeats the job's lease and
watches its row: a cancelled job's child gets a grace period to stop on its own, then is
killed; a job that was taken away from this worker (lease lost) is killed at once. When the
child dies without finishing the job, its backend says what happened (`JobRun.exit()`; the local
backend tells an out-of-memory kill from other deaths by the kernel's OOM counters): an OOM kill
or a crash fails the job with an error that says what happened (the runner's last output line);
a run killed for another reason (an infrastructure fault) is retried from its newest checkpoint
up to `settings.runner_max_retries` times, then the job fails. The server never goes down with
it. On `stop`, a running job is put back in the queue to continue from its newest checkpoint.
One card, two users: when the worker claims a job it first asks the serving engines of its own
process to give back what they cache beyond their running requests (`release_memory()`): the
eval-run engine it owns, and the API's chat engine through the `release_memory` callback that
`openft serve` passes in (the worker never imports the API). A release that fails is logged and
the job starts anyway. At start, the worker deletes the temporary folders killed writers left
in the folders of jobs that are not running. Status changes go through openft.jobs.state.
`run_forever` also runs, each in its own thread under this worker's id, the eval-run loop
(openft.jobs.eval_runs), the webhook delivery loop (openft.jobs.webhook_delivery) and the export
loop (openft.jobs.exports); every loop is openft.jobs.lease.poll_until_stopped.

Knows the queue and the backend; knows nothing about training internals or HTTP.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

import sqlalchemy as sa

from openft.config import Settings
from openft.jobs import queue, state
from openft.jobs.backends import JobRun, StartFailed, open_backend
from openft.jobs.lease import poll_until_stopped
from openft.store.db import jobs, make_engine, migrate

log = logging.getLogger("openft.worker")


class Worker:
    def __init__(self, settings: Settings, *, engine: sa.Engine | None = None, worker_id: str | None = None,
                 cancel_grace_seconds: float = 15.0, stop_grace_seconds: float = 10.0,
                 exit_grace_seconds: float = 60.0, max_attempts: int = 3,
                 release_memory: Callable[[], dict | None] | None = None, serve_engine: Callable[[], object] | None = None):
        """Grace periods, in seconds: a cancelled job's runner (to stop on its own), a stopping
        worker's runner (SIGTERM to SIGKILL), a runner that recorded its outcome (to exit).
        max_attempts: a job whose worker is lost that many times fails (code worker_lost).
        release_memory: called when a job is claimed, before its runner starts: the serving
        engine of this process gives back its caches (None: no engine was started, nothing to do).
        serve_engine: gives that engine (started on first use); eval runs share it when the backend
        is vLLM (openft.jobs.eval_runs.EvalRunExecutor)."""
        self.settings = settings
        self.engine = engine
        self._own_engine = engine is None
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.cancel_grace_seconds = cancel_grace_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self.exit_grace_seconds = exit_grace_seconds
        self.max_attempts = max_attempts
        self.backend = open_backend(settings)  # job_backend (OPENFT_JOB_BACKEND)
        self._stop = threading.Event()
        self.current_job: str | None = None
        self.process: JobRun | None = None  # the running job's run, if any
        self._cleaned = False  # leftovers of killed runs removed (once per worker)
        self._release_serving = release_memory
        self._serve_engine = serve_engine
        self._evals = None  # the eval-run executor of run_forever (its engine is released too)
        self.releases: deque[dict] = deque(maxlen=100)  # one entry per engine asked, newest last

    # -- lifecycle ---------------------------------------------------------------------------

    def _engine(self) -> sa.Engine:
        if self.engine is None:
            self.settings.ensure_dirs()
            self.engine = make_engine(self.settings.resolved_database_url())
            migrate(self.engine)
            from openft.jobs.exports import import_files  # the standalone worker: older versions' records

            import_files(self.settings, self.engine)
        return self.engine

    def stop(self) -> None:
        """Ask run_forever / a running job to stop (the job is requeued, not failed)."""
        self._stop.set()

    def run_forever(self, stop_event: threading.Event | None = None) -> None:
        """Run jobs until `stop_event` (or `stop()`) is set; safe to run in a thread."""
        if stop_event is not None:
            self._stop = stop_event  # stop() and the caller's event are then one and the same
        restore = {}
        if threading.current_thread() is threading.main_thread():  # `openft worker`: Ctrl-C stops in order
            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.signal(sig, lambda *_: self._stop.set())
        log.info("worker %s started", self.worker_id)
        from openft.jobs import exports, webhook_delivery
        from openft.jobs.eval_runs import EvalRunExecutor, start_thread  # eval runs beside jobs, same lease rules

        self._evals = EvalRunExecutor(self.settings, self._engine(), self.worker_id, shared_engine=self._serve_engine)
        threads = [
            start_thread(self.settings, self._engine(), self.worker_id, self._stop, executor=self._evals),
            # webhooks and exports beside them: a slow endpoint or a long export never holds a job
            webhook_delivery.start_thread(self.settings, self._engine(), self._stop),
            exports.start_thread(self.settings, self._engine(), self.worker_id, self._stop),
        ]
        try:
            poll_until_stopped(self.run_once, self._stop, self.settings.worker_poll_seconds, log)
        finally:
            for t in threads:
                t.join(30)
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            if self._own_engine and self.engine is not None:
                self.engine.dispose()
        log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> str | None:
        """Reap expired leases, then claim and run one queued job. Returns its id, or None."""
        engine = self._engine()
        if not self._cleaned:
            self._cleaned = True
            self.clean_leftovers()
        for r in queue.reap_expired(engine, self.settings.lease_seconds, max_attempts=self.max_attempts):
            log.warning("requeued %s (worker lost)" if r.requeued else "failed %s (worker lost too often)", r.job_id)
        if self._stop.is_set():
            return None
        job = queue.claim_next(engine, self.worker_id, self.settings.data_dir)
        if job is None:
            return None
        self.current_job = job["id"]
        try:
            self._run(job)
        finally:
            self.current_job = None
        return job["id"]

    def clean_leftovers(self) -> int:
        """Delete `checkpoints/.step-N.tmp` and `.model.tmp` folders of jobs that are not running
        (a running job's own runner cleans its folder when it starts). Returns how many."""
        from openft.train.checkpoint import remove_partial

        with self._engine().connect() as conn:
            rows = conn.execute(sa.select(jobs.c.id, jobs.c.output_dir).where(
                jobs.c.output_dir.is_not(None), jobs.c.status != "running")).all()
        n = 0
        for job_id, out in rows:
            for p in remove_partial(out):
                log.info("removed %s, left by a killed run of %s", p, job_id)
                n += 1
        return n

    # -- one job -----------------------------------------------------------------------------

    def release_engines(self, job_id: str) -> None:
        """A job is about to start, maybe on the device the serving engines of this process use: ask
        each engine that was started to give back its caches. Never raises: a failing release is
        logged (and recorded in `releases` with its error), and the job starts anyway."""
        sources = [("serving", self._release_serving),
                   ("eval", self._evals.release_memory if self._evals is not None else None)]
        for name, release in sources:
            if release is None:
                continue
            try:
                got = release()
            except Exception as e:  # noqa: BLE001 - the job and the server go on without the memory
                log.exception("the %s engine could not release its memory for job %s", name, job_id)
                self.releases.append({"job": job_id, "engine": name, "error": f"{type(e).__name__}: {e}"})
                continue
            if got is None:  # that engine was never started
                continue
            self.releases.append({"job": job_id, "engine": name, **got})
            log.info("the %s engine released %.1f MiB for job %s", name, got.get("bytes", 0) / 2**20, job_id)

    def _run(self, job: dict) -> None:
        job_id = job["id"]
        log.info("running %s (attempt %s)", job_id, job["attempts"])
        self.release_engines(job_id)
        try:
            proc = self.backend.start(job_id, job["output_dir"])
        except StartFailed as e:
            self._fail(job_id, "runner_start_failed", f"Could not start the training process: {e}")
            return
        self.process = proc
        try:
            self._watch(job_id, proc)
        except BaseException:
            proc.stop(2.0)  # never leave an unwatched child behind; the reaper requeues the job
            raise
        finally:
            self.process = None

    def _watch(self, job_id: str, proc: JobRun) -> None:
        engine = self._engine()
        killed_by_us: str | None = None   # "cancel" | "lease" | "stop"
        cancel_deadline: float | None = None  # stop the child at this time (cancelled, or done and hanging)
        next_beat = time.monotonic() + self.settings.heartbeat_seconds
        tick = max(0.05, min(0.5, self.settings.heartbeat_seconds / 2))
        while not proc.wait(tick):
            now = time.monotonic()
            if self._stop.is_set():
                proc.stop(self.stop_grace_seconds)
                killed_by_us = "stop"
                break
            if cancel_deadline is not None and now >= cancel_deadline:
                log.warning("the runner of %s did not exit in time; stopping it", job_id)
                proc.stop(5.0)
                killed_by_us = "cancel"
                break
            if now < next_beat:
                continue
            next_beat = now + self.settings.heartbeat_seconds
            try:
                if queue.heartbeat(engine, job_id, self.worker_id):
                    continue
                with engine.connect() as conn:
                    row = conn.execute(sa.select(jobs.c.status, jobs.c.worker_id)
                                       .where(jobs.c.id == job_id)).first()
            except sa.exc.OperationalError:  # DB briefly locked/unreachable: the lease has slack
                log.warning("heartbeat for %s failed; retrying", job_id, exc_info=True)
                continue
            taken = row is None or row.status == "queued" or (
                row.status == "running" and not state.mine(row, self.worker_id))
            if taken:
                log.warning("job %s was taken away from this worker; stopping its process", job_id)
                proc.stop(2.0)
                killed_by_us = "lease"
                break
            if row.status == "cancelled" and cancel_deadline is None:
                cancel_deadline = now + self.cancel_grace_seconds
            elif row.status in ("succeeded", "failed", "paused") and cancel_deadline is None:
                # the runner recorded the outcome and is exiting; one that hangs is stopped
                cancel_deadline = now + self.exit_grace_seconds
        self._after_exit(job_id, proc, killed_by_us)

    def _after_exit(self, job_id: str, proc: JobRun, killed_by_us: str | None) -> None:
        engine = self._engine()
        proc.wait(None)
        if killed_by_us == "stop":
            queue.requeue(engine, job_id, worker_id=self.worker_id,
                          reason="The worker was stopped while running this job")
            return
        if killed_by_us == "lease":
            return
        with engine.connect() as conn:
            row = conn.execute(sa.select(jobs.c.status, jobs.c.worker_id, jobs.c.requested_action,
                                         jobs.c.runner_retries).where(jobs.c.id == job_id)).first()
        if not state.mine(row, self.worker_id):
            return  # the runner finished the job (or it was cancelled/taken): nothing to add
        if row.requested_action == "pause":
            with engine.begin() as conn:
                step, path = queue.resume_point(conn, job_id)
                state.pause(conn, job_id, worker_id=self.worker_id, resume_checkpoint=path, step=step)
            return
        ended = proc.exit()
        if ended.retryable:  # an infrastructure fault: retry, boundedly
            retries, limit = row.runner_retries or 0, self.settings.runner_max_retries
            if retries < limit:
                r = queue.requeue(engine, job_id, reason=ended.reason, worker_id=self.worker_id,
                                  retry_of=(retries + 1, limit))
                if r is not None:
                    log.warning("%s: %s; retry %d of %d", job_id, ended.reason, retries + 1, limit)
                    return
            self._fail(job_id, ended.error_code, f"{ended.message} It was retried {retries} "
                       f"time{'s' if retries != 1 else ''} (runner_max_retries={limit}) and is not retried again.")
            return
        self._fail(job_id, ended.error_code, ended.message)

    def _fail(self, job_id: str, code: str, message: str) -> None:
        with self._engine().begin() as conn:
            state.fail(conn, job_id, code, message, worker_id=self.worker_id)
        log.error("job %s failed: %s", job_id, message)




def main() -> None:  # `python -m openft.jobs.worker`: the standalone worker (also `openft worker`)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    Worker(Settings()).run_forever()


if __name__ == "__main__":
    main()
