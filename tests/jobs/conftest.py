"""Job-system fixtures: a migrated database in the test's data folder (rows: tests/support/jobs.py).

Every test here runs on SQLite; with `OPENFT_TEST_POSTGRES_URL` set (a server URL such as
`postgresql+psycopg://postgres@127.0.0.1:5432/postgres`) each also runs on a fresh PostgreSQL
database, worker and runner processes included.
"""

from __future__ import annotations

import os
import secrets
import time

import pytest
import sqlalchemy as sa

from openft.store.db import make_engine, migrate, projects
from tests.support.jobs import PROJECT

PG_URL = os.environ.get("OPENFT_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite"] + (["postgres"] if PG_URL else []))
def db_backend(request) -> str:
    return request.param


@pytest.fixture
def settings(settings, db_backend):
    """The shared settings, on a fresh PostgreSQL database when db_backend is postgres."""
    if db_backend == "sqlite":
        yield settings
        return
    name = "openft_test_" + secrets.token_hex(6)
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    yield settings.model_copy(update={"database_url": url})
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def engine(settings):
    settings.ensure_dirs()
    eng = make_engine(settings.resolved_database_url())
    migrate(eng)
    with eng.begin() as conn:
        conn.execute(projects.insert().values(id=PROJECT, name="test", created_at=int(time.time())))
    yield eng
    eng.dispose()
