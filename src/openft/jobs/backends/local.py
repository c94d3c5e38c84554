"""Local backend: run `python -m openft.jobs.runner JOB_ID` as a child process.

The child gets the worker's settings through `OPENFT_*` environment variables, its own session
(a Ctrl-C meant for the server does not hit it mid-write; the worker stops it in order), and
its stdout/stderr in `<output_dir>/runner.log`. The runner asks the kernel to kill it when the
worker dies (see runner.py), so an orphan never keeps training a job another worker took over.

Knows processes and signals; knows nothing about the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    """A running runner process."""

    def __init__(self, popen: subprocess.Popen, log_path: Path):
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

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
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - n_chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class LocalBackend:
    def __init__(self, settings: Settings, python: str | None = None):
        self.settings = settings
        self.python = python or sys.executable

    def start(self, job_id: str, output_dir: str) -> LocalProcess:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "runner.log"
        env = {k: v for k, v in os.environ.items() if k != "OPENFT_API_KEY"}
        env = {**env, **settings_env(self.settings),
               "OPENFT_RUNNER_PARENT_PID": str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        with open(log_path, "ab") as log:
            popen = subprocess.Popen([self.python, "-m", "openft.jobs.runner", job_id], env=env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True)
        return LocalProcess(popen, log_path)
