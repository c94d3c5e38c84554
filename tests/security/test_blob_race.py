"""Shared content-addressed blobs (issue 21, section 4, item 5): two projects upload the same bytes,
so both files name one blob. Deleting one file must never leave the other pointing at a deleted
blob, whichever way the delete and the identical upload interleave: (1) the whole delete runs
after the upload stored its content and before it inserted its row (forced at `file_id`, which the
upload calls in between); (2) the upload runs while the delete holds the blob between counting
the rows and unlinking (`BlobStore.before_unlink`, a fault point). On SQLite and PostgreSQL."""

from __future__ import annotations

import io
import threading

import openai
import pytest

from openft.api.routes import files as files_route
from openft.store.auth import create_key, key_secret
from openft.store.blobs import BlobStore
from tests.jobs.conftest import db_backend, settings  # noqa: F401 (fixtures: SQLite, and PostgreSQL when set)
from tests.support.servers import in_process_server
from tests.support.wait import wait_until

CONTENT = b'{"messages": [{"role": "user", "content": "same"}, {"role": "assistant", "content": "bytes"}]}\n'


@pytest.fixture
def two(settings):  # noqa: F811
    with in_process_server(settings, worker=False) as srv:
        keys = [create_key(srv.db, name, secret=key_secret(settings)) for name in ("project-a", "project-b")]
        a, b = (openai.OpenAI(base_url=srv.base_url, api_key=k, max_retries=0, timeout=60) for _, k in keys)
        yield srv, a, b, keys[0][0]


def _upload(client, name="same.jsonl"):
    return client.files.create(file=(name, io.BytesIO(CONTENT)), purpose="fine-tune")


def test_a_delete_between_an_identical_uploads_store_and_insert_keeps_the_blob(two, monkeypatch):
    srv, a, b, project_a = two
    mine = _upload(a)
    state = srv.app.state.openft
    real_file_id = files_route.file_id

    def delete_then_id():  # B's upload has stored (deduplicated) its bytes; A's file goes now
        files_route.delete_file(mine.id, state, project_a)
        return real_file_id()

    monkeypatch.setattr(files_route, "file_id", delete_then_id)
    theirs = _upload(b)
    monkeypatch.setattr(files_route, "file_id", real_file_id)
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(mine.id)
    assert b.files.content(theirs.id).read() == CONTENT


def test_an_identical_upload_waits_for_a_delete_holding_the_blob(two, monkeypatch):
    srv, a, b, _ = two
    mine = _upload(a)
    at_point, results = threading.Event(), {}

    def upload_b():
        results["file"] = _upload(b)

    def hold(sha):  # the delete counted no other row and holds the blob's lock; B uploads now
        at_point.set()
        worker = threading.Thread(target=upload_b)
        worker.start()
        results["thread"] = worker
        worker.join(0.5)  # B cannot insert its row while the delete holds the lock
        results["done_while_held"] = "file" in results

    monkeypatch.setattr(BlobStore, "before_unlink", hold)
    a.files.delete(mine.id)
    assert at_point.is_set()
    results["thread"].join(60)
    assert results["done_while_held"] is False
    theirs = wait_until(lambda: results.get("file"), 60, what="B's upload")
    assert b.files.content(theirs.id).read() == CONTENT


def test_deleting_the_last_file_still_removes_the_blob(two):
    srv, a, b, _ = two
    f1, f2 = _upload(a), _upload(b)
    blob = srv.app.state.openft.blobs.path(__import__("hashlib").sha256(CONTENT).hexdigest())
    a.files.delete(f1.id)
    assert blob.exists()
    b.files.delete(f2.id)
    assert not blob.exists()
    assert not list(blob.parents[1].glob(".pin-*"))  # no pin left behind
