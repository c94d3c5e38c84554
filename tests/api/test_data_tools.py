"""The dashboard's data endpoints (`/v1/openft/data/...`, api/routes/data_tools.py) against a live
server: inspect and convert tables, the validation report of a stored file (the same numbers as the
data toolkit), split, per-project isolation, bad input named by line and column."""

from __future__ import annotations

import io
import json

import httpx
import pytest

from tests.support.data import chat_jsonl, upload

CSV = "review,sentiment,notes\n" + "".join(
    f"Review {i}: it was {'great' if i % 2 else 'awful'}.,{'positive' if i % 2 else 'negative'},n{i}\n"
    for i in range(12))


def _http(server, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key or server.api_key}"},
                        timeout=120)


@pytest.fixture(scope="module")
def http(api_server):
    with _http(api_server) as c:
        yield c


def _table(http, route: str, name: str, data: bytes, **fields):
    return http.post(f"/openft/data/{route}", data=fields, files={"file": (name, io.BytesIO(data))})


def _error(r: httpx.Response) -> dict:
    return r.json()["error"]


def _scratch_left(server) -> list:
    root = server.data_dir / "tmp" / "data-tools"
    return list(root.iterdir()) if root.exists() else []


def test_inspect_csv_columns_rows_and_guess(http, api_server):
    r = _table(http, "inspect", "reviews.csv", CSV.encode())
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["columns"] == ["review", "sentiment", "notes"]
    assert t["n_rows"] == 12 and len(t["rows"]) == 5
    assert t["rows"][1] == {"review": "Review 1: it was great.", "sentiment": "positive", "notes": "n1"}
    assert t["guessed_mapping"] == {"review": "user", "sentiment": "assistant"}
    assert t["error"] is None and t["format"] == "csv"
    assert _scratch_left(api_server) == []  # the upload is gone once the answer is sent


def test_inspect_without_a_guess_says_so(http):
    t = _table(http, "inspect", "t.csv", b"a,b\n1,2\n").json()
    assert t["guessed_mapping"] is None and "cannot tell" in t["guess_error"]


def test_convert_csv_with_mapping_stores_a_fine_tune_file(http, api):
    mapping = json.dumps({"review": "user", "sentiment": "assistant", "notes": ""})
    r = _table(http, "convert", "reviews.csv", CSV.encode(), mapping=mapping, system="Classify the review.")
    assert r.status_code == 200, r.text
    body = r.json()
    f = body["file"]
    assert f["purpose"] == "fine-tune" and f["filename"] == "reviews.jsonl"
    assert body["n_written"] == 12 and body["ignored_columns"] == ["notes"]
    assert body["labels"] == {"positive": 6, "negative": 6}
    assert api.files.retrieve(f["id"]).bytes == f["bytes"]  # a real file object, seen by the SDK
    lines = [json.loads(x) for x in api.files.content(f["id"]).text.splitlines()]
    assert lines[0]["messages"] == [{"role": "system", "content": "Classify the review."},
                                    {"role": "user", "content": "Review 0: it was awful."},
                                    {"role": "assistant", "content": "negative"}]


def test_convert_accepts_the_cli_mapping_form(http):
    r = _table(http, "convert", "r.csv", CSV.encode(), mapping="review=user,sentiment=assistant")
    assert r.status_code == 200, r.text
    assert r.json()["mapping"] == {"review": "user", "sentiment": "assistant"}


def test_broken_csv_line_names_line_and_column(http, api_server):
    broken = CSV.replace("Review 3: it was great.,positive,n3", "Review 3: it was great.,,n3")
    r = _table(http, "convert", "broken.csv", broken.encode(), mapping='{"review": "user", "sentiment": "assistant"}')
    assert r.status_code == 400
    err = _error(r)
    assert err["message"].startswith("broken.csv:5 [sentiment]: empty assistant cell"), err
    assert str(api_server.data_dir) not in err["message"]  # never a server path
    # A row with a cell too many: inspect shows the columns and where the table breaks.
    ragged = CSV.replace("n4\n", "n4,extra\n")
    t = _table(http, "inspect", "ragged.csv", ragged.encode()).json()
    assert t["columns"] == ["review", "sentiment", "notes"]
    assert t["error"]["line"] == 6 and "4 cells but the header has 3" in t["error"]["message"]
    r = _table(http, "convert", "ragged.csv", ragged.encode(), mapping="review=user,sentiment=assistant")
    assert r.status_code == 400 and _error(r)["message"].startswith("ragged.csv:6:")
    assert _scratch_left(api_server) == []


