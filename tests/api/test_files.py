"""Files API through the official SDK: upload, list (cursor, order, purpose), retrieve, content,
delete, dedup of identical content, size limit, purposes, isolation between projects."""

from __future__ import annotations

import io
import json

import openai
import pytest


def _jsonl(n: int = 3, tag: str = "") -> bytes:
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}{tag}"},
                                            {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                   for i in range(n)).encode()


def test_create_retrieve_content_delete(api, api_server):
    data = _jsonl(3, "crud")
    f = api.files.create(file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune")
    assert f.id.startswith("file-") and f.object == "file"
    assert (f.bytes, f.filename, f.purpose, f.status) == (len(data), "train.jsonl", "fine-tune", "processed")
    assert f.created_at > 0
    assert api.files.retrieve(f.id).model_dump() == f.model_dump()
    assert api.files.content(f.id).content == data
    assert api.files.retrieve_content(f.id) == data.decode()
    deleted = api.files.delete(f.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (f.id, "file", True)
    with pytest.raises(openai.NotFoundError) as e:
        api.files.retrieve(f.id)
    assert e.value.body["param"] == "id" and f.id in e.value.body["message"]


def test_identical_content_is_stored_once(api, api_server):
    data = _jsonl(4, "dedup")
    a = api.files.create(file=("a.jsonl", io.BytesIO(data)), purpose="fine-tune")
    b = api.files.create(file=("b.jsonl", io.BytesIO(data)), purpose="user_data")
    assert a.id != b.id
    blobs = [p for p in (api_server.data_dir / "blobs").rglob("*") if p.is_file() and p.read_bytes() == data]
    assert len(blobs) == 1
    api.files.delete(a.id)  # the blob stays while another file uses it
    assert api.files.content(b.id).content == data
    api.files.delete(b.id)
    assert not blobs[0].exists()


def test_list_pagination_order_and_purpose(api):
    ids = [api.files.create(file=(f"p{i}.jsonl", io.BytesIO(_jsonl(1, f"page{i}"))), purpose="evals").id
           for i in range(5)]
    page = api.files.list(purpose="evals", limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2]
    assert page.has_more is True
    raw = api.files.with_raw_response.list(purpose="evals", limit=2).http_response.json()
    assert raw["object"] == "list" and raw["first_id"] == ids[4] and raw["last_id"] == ids[3]
    assert [f.id for f in api.files.list(purpose="evals", limit=2)] == ids[::-1]
    asc = api.files.list(purpose="evals", order="asc", after=ids[1])
    assert [f.id for f in asc.data] == ids[2:] and asc.has_more is False
    assert all(f.purpose == "evals" for f in api.files.list(purpose="evals"))


@pytest.mark.parametrize("purpose", ["assistants", "batch", "vision", "user_data", "evals"])
def test_other_purposes_accept_any_file_name(api, purpose):
    f = api.files.create(file=("notes.txt", io.BytesIO(b"hello")), purpose=purpose)
    assert f.purpose == purpose


def test_fine_tune_needs_jsonl(api):
    with pytest.raises(openai.BadRequestError) as e:
        api.files.create(file=("train.csv", io.BytesIO(b"a,b\n")), purpose="fine-tune")
    assert e.value.body["param"] == "file" and ".jsonl" in e.value.body["message"]


@pytest.mark.parametrize("content, needle", [
    (b"", "file is empty"),
    (b"\n\n  \n", "no examples"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "line 1 is not UTF-8 text"),
    ('{"messages": []}\n'.encode("utf-16"), "line 1 is not UTF-8 text"),
    ("café au lait\n".encode("latin-1"), "line 1 is not UTF-8 text"),
    (b"prompt,completion\nhi,there\n", "line 1 is not valid JSON"),
    (b"\n[1, 2]\n", "line 2 is not a JSON object"),
])
def test_fine_tune_upload_that_is_not_jsonl_is_refused_saying_why(api, api_server, content, needle):
    blobs = api_server.data_dir / "blobs"
    before = {p for p in blobs.rglob("*") if p.is_file()}
    with pytest.raises(openai.BadRequestError) as e:
        api.files.create(file=("train.jsonl", io.BytesIO(content)), purpose="fine-tune")
    body = e.value.body
    assert body["param"] == "file" and body["code"] == "invalid_file_format" and needle in body["message"], body
    assert {p for p in blobs.rglob("*") if p.is_file()} == before  # nothing kept of a refused upload
    # a later line that is broken is the job validation's to report, with its line number
    ok = api.files.create(file=("later.jsonl", io.BytesIO(_jsonl(2) + b"{broken\n")), purpose="fine-tune")
    assert ok.status == "processed"


def test_unknown_purpose(api):
    with pytest.raises(openai.BadRequestError) as e:
        api.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="training")  # type: ignore[arg-type]
    assert e.value.body["param"] == "purpose"


def test_oversized_upload_is_413(api, api_server):
    before = set((api_server.data_dir / "blobs").rglob("*"))
    with pytest.raises(openai.APIStatusError) as e:
        api.files.create(file=("big.jsonl", io.BytesIO(b"x" * 300_000)), purpose="fine-tune")
    assert e.value.status_code == 413
    assert e.value.body["param"] == "file" and "200000" in e.value.body["message"]
    assert e.value.response.headers.get("x-request-id")
    # a file just over the limit but within the multipart allowance is caught while streaming
    with pytest.raises(openai.APIStatusError) as e:
        api.files.create(file=("big.jsonl", io.BytesIO(b"x" * 200_001)), purpose="fine-tune")
    assert e.value.status_code == 413
    assert set((api_server.data_dir / "blobs").rglob("*")) == before  # nothing half-written


def test_other_project_gets_404(api, other_api):
    f = api.files.create(file=("mine.jsonl", io.BytesIO(_jsonl(1, "mine"))), purpose="fine-tune")
    for call in (lambda: other_api.files.retrieve(f.id), lambda: other_api.files.content(f.id),
                 lambda: other_api.files.delete(f.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert f.id not in [x.id for x in other_api.files.list()]
    assert api.files.retrieve(f.id).id == f.id


def test_expires_after(api):
    f = api.files.create(file=("e.jsonl", io.BytesIO(b"{}\n")), purpose="user_data",
                         expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    b = api.files.create(file=("b.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    assert b.expires_at == b.created_at + 30 * 24 * 3600  # OpenAI's default for batch files
    assert api.files.create(file=("k.jsonl", io.BytesIO(b"{}\n")), purpose="user_data").expires_at is None
    with pytest.raises(openai.BadRequestError) as e:
        api.files.create(file=("e.jsonl", io.BytesIO(b"{}\n")), purpose="user_data",
                         expires_after={"anchor": "created_at", "seconds": 10})
    assert e.value.body["param"] == "expires_after.seconds"


def test_expired_file_is_gone(api, api_server):
    import sqlalchemy as sa

    from openft.store.db import files

    f = api.files.create(file=("old.jsonl", io.BytesIO(b'{"old": 1}\n')), purpose="user_data")
    db = api_server.db()
    with db.begin() as conn:
        conn.execute(sa.update(files).where(files.c.id == f.id).values(expires_at=f.created_at - 1))
    db.dispose()
    with pytest.raises(openai.NotFoundError):
        api.files.retrieve(f.id)
    assert f.id not in [x.id for x in api.files.list()]


def test_unknown_form_field(api):
    with pytest.raises(openai.BadRequestError) as e:
        api.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="user_data", extra_body={"colour": "red"})
    assert e.value.body["param"] == "colour"


def test_chunked_oversized_upload_is_413(api_server):
    import httpx

    def body():
        yield (b'--bnd\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--bnd\r\n'
               b'Content-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n')
        for _ in range(40):  # 4 MB, no Content-Length
            yield b"x" * 100_000
        yield b"\r\n--bnd--\r\n"

    r = httpx.post(f"{api_server.base_url}/files", content=body(),
                   headers={"Authorization": f"Bearer {api_server.api_key}",
                            "Content-Type": "multipart/form-data; boundary=bnd"})
    assert r.status_code == 413 and r.json()["error"]["param"] == "file"


def test_concurrent_uploads_page_without_gaps(api):
    from concurrent.futures import ThreadPoolExecutor

    def up(i):
        return api.files.create(file=(f"c{i}.jsonl", io.BytesIO(_jsonl(1, f"conc{i}"))), purpose="batch").id

    with ThreadPoolExecutor(8) as ex:
        ids = set(ex.map(up, range(32)))
    for order in ("asc", "desc"):
        seen = [f.id for f in api.files.list(purpose="batch", limit=5, order=order)]
        assert len(seen) == len(set(seen)) and set(seen) >= ids


def _raw_upload(api_server, parts: list[tuple[str, str | None, bytes]]):
    import httpx

    body = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--XyZ\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    body += b"--XyZ--\r\n"
    return httpx.post(f"{api_server.base_url}/files", content=body,
                      headers={"Authorization": f"Bearer {api_server.api_key}",
                               "Content-Type": "multipart/form-data; boundary=XyZ"})


def test_fields_after_the_file_are_checked_and_refused_uploads_leave_nothing(api_server):
    blobs = api_server.data_dir / "blobs"
    before = {p for p in blobs.rglob("*") if p.is_file()}
    data = b'{"unique": "after-the-file"}\n'
    r = _raw_upload(api_server, [("file", "data.csv", data), ("purpose", None, b"fine-tune")])
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = _raw_upload(api_server, [("file", "data.jsonl", data)])
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = _raw_upload(api_server, [("purpose", None, b"fine-tune"), ("file", "a.jsonl", data), ("file", "b.jsonl", data)])
    assert r.status_code == 400 and "one file" in r.json()["error"]["message"]
    assert {p for p in blobs.rglob("*") if p.is_file()} == before  # no blob, no temporary file
    r = _raw_upload(api_server, [("file", "data.jsonl", data), ("purpose", None, b"fine-tune")])
    assert r.status_code == 200 and r.json()["bytes"] == len(data) and r.json()["purpose"] == "fine-tune"
