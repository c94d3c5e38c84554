"""The files pages (#/files, #/files/:id) in a real browser against a live server: the list with
the project's files, a file's validation report (the API's numbers), download, delete with a
confirmation step, and the empty state of a project without files."""

from __future__ import annotations

import io
import json
import re

import httpx
import pytest

from tests.support.data import chat_jsonl
from tests.support.web import dashboard_url, signed_in, top_shot


@pytest.fixture(scope="module")
def stored(live_server):
    client = live_server.client()
    train = client.files.create(file=("reviews.jsonl", io.BytesIO(chat_jsonl(20, seed=2))), purpose="fine-tune")
    other = client.files.create(file=("notes.txt", io.BytesIO(b"not training data\n")), purpose="user_data")
    return {"train": train, "other": other}


def test_list_shows_every_file_newest_first(page, live_server, stored):
    signed_in(page, live_server, "/files")
    page.wait_for_selector("#files-table")
    keys = [r.get_attribute("data-key") for r in page.query_selector_all("#files-table tbody tr")]
    listed = [f.id for f in live_server.client().files.list()]
    assert keys == listed and {stored["train"].id, stored["other"].id} <= set(keys)
    row = page.inner_text(f"#files-table tr[data-key='{stored['train'].id}']")
    assert "reviews.jsonl" in row and "fine-tune" in row and stored["train"].id in row
    top_shot(page, "files-list")
    # A row opens the file, by mouse or keyboard.
    page.focus(f"#files-table tr[data-key='{stored['other'].id}']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#file-title")
    assert page.inner_text("#file-title") == "notes.txt"
    assert "purpose is user_data" in page.inner_text("#file-report")


def test_file_report_matches_the_api(page, live_server, stored):
    fid = stored["train"].id
    signed_in(page, live_server, f"/files/{fid}?model=openft-tiny")
    page.wait_for_selector("#report[data-ok=true]")
    r = httpx.post(f"{live_server.base_url}/openft/data/files/{fid}/report", json={"model": "openft-tiny"},
                   headers={"Authorization": f"Bearer {live_server.api_key}"}, timeout=120).json()
    for name, want in (("n_examples", r["n_examples"]), ("total_tokens", r["stats"]["total_tokens"]),
                       ("n_epochs", r["hyperparameters"]["n_epochs"])):
        got = page.inner_text(f"#report [data-stat={name}]").split(" ")[0].replace(",", "")
        assert int(got) == want, name
    assert page.get_attribute("#file-facts [data-bytes]", "data-bytes") == str(stored["train"].bytes)
    top_shot(page, "files-report")
    # As a validation file the minimum is one example; the model choice is kept per tab.
    page.select_option("#file-report-role", "validation")
    page.wait_for_selector("#report[data-ok=true]")
    page.set_viewport_size({"width": 480, "height": 900})
    assert page.evaluate("document.documentElement.scrollWidth") <= 480
    # "Use for a new job" opens the create page with this file and model, validated there.
    page.click("#file-use")
    page.wait_for_selector(f"#create-training-file[data-file='{fid}']")
    page.wait_for_selector("#report[data-ok=true]")
    assert page.input_value("#create-model") == "openft-tiny"
    assert page.is_visible("#create-submit")


def test_download_and_delete(page, live_server):
    client = live_server.client()
    data = chat_jsonl(12, seed=9)
    f = client.files.create(file=("gone.jsonl", io.BytesIO(data)), purpose="fine-tune")
    signed_in(page, live_server, f"/files/{f.id}?model=openft-tiny")
    page.wait_for_selector("#file-title")
    with page.expect_download() as dl:
        page.click("#file-download")
    assert dl.value.suggested_filename == "gone.jsonl"
    with open(dl.value.path(), "rb") as fh:
        assert fh.read() == data
    page.click("#file-delete")
    page.wait_for_selector("#file-delete-confirm:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "file-delete-no"  # the safe choice has focus
    page.click("#file-delete-no")
    assert page.is_hidden("#file-delete-confirm")
    assert client.files.retrieve(f.id).id == f.id  # cancel deleted nothing
    page.click("#file-delete")
    page.click("#file-delete-yes")
    page.wait_for_url(re.compile(r".*#/files$"))
    page.wait_for_selector("#files-table, #files-list .state.empty")
    assert page.query_selector(f"#files-table tr[data-key='{f.id}']") is None
    import openai

    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_other_project_sees_empty_list_and_404(page, live_server, stored):
    _, key = live_server.new_key("files-web-other")
    signed_in(page, live_server, "/files", key=key)
    empty = page.wait_for_selector("#files-list .state.empty")
    assert "No files yet" in empty.inner_text()
    page.goto(dashboard_url(live_server) + f"#/files/{stored['train'].id}")
    err = page.wait_for_selector("main .state.error")
    assert "No such File object" in err.inner_text()
    assert json.loads(page.evaluate("JSON.stringify(sessionStorage.getItem('openft.key'))")) == key
