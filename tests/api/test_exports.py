"""Model metadata and model exports (openft extensions) against a live server on openft-tiny:
base models carry context_length / parameters / size_bytes read from their files; an export runs
in the background (a row the embedded worker runs under a lease) with progress and its content
downloads (a real GGUF, a tar of a merged HF folder); bad input is a 400 naming the param;
another project sees none of it."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import LiveServer, ServerSpec
from tests.support.wait import wait_until

SERVER = ServerSpec()  # exports run on the worker: the embedded one


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"},
                      timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def other_http(server):
    _, key = server.new_key("other-project")
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        yield c


def _expected_tiny(tiny_model_dir: str) -> dict:
    """What the tiny model's own files say: config's context, tensor elements, bytes on disk."""
    folder = Path(tiny_model_dir)
    params = size = 0
    for f in folder.glob("*.safetensors"):
        size += f.stat().st_size
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for k, t in header.items():
            if k != "__metadata__":
                n = 1
                for d in t["shape"]:
                    n *= d
                params += n
    ctx = json.loads((folder / "config.json").read_text())["max_position_embeddings"]
    return {"context_length": ctx, "parameters": params, "size_bytes": size}


def test_base_models_carry_metadata(server, http, tiny_model_dir):
    want = _expected_tiny(tiny_model_dir)
    assert want["context_length"] == 2048 and 3_000_000 < want["parameters"] < 3_500_000
    listed = {m["id"]: m for m in http.get("/models").json()["data"]}
    tiny = listed["openft-tiny"]
    assert {k: tiny[k] for k in want} == want
    got = http.get("/models/openft-tiny").json()
    assert {k: got[k] for k in want} == want and got["owned_by"] == "system"
    # The SDK still reads the object (the extension fields ride along).
    m = server.client().models.retrieve("openft-tiny")
    assert m.id == "openft-tiny" and m.model_extra["context_length"] == 2048


def _wait(http, export_id: str, timeout: float = 240) -> tuple[dict, list[float]]:
    seen: list[float] = []

    def finished():
        e = http.get(f"/exports/{export_id}").json()
        seen.append(e["progress"])
        return e if e["status"] in ("succeeded", "failed") else None

    return wait_until(finished, timeout, what=f"export {export_id} to finish"), seen


def test_gguf_export_runs_in_background_and_downloads(http, other_http):
    r = http.post("/models/openft-tiny/exports", json={"format": "gguf", "quantization": "f16"})
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["object"] == "model.export" and e["status"] == "queued" and e["progress"] == 0.0
    assert (e["model"], e["format"], e["quantization"]) == ("openft-tiny", "gguf", "f16")
    # The API answers while the export runs.
    t = time.time()
    assert http.get("/models").status_code == 200 and time.time() - t < 5
    done, seen = _wait(http, e["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == 1.0 and seen == sorted(seen), seen
    assert done["filename"].endswith("-f16.gguf")
    content = http.get(f"/exports/{e['id']}/content")
    assert content.status_code == 200 and content.content[:4] == b"GGUF"
    assert len(content.content) == done["bytes"]
    assert e["id"] in [x["id"] for x in http.get("/exports", params={"model": "openft-tiny"}).json()["data"]]
    # Another project's key sees nothing of it.
    assert other_http.get(f"/exports/{e['id']}").status_code == 404
    assert other_http.get(f"/exports/{e['id']}/content").status_code == 404
    assert other_http.get("/exports").json()["data"] == []
    assert other_http.delete(f"/exports/{e['id']}").status_code == 404
    # Deleting removes it.
    assert http.delete(f"/exports/{e['id']}").json()["deleted"] is True
    assert http.get(f"/exports/{e['id']}").status_code == 404


def test_merged_export_is_a_tar_of_a_hf_folder(http):
    e = http.post("/models/openft-tiny/exports", json={"format": "merged"}).json()
    assert e["quantization"] is None
    done, _ = _wait(http, e["id"])
    assert done["status"] == "succeeded", done["error"]
    content = http.get(f"/exports/{e['id']}/content").content
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names


@pytest.mark.parametrize("body,param", [
    ({"format": "onnx"}, "format"),
    ({}, "format"),
    ({"format": "gguf", "quantization": "q4_k"}, "quantization"),
    ({"format": "merged", "quantization": "q8_0"}, "quantization"),
    ({"format": "peft"}, "format"),  # a base model has no adapter
    ({"format": "gguf", "extra": 1}, "extra"),
])
def test_bad_export_requests_name_the_param(http, body, param):
    r = http.post("/models/openft-tiny/exports", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_unknown_model_and_export_ids(http):
    r = http.post("/models/ft:nope:x:y:z/exports", json={"format": "merged"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    for bad in ("export-nope", "export.json", "export-" + "a" * 24):
        r = http.get(f"/exports/{bad}/content")
        assert r.status_code == 404 and r.json()["error"]["param"] == "export_id", bad


def test_an_export_queued_when_its_server_stops_runs_after_the_restart(tmp_path, model_cache):
    """An export survives a restart: queued on a server that stops before any worker ran it (no
    worker there), it is run by the next server's worker, and stopping does not wait for it."""
    data = tmp_path / "data"
    first = LiveServer(data, model_cache, env={"OPENFT_EMBEDDED_WORKER": "false"}).start()
    try:
        headers = {"Authorization": f"Bearer {first.api_key}"}
        e = httpx.post(f"{first.base_url}/models/openft-tiny/exports", json={"format": "merged"}, headers=headers,
                       timeout=60).json()
    finally:
        t = time.time()
        first.stop()
    assert time.time() - t < 20
    second = LiveServer(data, model_cache).start()
    try:
        http = httpx.Client(base_url=second.base_url, headers=headers, timeout=60)
        done, _ = _wait(http, e["id"])
        assert done["status"] == "succeeded", done
        assert {k: done[k] for k in ("id", "model", "format", "created_at")} == \
            {k: e[k] for k in ("id", "model", "format", "created_at")}
        assert http.delete(f"/exports/{e['id']}").status_code == 200
    finally:
        second.stop()


