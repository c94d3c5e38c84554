"""API keys and projects: every key belongs to one project, every object to the key's project.

Keys are stored only as HMAC-SHA256 digests keyed by the server's secret (`key_secret`:
OPENFT_KEY_SECRET, or 32 random bytes generated once into `<data_dir>/key_secret`, mode 0600),
so a copy of the database alone does not let anyone test guesses of a key. Rows from before
(plain SHA-256, key_hash_kind "sha256") keep working and are rewritten as HMAC on their first
successful use. The admin key (settings.api_key, or one generated at first start and written to
`<data_dir>/admin_key` with mode 0600) belongs to the default project.
Knows nothing about HTTP; the API's auth dependency calls `project_for_key`.
"""

from __future__ import annotations

import hashlib
import hmac
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
HMAC_KIND = "hmac-sha256"
LEGACY_KIND = "sha256"


def hash_key(key: str, secret: bytes) -> str:
    return hmac.new(secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def legacy_hash(key: str) -> str:
    """How keys were stored before migration 3 (unsalted SHA-256); only read, never written."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_secret_file(settings: Settings) -> Path:
    return settings.layout.key_secret


def key_secret(settings: Settings) -> bytes:
    """The secret keys are hashed with: OPENFT_KEY_SECRET, else `<data_dir>/key_secret`, created
    (0600, 32 random bytes as hex) by the first process that needs it. Servers sharing one
    database on several machines must share it (set OPENFT_KEY_SECRET on each)."""
    if settings.key_secret:
        return settings.key_secret.encode("utf-8")
    path = key_secret_file(settings)
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".key_secret.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # atomic and never overwrites: a racing process's secret wins if first
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    value = path.read_text().strip()
    if len(value) < 32:
        raise RuntimeError(f"{path} holds no usable secret (expected 64 hex characters); remove it only if no "
                           "API key was created since it was written, since every key hashed with it stops working.")
    return value.encode("ascii")


def admin_key_file(settings: Settings) -> Path:
    return settings.layout.admin_key


def _ensure_project(conn: sa.Connection, project_id: str, name: str) -> None:
    if conn.execute(sa.select(projects.c.id).where(projects.c.id == project_id)).first() is None:
        conn.execute(projects.insert().values(id=project_id, name=name, created_at=int(time.time())))


def _add_key(conn: sa.Connection, project_id: str, key: str, name: str, secret: bytes | None) -> None:
    digest, kind = (hash_key(key, secret), HMAC_KIND) if secret is not None else (legacy_hash(key), LEGACY_KIND)
    conn.execute(api_keys.insert().values(id=new_id("key_"), project_id=project_id, key_sha256=digest,
                                          key_hash_kind=kind, name=name, created_at=int(time.time())))


def _matches(row, key: str, secret: bytes) -> bool:
    digest = hash_key(key, secret) if row.key_hash_kind == HMAC_KIND else legacy_hash(key)
    return hmac.compare_digest(row.key_sha256, digest)


def ensure_admin_key(settings: Settings, engine: Engine) -> str | None:
    """Make sure the default project and its admin key exist.

    With settings.api_key: that key becomes the (only) admin key; returns None.
    Without: keeps a stored admin key if there is one (returns None), else generates one, stores
    its hash, writes it to `<data_dir>/admin_key` (0600) and returns it so the caller can print it.
    """
    secret = key_secret(settings)
    with engine.begin() as conn:
        _ensure_project(conn, DEFAULT_PROJECT_ID, DEFAULT_PROJECT_NAME)
        admin_rows = conn.execute(sa.select(api_keys).where(
            api_keys.c.project_id == DEFAULT_PROJECT_ID, api_keys.c.name == ADMIN_KEY_NAME)).all()
        if settings.api_key:
            keep = [r for r in admin_rows if _matches(r, settings.api_key, secret)]
            stale = [r.id for r in admin_rows if r not in keep]
            if stale:
                conn.execute(api_keys.delete().where(api_keys.c.id.in_(stale)))
            if keep:
                _upgrade(conn, keep[0], settings.api_key, secret)
            else:
                conn.execute(api_keys.delete().where(api_keys.c.key_sha256.in_(
                    [hash_key(settings.api_key, secret), legacy_hash(settings.api_key)])))
                _add_key(conn, DEFAULT_PROJECT_ID, settings.api_key, ADMIN_KEY_NAME, secret)
            return None
        if admin_rows:
            return None
        key = api_key()
        _add_key(conn, DEFAULT_PROJECT_ID, key, ADMIN_KEY_NAME, secret)
    path = admin_key_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.replace(tmp, path)
    return key


def create_key(engine: Engine, project_name: str, *, key_name: str = "",
               secret: bytes | None = None) -> tuple[str, str]:
    """A new key for the project named `project_name` (created when missing): (project_id, key).
    Pass the server's `key_secret(settings)`; without it the key is stored as plain SHA-256 and
    becomes HMAC on its first use."""
    key = api_key()
    with engine.begin() as conn:
        row = conn.execute(sa.select(projects.c.id).where(projects.c.name == project_name)
                           .order_by(projects.c.created_at)).first()
        project_id = row.id if row else new_id("proj_")
        if row is None:
            _ensure_project(conn, project_id, project_name)
        _add_key(conn, project_id, key, key_name, secret)
    return project_id, key


def project_for_key(engine: Engine, key: str, secret: bytes) -> str | None:
    """The project of `key`, or None. A match on a legacy SHA-256 row rewrites it as HMAC."""
    if not key:
        return None
    with engine.connect() as conn:
        project = conn.execute(sa.select(api_keys.c.project_id).where(
            api_keys.c.key_sha256 == hash_key(key, secret), api_keys.c.key_hash_kind == HMAC_KIND)).scalar()
        if project is not None:
            return project
        row = conn.execute(sa.select(api_keys).where(api_keys.c.key_sha256 == legacy_hash(key),
                                                     api_keys.c.key_hash_kind == LEGACY_KIND)).first()
    if row is None:
        return None
    try:
        with engine.begin() as conn:
            _upgrade(conn, row, key, secret)
    except sa.exc.OperationalError:  # a read-only database still lets the key in; upgraded next time
        pass
    return row.project_id


def _upgrade(conn: sa.Connection, row, key: str, secret: bytes) -> None:
    if row.key_hash_kind != HMAC_KIND:
        conn.execute(api_keys.update().where(api_keys.c.id == row.id, api_keys.c.key_hash_kind == row.key_hash_kind)
                     .values(key_sha256=hash_key(key, secret), key_hash_kind=HMAC_KIND))
