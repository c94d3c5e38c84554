"""File names keep no Unicode bidirectional controls (issue 21, section 4, item 6):
`invoice\u202egpj.exe` would show as `invoiceexe.jpg`. Uploads and conversions store the name
without them, file objects show a name stored before without them, and the CLI's tables print
none (the dashboard: tests/web/test_csp.py)."""

from __future__ import annotations

import io

import httpx
import pytest
from typer.testing import CliRunner

from openft.cli import app
from openft.names import BIDI_CONTROLS
from tests.support.data import chat_jsonl

TRICK = "invoice\u202egpj\u2066\u200e.exe\u200f\u202a\u202b\u202c\u202d\u2067\u2068\u2069.jsonl"


def _clean(text: str) -> bool:
    return not any(c in text for c in BIDI_CONTROLS)


def test_uploaded_names_are_stored_without_bidi_controls(sec_server):
    api = sec_server.client()
    f = api.files.create(file=(TRICK, io.BytesIO(chat_jsonl())), purpose="fine-tune")
    assert f.filename == "invoicegpj.exe.jsonl"
    assert api.files.retrieve(f.id).filename == "invoicegpj.exe.jsonl"
    db = sec_server.db()
    try:
        import sqlalchemy as sa

        from openft.store.db import files
        with db.connect() as conn:
            assert conn.execute(sa.select(files.c.filename).where(files.c.id == f.id)).scalar() == f.filename
    finally:
        db.dispose()


def test_a_name_stored_before_is_shown_without_them(sec_server):

    from openft.store.db import files
    api = sec_server.client()
    f = api.files.create(file=("old.jsonl", io.BytesIO(chat_jsonl())), purpose="fine-tune")
    db = sec_server.db()
    try:
        with db.begin() as conn:
            conn.execute(files.update().where(files.c.id == f.id).values(filename=TRICK))
    finally:
        db.dispose()
    assert api.files.retrieve(f.id).filename == "invoicegpj.exe.jsonl"
    assert all(_clean(x.filename) for x in api.files.list())
    out = CliRunner().invoke(app, ["--api-key", sec_server.api_key, "--base-url", sec_server.base_url, "files",
                                   "list"], prog_name="openft")
    assert out.exit_code == 0, out.output
    assert _clean(out.stdout) and "invoicegpj" in out.stdout.replace("\n", "").replace("│", "").replace(" ", "")


@pytest.mark.parametrize("route", ["inspect", "convert"])
def test_table_names_in_the_data_tools_have_none(sec_server, route):
    name = "rep\u202eort\u2067.csv"
    r = httpx.post(f"{sec_server.base_url}/openft/data/{route}", headers={"Authorization": f"Bearer {sec_server.api_key}"},
                   data={"mapping": "user=user,assistant=assistant"} if route == "convert" else {},
                   files={"file": (name, io.BytesIO(b"user,assistant\nq,a\n"))}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    shown = body["filename"] if route == "inspect" else body["file"]["filename"]
    assert shown == ("report.csv" if route == "inspect" else "report.jsonl"), shown
