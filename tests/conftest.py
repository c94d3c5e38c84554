"""Shared fixtures: settings in a temporary data folder, a shared model cache, a live server.

The live server is the real thing: `python -m openft serve` in a subprocess on a free port
(API, embedded worker, SQLite), driven by the official `openai` SDK.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ADMIN_KEY = "sk-openft-test-admin"


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """Converted/built base models, kept across runs (the tiny model takes seconds to build)."""
    path = Path(os.environ.get("OPENFT_TEST_MODEL_CACHE", REPO / ".cache" / "test-models"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def settings(tmp_path, model_cache):
    from openft.config import Settings

    return Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache, api_key=ADMIN_KEY,
                    worker_poll_seconds=0.2, heartbeat_seconds=0.5, lease_seconds=5)


# Columns that later migrations add; a database made by migration 1 of the first release lacks them.
LATER_COLUMNS = {"jobs": ("workers_lost", "runner_retries"), "api_keys": ("key_hash_kind",)}
LATER_TABLES = ("evals", "eval_runs", "eval_output_items",  # migration 4
                "responses",  # migration 5
                "webhook_endpoints", "webhook_deliveries", "webhook_attempts",  # migration 6
                "exports")  # migration 7


@pytest.fixture
def v1_database(tmp_path):
    """A SQLite database as the first release's migration 1 made it (recorded as version 1),
    with (the tables of) that schema; returns (engine, its tables)."""
    import sqlalchemy as sa

    from openft.store.db import make_engine, metadata, schema_migrations

    engine = make_engine(f"sqlite:///{tmp_path / 'v1.db'}")
    old = sa.MetaData()
    for t in metadata.sorted_tables:
        if t.name in LATER_TABLES:
            continue
        sa.Table(t.name, old, *[c.copy() for c in t.columns if c.name not in LATER_COLUMNS.get(t.name, ())])
    with engine.begin() as conn:
        old.create_all(conn)
        conn.execute(schema_migrations.insert().values(version=1, name="initial schema", applied_at=1))
    yield engine, old.tables
    engine.dispose()


@pytest.fixture(scope="session")
def tiny_model_dir(model_cache) -> str:
    from openft.config import Settings
    from openft.models import materialize

    return materialize(Settings(model_cache_dir=model_cache), "openft-tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real openft server process on a free port; `argv` picks how it is started
    (default: the CLI, `python -m openft serve`). Stopped with SIGTERM."""

    argv = ("-m", "openft", "serve")

    def __init__(self, data_dir: Path, model_cache: Path, env: dict | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.api_key = ADMIN_KEY
        self.data_dir = data_dir
        self.log = data_dir.parent / f"server-{self.port}.log"
        self.env = {**os.environ, "OPENFT_DATA_DIR": str(data_dir), "OPENFT_MODEL_CACHE_DIR": str(model_cache),
                    "OPENFT_API_KEY": ADMIN_KEY, "OPENFT_HOST": "127.0.0.1", "OPENFT_PORT": str(self.port),
                    "OPENFT_WORKER_POLL_SECONDS": "0.2",
                    "OPENFT_HEARTBEAT_SECONDS": "0.5", "OPENFT_LEASE_SECONDS": "5", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "LiveServer":
        data_dir = self.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv],
            env=self.env, stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)
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


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, model_cache):
    server = LiveServer(tmp_path_factory.mktemp("server") / "data", model_cache).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(live_server):
    return live_server.client()


def write_chat_jsonl(path: Path, n: int = 12, *, seed: int = 0) -> Path:
    """A small valid chat dataset (n examples) for job tests."""
    import json
    import random

    rng = random.Random(seed)
    words = ["great", "awful", "fine", "superb", "bad", "lovely", "poor", "nice"]
    with open(path, "w") as f:
        for i in range(n):
            w = rng.choice(words)
            label = "positive" if w in ("great", "fine", "superb", "lovely", "nice") else "negative"
            f.write(json.dumps({"messages": [
                {"role": "system", "content": "Classify the review as positive or negative."},
                {"role": "user", "content": f"Review {i}: the product was {w}."},
                {"role": "assistant", "content": label}]}) + "\n")
    return path
