"""Exports that an older version kept as `<data_dir>/exports/<id>/export.json` records are
imported into the `exports` table when the server starts: a finished one reads and downloads as
before; one that was queued or running (its process is gone) reads as failed, `interrupted`, as
the older version showed it after a restart. A real server and HTTP."""

from __future__ import annotations

import json
import time

import httpx

from tests.support.servers import LiveServer


def _old_record(root, eid: str, project: str, **values) -> dict:
    rec = {"id": eid, "object": "model.export", "model": "openft-tiny", "format": "gguf", "quantization": "f16",
           "status": "succeeded", "progress": 1.0, "stage": "done", "created_at": int(time.time()) - 60,
           "finished_at": int(time.time()) - 30, "bytes": 8, "filename": "openft-tiny-f16.gguf", "error": None,
           "project_id": project, "pid": 1, "host": "old-host", "heartbeat_at": time.time() - 30, **values}
    folder = root / eid
    folder.mkdir(parents=True)
    (folder / "export.json").write_text(json.dumps(rec))
    return rec


def test_export_records_of_an_older_version_are_imported(tmp_path, model_cache):
    data = tmp_path / "data"
    server = LiveServer(data, model_cache, env={"OPENFT_EMBEDDED_WORKER": "false"})
    # the admin key's project: the server makes it at its first start
    server.start().stop()
    db = server.db()
    try:
        import sqlalchemy as sa

        from openft.store.db import projects

        with db.connect() as conn:
            project = conn.execute(sa.select(projects.c.id)).scalars().first()
    finally:
        db.dispose()
    root = data / "exports"
    done = _old_record(root, "export-" + "a" * 24, project)
    (root / done["id"] / done["filename"]).write_bytes(b"GGUFdata")
    running = _old_record(root, "export-" + "b" * 24, project, status="running", progress=0.4, stage="merging",
                          finished_at=None, bytes=None, filename=None, created_at=int(time.time()))
    _old_record(root, "export-" + "c" * 24, "another-project")

    server = LiveServer(data, model_cache, env={"OPENFT_EMBEDDED_WORKER": "false"}).start()
    try:
        http = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"},
                            timeout=60)
        public = ("id", "object", "model", "format", "quantization", "status", "progress", "stage", "created_at",
                  "finished_at", "bytes", "filename", "error")
        assert http.get(f"/exports/{done['id']}").json() == {k: done[k] for k in public}
        assert http.get(f"/exports/{done['id']}/content").content == b"GGUFdata"
        got = http.get(f"/exports/{running['id']}").json()
        assert got["status"] == "failed" and got["error"]["code"] == "interrupted", got
        listed = [e["id"] for e in http.get("/exports").json()["data"]]
        assert listed == [running["id"], done["id"]]  # newest first; another project's is not listed
        assert http.delete(f"/exports/{done['id']}").status_code == 200
        assert not (root / done["id"]).exists()
    finally:
        server.stop()
    # a second start imports nothing again (the deleted one stays deleted)
    server = LiveServer(data, model_cache, env={"OPENFT_EMBEDDED_WORKER": "false"}).start()
    try:
        http = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"},
                            timeout=60)
        assert [e["id"] for e in http.get("/exports").json()["data"]] == [running["id"]]
    finally:
        server.stop()


def test_migration_7_adds_the_exports_table_to_an_old_database(v1_database):
    import sqlalchemy as sa

    from openft.store import db as dbmod

    engine, old = v1_database
    assert "exports" not in old
    assert 7 in dbmod.migrate(engine)
    assert "exports" in sa.inspect(engine).get_table_names()
    assert dbmod.migrate(engine) == []