def test_bad_mappings_are_named(http):
    r = _table(http, "convert", "r.csv", CSV.encode(), mapping='{"nope": "user", "sentiment": "assistant"}')
    assert r.status_code == 400 and "no column 'nope'" in _error(r)["message"] and _error(r)["param"] == "mapping"
    r = _table(http, "convert", "r.csv", CSV.encode(), mapping='{"review": "speaker"}')
    assert r.status_code == 400 and _error(r)["param"] == "mapping.review"
    r = _table(http, "convert", "r.csv", CSV.encode())
    assert r.status_code == 400 and _error(r)["code"] == "missing_required_parameter"
    r = _table(http, "convert", "r.jsonl", b"{}\n", mapping="a=user")
    assert r.status_code == 400 and _error(r)["code"] == "invalid_file_format"


def test_xlsx_inspect_and_convert(http, tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "data"
    ws.append(["question", "answer"])
    for i in range(11):
        ws.append([f"What is {i} + 1?", i + 1])
    path = tmp_path / "qa.xlsx"
    wb.save(path)
    t = _table(http, "inspect", "qa.xlsx", path.read_bytes()).json()
    assert t["sheets"] == ["data"] and t["n_rows"] == 11 and t["rows"][0] == {"question": "What is 0 + 1?",
                                                                              "answer": "1"}
    r = _table(http, "convert", "qa.xlsx", path.read_bytes(), mapping=json.dumps(t["guessed_mapping"]))
    assert r.status_code == 200, r.text
    assert r.json()["n_written"] == 11


def test_upload_limit_applies(http, api_server):
    big = b"a,b\n" + b"x,y\n" * 60_000  # 240 KB, over this server's 200,000-byte limit
    r = _table(http, "inspect", "big.csv", big)
    assert r.status_code == 413 and _error(r)["param"] == "file"
    assert _scratch_left(api_server) == []
    # A table under the limit whose JSONL is over it: refused, saying which limit.
    rows = "".join(f"q{i},a{i}\n" for i in range(9000))
    table = ("question,answer\n" + rows).encode()
    assert len(table) < 200_000
    r = _table(http, "convert", "grows.csv", table, mapping="question=user,answer=assistant")
    assert r.status_code == 413 and _error(r)["code"] == "output_too_large"  # stopped while writing
    assert _error(r)["message"].startswith("the JSONL made from grows.csv") and "OPENFT_MAX_UPLOAD_BYTES" in _error(r)["message"]
    assert _scratch_left(api_server) == []


def test_report_matches_the_data_toolkit(http, api, api_server, tiny_model_dir):
    from openft.data.auto import resolve_hyperparameters
    from openft.data.light_tokenizer import LightTokenizer
    from openft.data.validate import validate_file

    data = chat_jsonl(24)
    f = upload(api, data)
    r = http.post(f"/openft/data/files/{f.id}/report", json={"model": "openft-tiny"})
    assert r.status_code == 200, r.text
    rep = r.json()
    path = api_server.data_dir / "mine.jsonl"
    path.write_bytes(data)
    lib = validate_file(path, tokenizer=LightTokenizer.load(tiny_model_dir), max_seq_len=rep["max_seq_len"],
                        model="openft-tiny", method="supervised")
    assert rep["ok"] and rep["n_examples"] == 24 and rep["format"] == "chat"
    assert rep["stats"]["total_tokens"] == lib.stats["total_tokens"] > 0
    assert rep["stats"]["tokens_per_example"] == lib.stats["tokens_per_example"]
    assert rep["stats"]["labels"] == lib.stats["labels"] and set(rep["stats"]["labels"]) == {"positive", "negative"}
    assert rep["hyperparameters"] == {**resolve_hyperparameters(24), "method": "lora"}
    assert rep["estimate"]["n_epochs"] == rep["hyperparameters"]["n_epochs"] == 5  # ceil(100 / 24)
    assert rep["auto"] == ["n_epochs", "batch_size", "learning_rate_multiplier"]
    assert rep["context_length"] and rep["tokenizer"] is True
    # Given hyperparameters pass through; "auto" ones are resolved around them.
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "method": "full"}}}
    rep2 = http.post(f"/openft/data/files/{f.id}/report", json={"model": "openft-tiny", "method": method}).json()
    assert rep2["hyperparameters"]["n_epochs"] == 2 and rep2["estimate"]["n_epochs"] == 2
    assert rep2["hyperparameters"]["method"] == "full" and rep2["auto"] == ["batch_size", "learning_rate_multiplier"]


