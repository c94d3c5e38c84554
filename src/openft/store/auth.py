"""API keys and projects: every key belongs to one project, every object to the key's project.

Keys are stored as SHA-256 hashes only. The admin key (settings.api_key, or one generated at
first start and written to `<data_dir>/admin_key` with mode 0600) belongs to the default project.
Knows nothing about HTTP; the API's auth dependency calls `project_for_key`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from openft.config import Settings
from openft.ids import api_key, new_id
from openft.store.db import api_keys, projects

DEFAULT_PROJECT_ID = "proj_default"
DEFAULT_PROJECT_NAME = "default"
ADMIN_KEY_NAME = "admin"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def admin_key_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / "admin_key"


def _ensure_project(conn: sa.Connection, project_id: str, name: str) -> None:
    if conn.execute(sa.select(projects.c.id).where(projects.c.id == project_id)).first() is None:
        conn.execute(projects.insert().values(id=project_id, name=name, created_at=int(time.time())))


def _add_key(conn: sa.Connection, project_id: str, key: str, name: str) -> None:
    conn.execute(api_keys.insert().values(id=new_id("key_"), project_id=project_id, key_sha256=hash_key(key),
                                          name=name, created_at=int(time.time())))


def ensure_admin_key(settings: Settings, engine: Engine) -> str | None:
    """Make sure the default project and its admin key exist.

    With settings.api_key: that key becomes the (only) admin key; returns None.
    Without: keeps a stored admin key if there is one (returns None), else generates one, stores
    its hash, writes it to `<data_dir>/admin_key` (0600) and returns it so the caller can print it.
    """
    with engine.begin() as conn:
        _ensure_project(conn, DEFAULT_PROJECT_ID, DEFAULT_PROJECT_NAME)
        admin_rows = conn.execute(sa.select(api_keys.c.id, api_keys.c.key_sha256).where(
            api_keys.c.project_id == DEFAULT_PROJECT_ID, api_keys.c.name == ADMIN_KEY_NAME)).all()
        if settings.api_key:
            wanted = hash_key(settings.api_key)
            stale = [r.id for r in admin_rows if r.key_sha256 != wanted]
            if stale:
                conn.execute(api_keys.delete().where(api_keys.c.id.in_(stale)))
            if not any(r.key_sha256 == wanted for r in admin_rows):
                conn.execute(api_keys.delete().where(api_keys.c.key_sha256 == wanted))
                _add_key(conn, DEFAULT_PROJECT_ID, settings.api_key, ADMIN_KEY_NAME)
            return None
        if admin_rows:
            return None
        key = api_key()
        _add_key(conn, DEFAULT_PROJECT_ID, key, ADMIN_KEY_NAME)
    path = admin_key_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".admin_key.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.replace(tmp, path)
    return key


def create_key(engine: Engine, project_name: str, *, key_name: str = "") -> tuple[str, str]:
    """A new key for the project named `project_name` (created when missing): (project_id, key)."""
    key = api_key()
    with engine.begin() as conn:
        row = conn.execute(sa.select(projects.c.id).where(projects.c.name == project_name)
                           .order_by(projects.c.created_at)).first()
        project_id = row.id if row else new_id("proj_")
        if row is None:
            _ensure_project(conn, project_id, project_name)
        _add_key(conn, project_id, key, key_name)
    return project_id, key


def project_for_key(engine: Engine, key: str) -> str | None:
    if not key:
        return None
    with engine.connect() as conn:
        return conn.execute(sa.select(api_keys.c.project_id).where(api_keys.c.key_sha256 == hash_key(key))).scalar()
