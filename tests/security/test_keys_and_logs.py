"""Secrets (issue 9, finding 6): keys are stored as HMAC-SHA256 keyed by the server's secret
(the database alone does not let anyone test guesses), SHA-256 rows from before keep working and
are upgraded on first use, and no credential reaches the server's log."""

from __future__ import annotations

import hashlib
import time

import httpx
import sqlalchemy as sa

from tests.support.wait import wait_until


def _rows(server):
    from openft.store.db import api_keys

    db = server.db()
    try:
        with db.connect() as conn:
            return {r.id: r for r in conn.execute(sa.select(api_keys))}
    finally:
        db.dispose()


def test_keys_are_not_stored_as_plain_sha256(sec_server):
    key = sec_server.new_key("hash-check")[1]
    plain = hashlib.sha256(key.encode()).hexdigest()
    admin_plain = hashlib.sha256(sec_server.api_key.encode()).hexdigest()
    rows = _rows(sec_server).values()
    assert all(r.key_sha256 not in (plain, admin_plain) for r in rows)
    assert all(r.key_hash_kind == "hmac-sha256" for r in rows)
    assert sec_server.client(key).models.list().data  # and the key works


def test_legacy_sha256_key_works_and_is_upgraded(sec_server):
    from openft.ids import new_id
    from openft.store.db import api_keys

    key = "sk-admin"  # an operator-chosen key: a dictionary word against plain SHA-256
    kid = new_id("key_")
    db = sec_server.db()
    try:
        with db.begin() as conn:  # a row as a server before migration 3 stored it
            conn.execute(api_keys.insert().values(id=kid, project_id="proj_default", name="old",
                                                  key_sha256=hashlib.sha256(key.encode()).hexdigest(),
                                                  key_hash_kind="sha256", created_at=int(time.time())))
    finally:
        db.dispose()
    assert sec_server.client(key).models.list().data
    row = _rows(sec_server)[kid]
    assert row.key_hash_kind == "hmac-sha256" and row.key_sha256 != hashlib.sha256(key.encode()).hexdigest()
    assert sec_server.client(key).models.list().data  # still works after the upgrade


def test_migration_3_adds_the_hash_kind_to_an_old_database(v1_database):
    from openft.store import db as dbmod

    engine, old = v1_database  # api_keys without key_hash_kind
    with engine.begin() as conn:
        conn.execute(old["api_keys"].insert().values(id="key_1", project_id="proj_default", key_sha256="abc",
                                                     name="admin", created_at=1))
    assert dbmod.migrate(engine)[:2] == [2, 3]  # later migrations follow
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT key_hash_kind FROM api_keys")).scalar() == "sha256"


def test_credentials_never_reach_the_log(sec_server):
    secret = "sk-openft-leakcheck0123456789"
    headers = {"Authorization": f"Bearer {sec_server.api_key}"}
    for params in ({"api_key": secret}, {"key": secret, "limit": 1}, {"access_token": secret},
                   {"token": secret}):
        httpx.get(f"{sec_server.base_url}/files", params=params, headers=headers)
    httpx.get(f"{sec_server.base_url}/models", headers={"Authorization": f"Bearer {secret}"})  # a 401
    httpx.get(f"{sec_server.base_url}/models?api_key={secret}")
    marker = f"/v1/files?limit=7&after=marker-{time.time_ns()}"
    httpx.get(f"http://127.0.0.1:{sec_server.port}{marker}", headers=headers)
    wait_until(lambda: marker in sec_server.log.read_text(errors="replace"), 10,  # the access log is written
               what="the access log to show the marker request")
    text = sec_server.log.read_text(errors="replace")
    assert "leakcheck" not in text and sec_server.api_key not in text
    assert "api_key=[REDACTED]" in text and "access_token=[REDACTED]" in text


def test_key_secret_from_the_environment_or_a_file_made_once(tmp_path):
    import os
    import stat

    from openft.config import Settings
    from openft.store.auth import hash_key, key_secret

    env = Settings(data_dir=tmp_path / "a", key_secret="operator-chosen-secret")
    assert key_secret(env) == b"operator-chosen-secret" and not (tmp_path / "a" / "key_secret").exists()
    made = Settings(data_dir=tmp_path / "b")
    first = key_secret(made)
    assert len(first) == 64 and key_secret(made) == first  # generated once, then read
    assert stat.S_IMODE(os.stat(tmp_path / "b" / "key_secret").st_mode) == 0o600
    assert hash_key("sk-x", first) != hash_key("sk-x", key_secret(Settings(data_dir=tmp_path / "c")))
