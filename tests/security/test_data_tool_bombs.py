"""The data tools made safe (issue 21, section 4, item 1): tables crafted to blow up when read
(an XLSX whose shared-strings part inflates far past its size, a Parquet file with more rows
than allowed, one whose JSONL would pass the upload limit, one whose dictionary-encoded cells
expand to gigabytes in memory) are refused with a 413 in the OpenAI error shape that names the
limit's setting, the server stays healthy and its scratch folder empty; a conversion whose
client disconnects is killed, and one past its time limit is stopped."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support.servers import API, ServerSpec, running
from tests.support.wait import wait_until

LIMITS_ENV = {"OPENFT_MAX_UPLOAD_BYTES": "200000", "OPENFT_DATA_TOOLS_MAX_ROWS": "1000",
              "OPENFT_DATA_TOOLS_MAX_EXPANDED_BYTES": "4000000",
              "OPENFT_DATA_TOOLS_MAX_MEMORY_BYTES": str(1024**3)}


@pytest.fixture(scope="module")
def bounded(tmp_path_factory, model_cache):
    spec = ServerSpec(API, worker=False, env=LIMITS_ENV)
    with running(spec.server(tmp_path_factory.mktemp("bombs") / "data", model_cache)) as server:
        yield server


MAPPING = {"mapping": "user=user,assistant=assistant"}


def _post(server, route: str, name: str, data: bytes, **fields) -> httpx.Response:
    if route == "convert":
        fields = {**MAPPING, **fields}
    return httpx.post(f"{server.base_url}/openft/data/{route}", data=fields, files={"file": (name, io.BytesIO(data))},
                      headers={"Authorization": f"Bearer {server.api_key}"}, timeout=120)


def _xlsx(shared_strings: bytes, dimension: str = "A1:B2") -> bytes:
    """A minimal workbook (one sheet, two columns) whose xl/sharedStrings.xml is `shared_strings`
    and whose sheet declares the size `dimension`."""
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    parts = {
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
        'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships'
        '+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override '
        'PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.'
        'spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
        "_rels/.rels": f'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
        f'relationships"><Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/>'
        '</Relationships>',
        "xl/workbook.xml": f'<?xml version="1.0"?><workbook {ns} xmlns:r="{rel}"><sheets><sheet name="S" '
        'sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
        f'package/2006/relationships"><Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"'
        f'/><Relationship Id="rId2" Type="{rel}/sharedStrings" Target="sharedStrings.xml"/></Relationships>',
        "xl/worksheets/sheet1.xml": f'<?xml version="1.0"?><worksheet {ns}><dimension ref="{dimension}"/><sheetData><row r="1"><c r="A1" t="s">'
        '<v>0</v></c><c r="B1" t="inlineStr"><is><t>assistant</t></is></c></row><row r="2"><c r="A2" t="inlineStr">'
        '<is><t>hi</t></is></c><c r="B2" t="inlineStr"><is><t>hello</t></is></c></row></sheetData></worksheet>',
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, text in parts.items():
            z.writestr(name, text)
        z.writestr("xl/sharedStrings.xml", shared_strings)
    return buf.getvalue()


def _shared(text_bytes: int) -> bytes:
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    return (f'<?xml version="1.0"?><sst {ns} count="1" uniqueCount="1"><si><t>user</t></si><si><t>'.encode()
            + b"a" * text_bytes + b"</t></si></sst>")


def _parquet(n: int, cell: str, path: Path) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    user = pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array([cell]))  # one value, n rows
    table = pa.table({"user": user, "assistant": pa.array(["ok"] * n)})
    pq.write_table(table, path, compression="zstd")
    return path.read_bytes()


def _refused(r: httpx.Response, status: int, code: str, setting: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert (err["code"], err["param"], err["type"]) == (code, "file", "invalid_request_error"), err
    assert setting in err["message"], err


def _healthy(server) -> None:
    assert httpx.get(f"{server.base_url.removesuffix('/v1')}/health", timeout=10).json()["status"] == "ok"
    ok = _post(server, "inspect", "fine.csv", b"user,assistant\nhi,hello\n")
    assert ok.status_code == 200 and ok.json()["n_rows"] == 1, ok.text
    root = server.data_dir / "tmp" / "data-tools"
    assert not root.exists() or list(root.iterdir()) == []


def test_xlsx_whose_shared_strings_inflate_is_refused_before_reading(bounded):
    data = _xlsx(_shared(50_000_000))  # ~50 KB on the wire, 50 MB once inflated
    assert len(data) < 200_000
    for route in ("inspect", "convert"):
        r = _post(bounded, route, "bomb.xlsx", data)
        _refused(r, 413, "table_too_large", "OPENFT_DATA_TOOLS_MAX_EXPANDED_BYTES")
        assert "xl/sharedStrings.xml" in r.json()["error"]["message"]
    _healthy(bounded)


def test_a_small_xlsx_within_the_bounds_still_reads(bounded):
    r = _post(bounded, "inspect", "fine.xlsx", _xlsx(_shared(10)))
    assert r.status_code == 200, r.text
    assert r.json()["columns"] == ["user", "assistant"] and r.json()["sheets"] == ["S"]


def test_xlsx_declaring_too_many_rows_is_refused_before_reading(bounded):
    r = _post(bounded, "convert", "tall.xlsx", _xlsx(_shared(10), dimension="A1:B3000001"))
    _refused(r, 413, "too_many_rows", "OPENFT_DATA_TOOLS_MAX_ROWS")


def test_parquet_with_too_many_rows_is_refused_from_its_metadata(bounded, tmp_path):
    data = _parquet(5000, "same row", tmp_path / "rows.parquet")
    for route in ("inspect", "convert"):
        _refused(_post(bounded, route, "rows.parquet", data), 413, "too_many_rows", "OPENFT_DATA_TOOLS_MAX_ROWS")
    _healthy(bounded)


def test_csv_with_too_many_rows_is_refused_while_reading(bounded):
    data = b"user,assistant\n" + b"q,a\n" * 1001
    for route in ("inspect", "convert"):
        _refused(_post(bounded, route, "rows.csv", data), 413, "too_many_rows", "OPENFT_DATA_TOOLS_MAX_ROWS")


def test_a_conversion_stops_at_the_upload_limit_while_writing(bounded, tmp_path):
    data = _parquet(900, "x" * 1000, tmp_path / "wide.parquet")  # 2 KB on the wire, ~0.9 MB of JSONL
    assert len(data) < 20_000
    _refused(_post(bounded, "convert", "wide.parquet", data), 413, "output_too_large", "OPENFT_MAX_UPLOAD_BYTES")
    _healthy(bounded)


def test_cells_that_expand_past_the_memory_limit_stop_the_child_not_the_server(bounded, tmp_path):
    data = _parquet(1000, "m" * 3_000_000, tmp_path / "mem.parquet")  # 1000 x 3 MB strings once decoded
    assert len(data) < 20_000
    for route in ("inspect", "convert"):
        _refused(_post(bounded, route, "mem.parquet", data), 413, "memory_limit", "OPENFT_DATA_TOOLS_MAX_MEMORY_BYTES")
    _healthy(bounded)


# ---------------------------------------------------------------- disconnect and time limit

def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` and that run the data-tools child."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"openft.data.isolated" in cmd:
            out.append(int(entry.name))
    return out


def test_a_conversion_is_killed_when_the_client_disconnects(tmp_path, model_cache):
    once = tmp_path / "once"
    once.mkdir()
    env = {"OPENFT_FAULT": "data-tool:hold", "OPENFT_FAULT_ONCE_DIR": str(once)}
    with running(ServerSpec(API, worker=False, env=env).server(tmp_path / "data", model_cache)) as server:
        req = httpx.Request("POST", "http://x/", data=MAPPING,
                            files={"file": ("t.csv", b"user,assistant\nq,a\n")})
        body, ctype = req.read(), req.headers["content-type"]
        host, port = server.base_url.split("//")[1].split("/")[0].split(":")
        sock = socket.create_connection((host, int(port)))
        sock.sendall((f"POST /v1/openft/data/convert HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                      f"{server.api_key}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                     + body)
        wait_until(lambda: (once / "data-tool").exists(), 60, what="the child to reach its fault point")
        [child] = wait_until(lambda: _children(server.proc.pid), 10, what="the data-tools child")
        sock.close()  # the client leaves while the child holds
        wait_until(lambda: not Path(f"/proc/{child}").exists(), 10, what="the child to be killed")
        _healthy(server)


def test_a_conversion_past_its_time_limit_is_stopped(tmp_path):
    from openft.data.bounds import TableLimits
    from openft.data.isolated import run_isolated
    from openft.errors import PayloadTooLarge

    table = tmp_path / "t.csv"
    table.write_text("user,assistant\nq,a\n")

    async def never():
        return False

    with pytest.raises(PayloadTooLarge) as e:  # no child answers within a millisecond (the interpreter starts)
        asyncio.run(run_isolated("inspect", path=table, kind="csv", name="t.csv", sheet=None,
                                 limits=TableLimits(10, 10**6, 10**6), args={}, memory_bytes=1024**3,
                                 timeout_s=0.001, abandoned=never))
    assert e.value.code == "time_limit" and "OPENFT_DATA_TOOLS_TIMEOUT_SECONDS" in e.value.message
    assert _children(os.getpid()) == []