def test_an_export_running_in_another_server_reads_as_running_there(tmp_path, model_cache):
    """Two servers on one data folder and database (as with PostgreSQL): exports queued in the
    first read as queued/running from the second, not failed, and their content downloads from
    either once done. Another process's lease is alive until it expires: an export held by a
    worker elsewhere reads as running while its heartbeat is fresh, and is taken over (run again,
    to success) once it is stale."""
    data = tmp_path / "data"
    first = LiveServer(data, model_cache).start()
    second = LiveServer(data, model_cache, env={"OPENFT_EMBEDDED_WORKER": "false"}).start()
    try:
        headers = {"Authorization": f"Bearer {first.api_key}"}
        ids = [httpx.post(f"{first.base_url}/models/openft-tiny/exports", json={"format": fmt}, headers=headers,
                          timeout=60).json()["id"] for fmt in ("gguf", "merged", "gguf")]
        seen = httpx.get(f"{second.base_url}/exports/{ids[-1]}", headers=headers, timeout=60).json()
        assert seen["status"] in ("queued", "running"), seen   # the first server is still on ids[0]

        def all_done():
            got = [httpx.get(f"{second.base_url}/exports/{i}", headers=headers, timeout=60).json() for i in ids]
            return None if any(g["status"] in ("queued", "running") for g in got) else got

        got = wait_until(all_done, 180, what="the three exports to finish", interval=0.3)
        assert [g["status"] for g in got] == ["succeeded"] * 3, got
        r = httpx.get(f"{second.base_url}/exports/{ids[0]}/content", headers=headers, timeout=60)
        assert r.status_code == 200 and r.content[:4] == b"GGUF"

        # held by a worker on another host: running while its lease is fresh, taken over once stale
        import sqlalchemy as sa

        from openft.store.db import exports

        db = first.db()
        try:
            with db.begin() as conn:
                conn.execute(exports.update().where(exports.c.id == ids[1]).values(
                    status="running", worker_id="another-host:1:abc", heartbeat_at=time.time(), progress=0.5,
                    stage="merging", finished_at=None))
            got = httpx.get(f"{second.base_url}/exports/{ids[1]}", headers=headers, timeout=60).json()
            assert got["status"] == "running" and got["stage"] == "merging", got
            with db.begin() as conn:
                conn.execute(exports.update().where(exports.c.id == ids[1]).values(heartbeat_at=time.time() - 3600))
            done, _ = _wait(httpx.Client(base_url=second.base_url, headers=headers, timeout=60), ids[1])
            assert done["status"] == "succeeded" and done["error"] is None, done
            with db.connect() as conn:
                row = conn.execute(sa.select(exports.c.worker_id, exports.c.attempts)
                                   .where(exports.c.id == ids[1])).one()
            assert row.attempts == 2 and row.worker_id is None
        finally:
            db.dispose()
    finally:
        second.stop()
        first.stop()
