"""API test fixtures: a real server process (`python -m openft.api.server`: uvicorn on a free
port, temporary data folder) driven by the official `openai` SDK, plus a second project's key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ADMIN_KEY = "sk-openft-test-admin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """`openft.api.server.run` in a subprocess (independent of the CLI), stopped with SIGTERM."""

    def __init__(self, data_dir: Path, model_cache: Path, env: dict | None = None):
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.api_key = ADMIN_KEY
        self.data_dir = data_dir
        self.log = data_dir.parent / f"server-{self.port}.log"
        self.env = {**os.environ, "OPENFT_DATA_DIR": str(data_dir), "OPENFT_MODEL_CACHE_DIR": str(model_cache),
                    "OPENFT_API_KEY": ADMIN_KEY, "OPENFT_HOST": "127.0.0.1", "OPENFT_PORT": str(self.port),
                    "OPENFT_WORKER_POLL_SECONDS": "0.2", "OPENFT_HEARTBEAT_SECONDS": "0.5",
                    "OPENFT_LEASE_SECONDS": "5", "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ApiServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "openft.api.server"], env=self.env, stdout=self._logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.log.read_text()[-4000:]}")

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


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, model_cache):
    """A server without the embedded worker: jobs stay where the API and the validator put them."""
    server = ApiServer(tmp_path_factory.mktemp("api") / "data", model_cache,
                       env={"OPENFT_EMBEDDED_WORKER": "false", "OPENFT_MAX_UPLOAD_BYTES": "200000"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(api_server):
    return api_server.client()


@pytest.fixture(scope="module")
def other_api(api_server):
    """A client holding a key of another project."""
    from openft.store.auth import create_key

    db = api_server.db()
    try:
        _, key = create_key(db, "other-project")
    finally:
        db.dispose()
    return api_server.client(api_key=key)
