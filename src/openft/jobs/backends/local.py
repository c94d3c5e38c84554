"""Local backend: run `python -m openft.jobs.runner JOB_ID` as a child process.

The child gets the worker's settings through `OPENFT_*` environment variables, its own session
(a Ctrl-C meant for the server does not hit it mid-write; the worker stops it in order), and
its stdout/stderr on a pipe that a thread of the worker reads: the last lines are kept in
memory (so the runner's own traceback reaches the job's error even when its folder cannot be
written) and copied to `<output_dir>/runner.log` when that file can be written. The runner asks the kernel to kill it when the
worker dies (see runner.py), so an orphan never keeps training a job another worker took over.

Knows processes and signals; knows nothing about the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from openft.config import Settings

_NOT_FOR_CHILDREN = {"api_key"}  # a runner needs no credentials


def settings_env(settings: Settings) -> dict[str, str]:
    """`OPENFT_*` variables that rebuild `settings` in a child process (`Settings()`)."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None or name in _NOT_FOR_CHILDREN:
            continue
        if name in ("data_dir", "model_cache_dir"):
            value = str(Path(value).resolve())
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"OPENFT_{name.upper()}"] = str(value)
    if not settings.database_url:  # pin the SQLite file, whatever the child's cwd
        env["OPENFT_DATABASE_URL"] = settings.resolved_database_url()
    return env


class LocalProcess:
    """A running runner process; its output is read from a pipe (see `log_tail`)."""

    TAIL_BYTES = 8192  # output kept in memory for the job's error

    def __init__(self, popen: subprocess.Popen, log_path: Path):
        self.popen = popen
        self.log_path = log_path
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"runner-output-{popen.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            log = open(self.log_path, "ab")
        except OSError:
            log = None  # the job folder is not writable: the in-memory tail still has the output
        try:
            for chunk in iter(lambda: self.popen.stdout.read1(65536), b""):
                with self._lock:
                    self._tail += chunk
                    del self._tail[:-self.TAIL_BYTES]
                if log is not None:
                    try:
                        log.write(chunk)
                        log.flush()
                    except OSError:
                        log = None
        finally:
            self.popen.stdout.close()
            if log is not None:
                try:
                    log.close()
                except OSError:
                    pass

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(5.0)  # the output up to the exit is in the tail
        return code

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)  # the child leads its own session / group
        except (ProcessLookupError, PermissionError):
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self._signal_group(signal.SIGKILL)

    def stop(self, grace_seconds: float) -> int:
        """SIGTERM, wait up to `grace_seconds`, then SIGKILL; returns the exit code."""
        self.terminate()
        if self.wait(grace_seconds) is None:
            self.kill()
            self.popen.wait()
        return self.popen.returncode

    def log_tail(self, n_chars: int = 2000) -> str:
        """The end of the runner's stdout and stderr, from the pipe."""
        with self._lock:
            return bytes(self._tail[-n_chars:]).decode("utf-8", "replace")


class LocalBackend:
    def __init__(self, settings: Settings, python: str | None = None):
        self.settings = settings
        self.python = python or sys.executable

    def start(self, job_id: str, output_dir: str) -> LocalProcess:
        out = Path(output_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # the runner reports what it cannot write, through the pipe
        log_path = out / "runner.log"
        env = {k: v for k, v in os.environ.items() if k != "OPENFT_API_KEY"}
        env = {**env, **settings_env(self.settings),
               "OPENFT_RUNNER_PARENT_PID": str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        popen = subprocess.Popen([self.python, "-m", "openft.jobs.runner", job_id], env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)
        return LocalProcess(popen, log_path)