def test_report_errors_have_line_and_field(http, api):
    good = chat_jsonl(12).decode().splitlines()
    good[2] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]})
    good[5] = "{not json"
    f = upload(api, ("\n".join(good) + "\n").encode(), name="broken.jsonl")
    rep = http.post(f"/openft/data/files/{f.id}/report", json={"model": "openft-tiny"}).json()
    assert rep["ok"] is False
    where = {(e["line"], e["field"], e["code"]) for e in rep["errors"]}
    assert (3, "messages[1].role", "unrecognized_role") in where
    assert (6, None, "invalid_json") in where


def test_report_refuses_what_the_job_would(http, api):
    f = upload(api, chat_jsonl(12))
    rep = http.post(f"/openft/data/files/{f.id}/report",
                    json={"model": "openft-tiny", "method": {"type": "dpo"}}).json()
    assert rep["ok"] is False and rep["errors"][-1]["code"] == "invalid_file_format"
    bad = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}
    r = http.post(f"/openft/data/files/{f.id}/report", json={"model": "openft-tiny", "method": bad})
    assert r.status_code == 400 and _error(r)["param"] == "method.supervised.hyperparameters.n_epochs"
    r = http.post(f"/openft/data/files/{f.id}/report", json={"model": "no-such-model"})
    assert r.status_code == 400 and _error(r)["param"] == "model"


def test_split_stores_two_files(http, api, api_server):
    f = upload(api, chat_jsonl(20, seed=3), name="all.jsonl")
    r = http.post(f"/openft/data/files/{f.id}/split", json={"valid": 0.2})
    assert r.status_code == 200, r.text
    s = r.json()
    n_distinct = s["n_read"] - s["n_duplicates"]
    assert s["n_valid"] == round(n_distinct * 0.2) and s["n_train"] + s["n_valid"] == n_distinct
    assert s["training_file"]["filename"] == "all.train.jsonl" and s["validation_file"]["filename"] == "all.valid.jsonl"
    assert s["leaks"] == 0
    assert len(api.files.content(s["validation_file"]["id"]).text.splitlines()) == s["n_valid"]
    assert len(api.files.content(s["training_file"]["id"]).text.splitlines()) == s["n_train"]
    r = http.post(f"/openft/data/files/{f.id}/split", json={"valid": 0.0})
    assert r.status_code == 400 and _error(r)["param"] == "valid"
    assert _scratch_left(api_server) == []


def test_unknown_and_other_projects_files_are_404(http, api, api_server, other_api):
    f = upload(api, chat_jsonl(12))
    with _http(api_server, other_api.api_key) as other:
        for path, body in ((f"/openft/data/files/{f.id}/report", {}), (f"/openft/data/files/{f.id}/split", {})):
            r = other.post(path, json=body)
            assert r.status_code == 404 and _error(r)["param"] == "id", r.text
    r = http.post("/openft/data/files/file-nope/report", json={})
    assert r.status_code == 404
    r = httpx.post(f"{api_server.base_url}/openft/data/inspect", files={"file": ("a.csv", b"a,b\n")})
    assert r.status_code == 401


@pytest.mark.slow  # a fresh probe trains 3 steps in a child process (~30 s on a busy 2-core machine)
def test_time_estimate_from_this_machines_pace(http, api):
    """measure_pace runs (or reuses, for a day) the trainer's short probe, as the job validator does."""
    f = upload(api, chat_jsonl(16))
    rep = http.post(f"/openft/data/files/{f.id}/report", json={"model": "openft-tiny", "measure_pace": True}).json()
    est = rep["estimate"]
    assert isinstance(est["estimated_seconds"], int) and est["tokens_per_second"] > 0 and est["pace_source"]
    assert est["processed_tokens"] == rep["stats"]["total_tokens"] * rep["hyperparameters"]["n_epochs"]
    # Known from now on without asking again.
    again = http.post(f"/openft/data/files/{f.id}/report", json={"model": "openft-tiny"}).json()["estimate"]
    assert again["tokens_per_second"] == est["tokens_per_second"]


def test_report_without_measure_never_starts_a_probe(tmp_path, monkeypatch):
    """pace_for_job(probe=False), what a plain report asks: known paces only, never a training run."""
    from types import SimpleNamespace

    import openft.train.probe as probe_mod
    from openft.config import Settings
    from openft.jobs.pace import pace_for_job
    from openft.store.db import make_engine, migrate

    monkeypatch.setattr(probe_mod, "run_probe", lambda *a, **k: pytest.fail("a probe was started"))
    settings = Settings(data_dir=tmp_path, model_cache_dir=tmp_path / "models")
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    job = SimpleNamespace(method=None, base_model="openft-tiny", training_file="file-x")
    assert pace_for_job(settings, engine, job, 12, probe=False) is None
    engine.dispose()
