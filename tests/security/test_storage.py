"""Files the server writes (issue 9, findings 5 and 6): owner-only modes, existing files
tightened at start, abandoned upload files removed at start (never real blobs), and storage that
refuses writes answered with a clear 503 in OpenAI's shape instead of a traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import threading

import httpx
import openai
import pytest

from tests.support.data import chat_jsonl, upload
from tests.support.servers import ApiServer
from tests.support.wait import wait_until


def loose_files(root) -> list[str]:
    out = []
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            p = os.path.join(folder, name)
            mode = os.lstat(p).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                out.append(f"{oct(stat.S_IMODE(mode))} {os.path.relpath(p, root)}")
    return out


def test_everything_written_is_owner_only(sec_server, two_projects):
    a, _, _ = two_projects
    upload(a, chat_jsonl(seed=7))
    assert (sec_server.data_dir / "openft.db").exists() and (sec_server.data_dir / "key_secret").exists()
    assert loose_files(sec_server.data_dir) == []
    assert stat.S_IMODE(os.stat(sec_server.data_dir).st_mode) == 0o700


def _server(data_dir, model_cache):
    return ApiServer(data_dir, model_cache, env={"OPENFT_EMBEDDED_WORKER": "false"})


def test_kill_mid_upload_leaves_nothing_after_restart(tmp_path, model_cache):
    data = tmp_path / "data"
    server = _server(data, model_cache).start()
    kept = upload(server.client(), chat_jsonl())
    blobs = data / "blobs"
    real = [p for p in blobs.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(real) == 1
    release = threading.Event()
    boundary = "sec-boundary"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(8):
            yield b'{"messages": []}\n' * 4096
        release.wait(60)  # the server dies while the body is still coming
        yield f"\r\n--{boundary}--\r\n".encode()

    def post():
        try:
            httpx.post(f"{server.base_url}/files", content=body(), timeout=60,
                       headers={"Authorization": f"Bearer {server.api_key}",
                                "Content-Type": f"multipart/form-data; boundary={boundary}"})
        except httpx.HTTPError:
            pass

    t = threading.Thread(target=post, daemon=True)
    t.start()
    wait_until(lambda: [p for p in blobs.glob(".upload-*") if p.stat().st_size > 0], 30, interval=0.05,
               what="the upload to reach the blob store")
    server.proc.kill()
    server.proc.wait()
    release.set()
    t.join(30)
    server.stop()
    assert list(blobs.glob(".upload-*")), "kill -9 left no temporary file: the test proves nothing"
    os.chmod(data / "openft.db", 0o644)  # as a version before owner-only modes left it
    os.chmod(real[0], 0o644)

    again = _server(data, model_cache).start()
    try:
        assert list(blobs.glob(".upload-*")) == []
        assert again.client().files.content(kept.id).content == chat_jsonl()
        assert stat.S_IMODE(os.stat(data / "openft.db").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(real[0]).st_mode) == 0o600
        assert loose_files(data) == []
    finally:
        again.stop()


def test_a_live_upload_temp_file_is_not_removed(tmp_path):
    """Another process sharing the data dir may be writing: its locked temp file stays."""
    import fcntl

    from openft.store.blobs import BlobStore

    store = BlobStore(tmp_path / "blobs")
    live = store.root / ".upload-live"
    dead = store.root / ".upload-dead"
    live.write_bytes(b"x" * 10)
    dead.write_bytes(b"y" * 10)
    with open(live, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        assert store.remove_stale_uploads() == [".upload-dead"]
    assert live.exists() and not dead.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A data dir on its own 24 MB tmpfs (needs root to mount): `fill()` uses up its space."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs for the data dir")

    def fill():
        with open(mnt / "filler", "wb", buffering=0) as fh:
            for size in (1 << 20, 4096, 1):
                try:
                    while True:
                        fh.write(b"\0" * size)
                except OSError:
                    pass

    yield mnt / "data", fill
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_storage_refusing_writes_is_a_clear_503(small_disk, model_cache):
    data, fill = small_disk
    server = _server(data, model_cache).start()
    try:
        api = server.client()
        f = upload(api, chat_jsonl())
        fill()
        for call in (lambda: upload(api, chat_jsonl(seed=3) * 40),
                     lambda: api.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id)):
            with pytest.raises(openai.APIStatusError) as e:
                call()
            assert e.value.status_code == 503, e.value.body
            body = e.value.body
            assert body["code"] == "storage_unavailable" and "not writable" in body["message"], body
            assert str(data) not in body["message"] and "Traceback" not in body["message"]
        assert api.files.retrieve(f.id).id == f.id  # reading still works
    finally:
        server.stop()


def test_read_only_data_dir_is_a_clear_503(tmp_path, settings):
    """The data dir's file system turns read-only under a server (the app in-process: a server
    process cannot be started on a read-only data dir, and a mount with files open for writing
    cannot be remounted read-only)."""
    from fastapi.testclient import TestClient

    from openft.api.app import create_app
    from openft.api.server import prepare

    mnt = tmp_path / "ro"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs and remount it read-only")
    umask = os.umask(0o022)  # prepare() sets the server's umask on this (test) process: put it back after
    os.umask(umask)
    try:
        settings = settings.model_copy(update={"data_dir": mnt / "data"})
        db, _ = prepare(settings)
        client = TestClient(create_app(settings, db=db), raise_server_exceptions=False,
                            headers={"Authorization": f"Bearer {settings.api_key}"})
        ok = client.post("/v1/files", files={"file": ("t.jsonl", chat_jsonl())}, data={"purpose": "fine-tune"})
        assert ok.status_code == 200, ok.text
        db.dispose()  # no file open for writing, so the mount can turn read-only
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        refused = [client.post("/v1/files", files={"file": ("u.jsonl", chat_jsonl(seed=2))},
                               data={"purpose": "fine-tune"}),
                   client.post("/v1/fine_tuning/jobs", json={"model": "openft-tiny", "training_file": ok.json()["id"]})]
        for r in refused:
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "storage_unavailable" and "not writable" in err["message"], err
            assert str(mnt) not in err["message"]
        db.dispose()
    finally:
        os.umask(umask)
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
