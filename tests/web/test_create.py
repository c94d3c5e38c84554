"""The create-job page (#/jobs/new) in a real browser against a live server: drop a JSONL file and
see the report with the API's numbers, a broken file's errors by line and field (and no create
button), a CSV mapped and converted, split off 20 %, create the job and land on its page."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.support.data import chat_jsonl
from tests.support.web import drop, signed_in, top_shot

NEW = "/jobs/new?model=openft-tiny"


def api_report(server, fid: str, **body) -> dict:
    r = httpx.post(f"{server.base_url}/openft/data/files/{fid}/report", json={"model": "openft-tiny", **body},
                   headers={"Authorization": f"Bearer {server.api_key}"}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def stat(page, name: str) -> str:
    return page.inner_text(f"#report [data-stat={name}]").split(" ")[0].replace(",", "").replace("≈", "")


@pytest.fixture
def new_job(page, live_server):
    signed_in(page, live_server, NEW)
    page.wait_for_selector("#create-model option[value='openft-tiny']", state="attached")
    return page


def test_drop_jsonl_report_split_and_create(new_job, live_server):
    page, client = new_job, live_server.client()
    top_shot(page, "create-upload")
    drop(page, "#create-drop", "reviews.jsonl", chat_jsonl(30, seed=1).decode())
    page.wait_for_selector("#report[data-ok=true]")
    fid = page.get_attribute("#create-training-file", "data-file")
    rep = api_report(live_server, fid)
    assert int(stat(page, "n_examples")) == rep["n_examples"] == 30
    assert int(stat(page, "total_tokens")) == rep["stats"]["total_tokens"] > 0
    assert int(stat(page, "n_epochs")) == rep["hyperparameters"]["n_epochs"] == 4  # auto: ceil(100 / 30)
    assert int(stat(page, "batch_size")) == rep["hyperparameters"]["batch_size"]
    labels = {r.get_attribute("data-label"): int(r.get_attribute("data-count"))
              for r in page.query_selector_all("#report-labels .label-row")}
    assert labels == rep["stats"]["labels"]
    assert page.inner_text("#hp-n_epochs-auto") == "auto → 4"
    assert page.is_visible("#create-submit")
    top_shot(page, "create-report")

    # Split off 20 %: two new stored files; the training part is validated again.
    page.fill("#create-split-pct", "20")
    page.click("#create-split")
    res = page.wait_for_selector("#create-split-result")
    n_train, n_valid = int(res.get_attribute("data-train")), int(res.get_attribute("data-valid"))
    assert n_valid == round((n_train + n_valid) * 0.2) and n_valid > 0
    page.wait_for_selector(f"#create-training-file:not([data-file='{fid}'])")
    page.wait_for_selector("#create-valid-file[data-ok=true]")
    page.wait_for_selector("#report[data-ok=true]")
    train_id = page.get_attribute("#create-training-file", "data-file")
    valid_id = page.get_attribute("#create-valid-file", "data-file")
    assert int(stat(page, "n_examples")) == n_train
    assert len(client.files.content(valid_id).text.splitlines()) == n_valid

    # Settings, then create: the page goes to the new job, which the API knows.
    page.fill("#hp-n_epochs", "1")
    page.wait_for_function("document.querySelector('#hp-n_epochs-auto').textContent === 'set: 1'")
    page.fill("#create-suffix", "web-test")
    page.fill("#create-seed", "7")
    top_shot(page, "create-form")
    page.click("#create-submit")
    page.wait_for_url(re.compile(r".*#/jobs/ftjob-[^/?]+$"))
    job_id = page.url.rsplit("/", 1)[-1]
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert (job.training_file, job.validation_file, job.seed, job.model) == (train_id, valid_id, 7, "openft-tiny")
    assert job.suffix == "web-test" and job.hyperparameters.n_epochs == 1
    client.fine_tuning.jobs.cancel(job_id)  # this test is about creating it; spare the machine the training


def test_broken_file_shows_line_and_field_and_no_create_button(new_job, live_server):
    page = new_job
    lines = chat_jsonl(12).decode().splitlines()
    lines[2] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]})
    lines[6] = '{"messages": [{"role": "user", "content": "unfinished"'
    page.set_input_files("#create-drop-input", files=[{"name": "broken.jsonl", "mimeType": "application/jsonl",
                                                       "buffer": ("\n".join(lines) + "\n").encode()}])
    page.wait_for_selector("#report[data-ok=false]")
    rows = page.query_selector_all("#report-errors tbody tr")
    found = {(r.get_attribute("data-line"), r.get_attribute("data-field"), r.get_attribute("data-code")) for r in rows}
    assert ("3", "messages[1].role", "unrecognized_role") in found
    assert ("7", "", "invalid_json") in found
    assert "robot" in page.inner_text("#report-errors tr[data-line='3']")
    assert not page.is_visible("#create-submit")
    assert "Fix the errors" in page.inner_text("#create-submit-hint")
    top_shot(page, "create-report-errors")


def enter_opens_file_chooser(page, selector, tries=4):
    """Focus `selector`, press Enter and return the file chooser it opens.

    Chromium lets a page open a file chooser only within 5 s of a user gesture; on a loaded 2-core
    machine the keypress can reach the page's click handler later than that, and the chooser is then
    silently refused (CI saw this even with a 60 s wait). Pressing again is what a person would do;
    a button that never opens the chooser still fails after `tries` presses."""
    for attempt in range(tries):
        page.focus(selector)
        page.wait_for_function(f"document.activeElement && document.activeElement.matches({json.dumps(selector)})")
        try:
            with page.expect_file_chooser(timeout=15_000) as fc:
                page.keyboard.press("Enter")
            return fc.value
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


def test_csv_mapping_converts_and_validates(new_job, live_server):
    page = new_job
    csv = "text,label,source\n" + "".join(f"Item {i} is {'good' if i % 3 else 'bad'},{'yes' if i % 3 else 'no'},s{i}\n"
                                          for i in range(15))
    # The file button is a real button: Enter on it opens the file chooser.
    chooser = enter_opens_file_chooser(page, "#create-drop-pick")
    chooser.set_files(files=[{"name": "items.csv", "mimeType": "text/csv", "buffer": csv.encode()}])
    page.wait_for_selector("#create-mapping:not([hidden]) #create-sample")
    assert [page.input_value(f"#map-{i}") for i in range(3)] == ["user", "assistant", ""]  # guessed
    assert page.inner_text("#create-sample tbody tr:first-child td:first-child") == "Item 0 is bad"
    assert len(page.query_selector_all("#create-sample tbody tr")) == 5
    page.fill("#create-system", "Answer yes or no.")
    top_shot(page, "create-mapping")
    page.click("#create-convert")
    page.wait_for_selector("#report[data-ok=true]")
    fid = page.get_attribute("#create-training-file", "data-file")
    first = json.loads(live_server.client().files.content(fid).text.splitlines()[0])
    assert first["messages"] == [{"role": "system", "content": "Answer yes or no."},
                                 {"role": "user", "content": "Item 0 is bad"}, {"role": "assistant", "content": "no"}]
    labels = {r.get_attribute("data-label"): int(r.get_attribute("data-count"))
              for r in page.query_selector_all("#report-labels .label-row")}
    assert labels == {"yes": 10, "no": 5}


def test_broken_csv_row_is_named(new_job):
    page = new_job
    csv = "question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(11)) + "q11,\n"
    page.set_input_files("#create-drop-input",
                         files=[{"name": "qa.csv", "mimeType": "text/csv", "buffer": csv.encode()}])
    page.click("#create-convert")
    err = page.wait_for_selector("#create-convert-status .state.error")
    assert "qa.csv:13 [answer]: empty assistant cell" in err.inner_text()
    assert page.query_selector("#report") is None


def test_server_error_names_the_field_and_narrow_window(new_job, live_server):
    page = new_job
    page.set_viewport_size({"width": 480, "height": 900})
    drop(page, "#create-drop", "small.jsonl", chat_jsonl(12).decode())
    page.wait_for_selector("#report[data-ok=true]")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 480, f"the create page scrolls sideways at 480 px ({width} px wide)"
    page.fill("#hp-batch_size", "9999")
    err = page.wait_for_selector("#create-report .state.error")
    assert "field: method.supervised.hyperparameters.batch_size" in err.inner_text()
    assert page.get_attribute("#hp-batch_size", "aria-invalid") == "true"
    assert not page.is_visible("#create-submit")
    # An error only the create call finds is shown with its field, and the field is marked.
    page.fill("#hp-batch_size", "")
    page.wait_for_selector("#report[data-ok=true]")
    page.fill("#create-suffix", "not a suffix!")
    page.click("#create-submit")
    err = page.wait_for_selector("#create-error .state.error")
    assert "field: suffix" in err.inner_text()
    assert page.get_attribute("#create-suffix", "aria-invalid") == "true"
    assert page.url.endswith(NEW)


def test_preference_file_offers_dpo(new_job, live_server):
    page = new_job
    pairs = "".join(json.dumps({
        "input": {"messages": [{"role": "user", "content": f"Say something nice about {i}."}]},
        "preferred_output": [{"role": "assistant", "content": f"{i} is lovely."}],
        "non_preferred_output": [{"role": "assistant", "content": f"{i} is dull."}]}) + "\n" for i in range(12))
    assert page.is_disabled("#method-dpo")
    drop(page, "#create-drop", "pairs.jsonl", pairs)
    page.wait_for_selector("#method-dpo:checked")  # preference data: DPO is offered and chosen
    page.wait_for_selector("#report[data-ok=true]")
    assert page.inner_text("#report [data-stat=method]") == "dpo"
    assert page.is_visible("#hp-beta")
    page.fill("#hp-beta", "0.2")
    page.fill("#hp-n_epochs", "1")
    page.wait_for_function("document.querySelector('#hp-n_epochs-auto').textContent === 'set: 1'")
    page.click("#create-submit")
    page.wait_for_url(re.compile(r".*#/jobs/ftjob-[^/?]+$"))
    client = live_server.client()
    job = client.fine_tuning.jobs.retrieve(page.url.rsplit("/", 1)[-1])
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    client.fine_tuning.jobs.cancel(job.id)
