"""Live openft servers for the tests: the real thing, never a mock.

`LiveServer`: `python -m openft serve` (or another entry point, `argv`) in a subprocess on a free
port with a temporary data folder (API, embedded worker, SQLite), driven by the official `openai`
SDK; stopped with SIGTERM. `ServerSpec` says how a test module's `server` fixture is started
(tests/conftest.py): which entry point, with or without the worker, which extra settings.
`in_process_server`: `openft.api.server.ServerThread` in the test's own process, for tests that
look at the server's objects (its engines, its worker).

Knows openft's entry points and settings; nothing about what a test checks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.wait import wait_until

ADMIN_KEY = "sk-openft-test-admin"
CLI = ("-m", "openft", "serve")            # the CLI: API, dashboard and embedded worker
API = ("-m", "openft.api.server")          # openft.api.server.run, independent of the CLI
CLI_NO_WORKER = ("-m", "openft", "serve", "--no-worker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real openft server process on a free port; `argv` picks how it is started
    (default: the CLI, `python -m openft serve`). Stopped with SIGTERM."""

    argv = CLI

    def __init__(self, data_dir: Path, model_cache: Path, env: dict | None = None, *, argv: tuple | None = None):
        if argv is not None:
            self.argv = argv
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.api_key = ADMIN_KEY
        self.data_dir = data_dir
        self.log = data_dir.parent / f"server-{self.port}.log"
        self.env = {**os.environ, "OPENFT_DATA_DIR": str(data_dir), "OPENFT_MODEL_CACHE_DIR": str(model_cache),
                    "OPENFT_API_KEY": ADMIN_KEY, "OPENFT_HOST": "127.0.0.1", "OPENFT_PORT": str(self.port),
                    "OPENFT_WORKER_POLL_SECONDS": "0.2",
                    "OPENFT_HEARTBEAT_SECONDS": "0.5", "OPENFT_LEASE_SECONDS": "5",
                    # no model loads at start; a chat for a model still loading waits for it instead of
                    # a 503 (tests/api/test_model_loading.py checks the defaults)
                    "OPENFT_PRELOAD_MODELS": "", "OPENFT_SERVE_LOAD_WAIT_S": "600", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._logf = open(self.log, "ab")  # noqa: SIM115 - the server writes to it until stop()
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv],
            env=self.env, stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._healthy, 60, what="the server to answer /health", interval=0.2)
        except AssertionError:
            self.stop()
            raise RuntimeError(f"server did not start:\n{self.log.read_text()[-4000:]}") from None
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_logf", None):
            self._logf.close()
        return self.proc.returncode if self.proc else None

    def client(self, api_key: str | None = None):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=api_key or self.api_key, max_retries=0, timeout=120)

    def db(self):
        from openft.config import Settings
        from openft.store.db import make_engine

        return make_engine(Settings(data_dir=self.data_dir).resolved_database_url())

    def new_key(self, project: str) -> tuple[str, str]:
        """(project id, API key) of a key of `project`, made the way `openft keys create` makes one
        (HMAC with this server's secret)."""
        from openft.config import Settings
        from openft.store.auth import create_key, key_secret

        db = self.db()
        try:
            return create_key(db, project, secret=key_secret(Settings(data_dir=self.data_dir)))
        finally:
            db.dispose()


def other_client(server: LiveServer, name: str = "other-project"):
    """A client holding a key of a second project of `server`."""
    return server.client(api_key=server.new_key(name)[1])


class ApiServer(LiveServer):
    """`openft.api.server.run` in a subprocess, independent of the CLI."""

    argv = API


@dataclass(frozen=True)
class ServerSpec:
    """How a module's `server` fixture starts its server: a test module sets `SERVER = ServerSpec(...)`.
    argv: the entry point (CLI, API); worker: the embedded worker runs jobs and eval runs;
    env: more OPENFT_* settings."""

    argv: tuple = CLI
    worker: bool = True
    env: dict = field(default_factory=dict)

    def server(self, data_dir: Path, model_cache: Path) -> LiveServer:
        env = {**({} if self.worker else {"OPENFT_EMBEDDED_WORKER": "false"}), **self.env}
        return LiveServer(data_dir, model_cache, env, argv=self.argv)


@contextlib.contextmanager
def running(server: LiveServer):
    """`with running(LiveServer(...)) as s:` starts it and stops it on the way out."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def in_process_server(settings, *, worker: bool, timeout: float = 120):
    """`ServerThread` on a free port in this process; yields it with `.client`, an SDK client."""
    import openai

    from openft.api.server import ServerThread

    with ServerThread(settings.model_copy(update={"port": free_port()}), worker=worker) as srv:
        srv.client = openai.OpenAI(base_url=srv.base_url, api_key=settings.api_key, max_retries=0, timeout=timeout)
        yield srv
