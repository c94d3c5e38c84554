"""Local backend: run `python -m openft.jobs.runner JOB_ID` as a child process.

The child gets the worker's settings through `OPENFT_*` environment variables, its own session
(a Ctrl-C meant for the server does not hit it mid-write; the worker stops it in order), and
its stdout/stderr on a pipe that a thread of the worker reads: the last lines are kept in
memory (so the runner's own traceback reaches the job's error even when its folder cannot be
written) and copied to `<output_dir>/runner.log` when that file can be written. The runner asks the kernel to kill it when the
worker dies (see runner.py), so an orphan never keeps training a job another worker took over.

What an exit means is decided here too (`LocalProcess.exit`, `describe_exit`): a negative exit
code is the signal the runner died of; a SIGKILL is called out-of-memory only when the kernel's
OOM counters (openft.jobs.oom, a snapshot taken at start) went up meanwhile; a runner killed by a
signal for another reason (an infrastructure fault) is worth a retry; any other exit is not.

Knows processes, signals and the kernel's OOM counters; knows nothing about the database.
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
from openft.jobs import oom
from openft.jobs.backends.base import RunExit, StartFailed

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
    """A running runner process (a `JobRun`); its output is read from a pipe (see `log_tail`)."""

    TAIL_BYTES = 8192  # output kept in memory for the job's error

    def __init__(self, popen: subprocess.Popen, log_path: Path, oom_before: dict[str, int] | None = None):
        self.popen = popen
        self.log_path = log_path
        self.oom_before = oom_before if oom_before is not None else {}  # OOM counters when it started
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

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal); None while it runs."""
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> bool:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._reader.join(5.0)  # the output up to the exit is in the tail
        return True

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

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM to its process group, wait up to `grace_seconds`, then SIGKILL."""
        self.terminate()
        if not self.wait(grace_seconds):
            self.kill()
            self.wait(None)

    def log_tail(self, n_chars: int = 2000) -> str:
        """The end of the runner's stdout and stderr, from the pipe."""
        with self._lock:
            return bytes(self._tail[-n_chars:]).decode("utf-8", "replace")

    def exit(self) -> RunExit:
        """How the ended process ended: killed by a signal other than an OOM kill -> retryable."""
        self.wait(None)
        code = self.popen.returncode
        sig = signal_of(code)
        oom_killed = oom.killed_since(self.oom_before) if sig == signal.SIGKILL else False
        error_code, message = describe_exit(code, self.log_tail(), oom_killed=oom_killed)
        return RunExit(error_code, message, reason=describe_exit(code, "", oom_killed=oom_killed)[1].rstrip("."),
                       retryable=sig is not None and not oom_killed)


class LocalBackend:
    """Runs each job's runner as a child process of the worker (a `JobBackend`)."""

    name = "local"

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
        oom_before = oom.snapshot()
        try:
            popen = subprocess.Popen([self.python, "-m", "openft.jobs.runner", job_id], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True)
        except OSError as e:
            raise StartFailed(str(e)) from e
        return LocalProcess(popen, log_path, oom_before)


def signal_of(code: int | None) -> int | None:
    """The signal a runner died of: a negative exit code, or 130 (the runner's own exit after
    SIGTERM/SIGINT, see runner.main); None for a normal exit."""
    if code is None:
        return None
    if code < 0:
        return -code
    return signal.SIGTERM if code == 130 else None


def describe_exit(code: int | None, log_tail: str, *, oom_killed: bool | None = None) -> tuple[str, str]:
    """(error code, message) for a runner that died without finishing its job. `oom_killed`:
    what the kernel's OOM counters say (openft.jobs.oom.killed_since); a SIGKILL is called
    out-of-memory only when they recorded a kill."""
    last = _last_error_line(log_tail)
    output = f" Last output: {last}" if last else ""
    sig = signal_of(code)
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGKILL and oom_killed:
            return ("out_of_memory",
                    "The training process was killed by the system's out-of-memory killer (SIGKILL; the kernel "
                    "recorded an OOM kill). Try a smaller batch_size, shorter examples, or a smaller model.")
        if sig == signal.SIGKILL:
            why = (" No out-of-memory kill was recorded, so something else killed it." if oom_killed is False
                   else " Whether it ran out of memory is unknown (no OOM record is readable here).")
            return "training_process_died", f"The training process was killed by signal 9 (SIGKILL).{why}{output}"
        how = f"stopped by {name} (exit code {code})" if code == 130 else f"killed by signal {sig} ({name})"
        return "training_process_died", f"The training process was {how}.{output}"
    return ("training_process_died",
            f"The training process exited with code {code} without finishing the job.{output}")


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""
