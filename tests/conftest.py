"""Shared fixtures: settings in a temporary data folder, a shared model cache, live servers.

`server` (alias `live_server`) is the module's live server: the real thing, `python -m openft
serve` in a subprocess on a free port (API, embedded worker, SQLite), driven by the official
`openai` SDK; a module that needs another one says so in `SERVER = ServerSpec(...)`.
`thread_server` runs the server in the test's own process. Helpers live in tests/support/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.servers import ADMIN_KEY, ServerSpec, in_process_server, running

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


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
                    worker_poll_seconds=0.2, heartbeat_seconds=0.5, lease_seconds=5,
                    preload_models="", serve_load_wait_s=600)


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


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, model_cache):
    """The module's live server, started as the module's `SERVER` (a tests.support.servers.ServerSpec)
    says; without one, `openft serve` with its embedded worker."""
    spec = getattr(request.module, "SERVER", None) or ServerSpec()
    name = request.module.__name__.rpartition(".")[2]
    with running(spec.server(tmp_path_factory.mktemp(name) / "data", model_cache)) as s:
        yield s


@pytest.fixture(scope="module")
def live_server(server):
    return server


@pytest.fixture
def thread_server(settings):
    """API + embedded worker in this process (`ServerThread`), on the test's settings."""
    with in_process_server(settings, worker=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(live_server):
    return live_server.client()
