"""The jobs list and the job page in a real browser against `openft serve` (embedded worker, the
tiny model): a job created through the SDK is watched to `succeeded` on its page without a
reload (the charts' points equal the API's metrics), its events, checkpoints and results file;
a running job cancelled from its page; a failed job's error with file, line and field; the list
with its status filter, paging and empty state; a real DPO job's reward-margin and reward-accuracy curves.

Screenshots (OPENFT_SCREENSHOTS=docs/screenshots): jobs-empty, jobs-list, job-running, job-dpo,
job-succeeded, job-failed, job-narrow.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.data import chat_jsonl, dpo_method, pref_jsonl, upload
from tests.support.wait import wait_job
from tests.support.web import shot, signed_in

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from dashboard import seed_jobs, seed_metrics  # noqa: E402

CHART_JS = """(id) => { const u = document.querySelector(id)._uplot;
  return {labels: u.series.map((s) => s.label), data: u.data, distr: u.scales.y.distr}; }"""


@pytest.fixture(scope="module", autouse=True)
def _tiny(tiny_model_dir):  # built once, outside the jobs' time
    return tiny_model_dir


def http(server, key=None):
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key or server.api_key}"},
                        timeout=60)


def chart(page, name):
    out = page.evaluate(CHART_JS, f"#chart-{name}")
    return dict(zip(out["labels"], out["data"])), out["distr"]


def test_empty_list_says_how_to_start(page, live_server):
    signed_in(page, live_server, "/jobs")
    box = page.wait_for_selector("#jobs-empty")
    text = box.inner_text()
    assert "No fine-tuning jobs yet" in text and "client.fine_tuning.jobs.create" in text
    assert page.get_attribute("#jobs-create", "href") == "#/jobs/new"
    assert not page.is_visible("#jobs-next")  # one page: no pager
    shot(page, "jobs-empty")


@pytest.mark.slow
def test_job_page_live_until_succeeded(page, live_server):
    sdk = live_server.client()
    train = upload(sdk, chat_jsonl(12), "train.jsonl")
    valid = upload(sdk, chat_jsonl(4, seed=1), "valid.jsonl")
    job = sdk.fine_tuning.jobs.create(
        model="openft-tiny", training_file=train.id, validation_file=valid.id, suffix="web",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}})
    signed_in(page, live_server, f"/jobs/{job.id}")
    page.wait_for_selector("#job-status .badge")
    opened_as = page.get_attribute("#job-status .badge", "data-status")
    assert opened_as != "succeeded"  # so whatever the charts show came in while the page was open
    page.evaluate("window.__sameDocument = true")
    page.wait_for_selector("#job-status .badge[data-status=succeeded]", timeout=300_000)
    c = http(live_server)
    metrics = c.get(f"/fine_tuning/jobs/{job.id}/metrics").json()
    n = len(metrics["steps"])
    assert n > 0
    page.wait_for_function(f"document.querySelector('#chart-loss').dataset.points === '{n}'", timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True  # no reload: polling brought every point

    loss, distr = chart(page, "loss")
    assert loss["step"] == metrics["steps"] and distr == 1
    for key in ("train_loss", "valid_loss", "full_valid_loss"):
        if any(v is not None for v in metrics[key]):
            assert loss[key] == metrics[key], key
    assert "full_valid_loss" in loss  # the per-epoch full validation points are drawn
    acc, _ = chart(page, "accuracy")
    assert acc["step"] == metrics["steps"]
    assert acc["train_mean_token_accuracy"] == metrics["train_mean_token_accuracy"]
    assert acc["full_valid_mean_token_accuracy"] == metrics["full_valid_mean_token_accuracy"]

    # progress, facts, hyperparameters (auto resolved), no actions left for a finished job
    assert page.get_attribute("#job-progress", "aria-valuenow") == "100"
    assert page.inner_text("#job-progress-text").startswith(f"Step {n} / {metrics['total_steps']}")
    done = sdk.fine_tuning.jobs.retrieve(job.id)
    assert done.fine_tuned_model in page.inner_text("#job-facts")
    assert page.get_attribute("#try-model", "href") == f"#/playground?models={done.fine_tuned_model.replace(':', '%3A')}"
    assert page.inner_text("#job-hyperparameters dd[data-key=n_epochs]") == "2"
    assert page.inner_text("#job-hyperparameters dd[data-key=learning_rate_multiplier]") == \
        str(done.hyperparameters.learning_rate_multiplier)
    assert page.query_selector("#job-cancel") is None

    # events: every event of the API, newest first
    events = [e.message for e in sdk.fine_tuning.jobs.list_events(job.id, limit=100)]
    shown = page.eval_on_selector_all("#job-events li .msg", "els => els.map(e => e.textContent)")
    assert shown == events and "The job has successfully completed" in shown

    # checkpoints with their metrics and a playground link each
    ckpts = sorted(sdk.fine_tuning.jobs.checkpoints.list(job.id).data, key=lambda x: x.step_number)
    assert ckpts
    keys = page.eval_on_selector_all("#job-checkpoints tbody tr", "rs => rs.map(r => r.dataset.key)")
    assert keys == [x.fine_tuned_model_checkpoint for x in ckpts]
    first = page.query_selector(f"#job-checkpoints tr[data-key='{ckpts[0].fine_tuned_model_checkpoint}']")
    assert first.query_selector("td.m-train-loss").inner_text() == f"{ckpts[0].metrics.train_loss:.4f}"
    assert first.query_selector("a.try-playground").get_attribute("href") == \
        "#/playground?models=" + ckpts[0].fine_tuned_model_checkpoint.replace(":", "%3A")

    # the results file downloads with the key, byte for byte
    with page.expect_download() as dl:
        page.click("#download-results")
    got = Path(dl.value.path()).read_bytes()
    assert got == c.get(f"/files/{done.result_files[0]}/content").content and got.startswith(b"step,")

    # smoothing adds a smoothed series and leaves the raw one; log scale switches the loss axis
    page.eval_on_selector("#chart-smoothing", "el => { el.value = '0.6'; el.dispatchEvent(new Event('input')); }")
    page.wait_for_function("document.querySelector('#chart-loss')._uplot.series.some(s => s.label === 'train_loss (smoothed)')")
    loss, _ = chart(page, "loss")
    assert loss["train_loss"] == metrics["train_loss"] and len(loss["train_loss (smoothed)"]) == n
    page.check("#chart-log")
    page.wait_for_function("document.querySelector('#chart-loss')._uplot.scales.y.distr === 3")
    page.eval_on_selector("#chart-smoothing", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
    page.uncheck("#chart-log")
    page.wait_for_function("document.querySelector('#chart-loss')._uplot.series.length === "
                           "document.querySelector('#chart-loss')._uplot.data.length && "
                           "!document.querySelector('#chart-loss')._uplot.series.some(s => /smoothed/.test(s.label))")
    shot(page, "job-succeeded")


@pytest.mark.slow
def test_pause_resume_and_cancel_a_running_job_from_its_page(page, live_server):
    sdk = live_server.client()
    train = upload(sdk, chat_jsonl(12), "long.jsonl")
    job = sdk.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id, suffix="long",
                                      method={"type": "supervised", "supervised": {"hyperparameters": {
                                          "n_epochs": 50, "batch_size": 1}}})
    signed_in(page, live_server, f"/jobs/{job.id}")
    page.wait_for_selector("#job-status .badge[data-status=running]", timeout=120_000)
    page.wait_for_function("Number(document.querySelector('#chart-loss').dataset.points) >= 3", timeout=120_000)
    assert page.is_enabled("#job-pause") and page.is_enabled("#job-cancel") and not page.is_enabled("#job-resume")
    assert page.inner_text("#job-progress-text").startswith("Step ")
    shot(page, "job-running")
    # pause: honoured at the job's next checkpoint (one per epoch of 12 steps), then resume
    page.click("#job-pause")
    page.wait_for_selector("#job-status .badge[data-status=paused]", timeout=120_000)
    assert page.is_enabled("#job-resume") and not page.is_enabled("#job-pause") and page.is_enabled("#job-cancel")
    page.click("#job-resume")
    page.wait_for_selector("#job-status .badge[data-status=queued], #job-status .badge[data-status=running]")
    assert sdk.fine_tuning.jobs.retrieve(job.id).status in ("queued", "running")
    page.once("dialog", lambda d: d.accept())
    page.click("#job-cancel")
    page.wait_for_selector("#job-status .badge[data-status=cancelled]")
    assert sdk.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert page.query_selector("#job-cancel") is None  # nothing left to do with it
    wait_job(sdk, job.id, {"cancelled"})


def test_failed_job_shows_error_with_file_line_and_field(page, live_server):
    import json

    sdk = live_server.client()
    lines = chat_jsonl(12).decode().splitlines()
    record = json.loads(lines[4])
    record["messages"][1]["role"] = "bogus"  # line 5, field messages[1].role
    lines[4] = json.dumps(record)
    bad = upload(sdk, ("\n".join(lines) + "\n").encode(), "broken.jsonl")
    job = sdk.fine_tuning.jobs.create(model="openft-tiny", training_file=bad.id, suffix="broken")
    wait_job(sdk, job.id, {"failed"})
    signed_in(page, live_server, f"/jobs/{job.id}")
    box = page.wait_for_selector("#job-error")
    err = sdk.fine_tuning.jobs.retrieve(job.id).error
    assert err.message in box.inner_text() and "bogus" in err.message
    assert page.inner_text("#job-error .error-file") == "broken.jsonl"
    assert page.inner_text("#job-error .error-line") == "5"
    assert page.inner_text("#job-error .error-field") == "messages[1].role"
    assert page.inner_text("#job-error .error-code") == err.code
    assert page.inner_text("#job-error .error-param").startswith("training_file")
    assert bad.id in page.inner_text("#job-error .error-param")
    assert "This job wrote no training metrics." in page.inner_text("#charts-empty")
    shot(page, "job-failed")


def test_list_with_status_filter(page, live_server):
    c = http(live_server)
    have = {j["status"] for j in c.get("/fine_tuning/jobs", params={"limit": 100}).json()["data"]}
    db = live_server.db()
    try:  # the slow tests above leave a succeeded and a cancelled job; without them, rows stand in
        for status in {"succeeded", "cancelled", "failed"} - have:
            seed_jobs(db, 1, status=status, start=time.time())
    finally:
        db.dispose()
    everything = c.get("/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert {j["status"] for j in everything} == {"succeeded", "cancelled", "failed"}
    signed_in(page, live_server, "/jobs")
    page.wait_for_selector("#jobs-table")
    rows = page.eval_on_selector_all("#jobs-table tbody tr", "rs => rs.map(r => r.dataset.key)")
    assert rows == [j["id"] for j in everything]  # newest first, as the API pages them
    ok = next(j for j in everything if j["status"] == "succeeded")
    row = page.query_selector(f"#jobs-table tr[data-key='{ok['id']}']")
    assert row.query_selector(".badge").get_attribute("data-status") == "succeeded"
    assert ok["fine_tuned_model"] in row.query_selector("td.job-ft-model").inner_text()
    assert row.query_selector("td.job-ft-model button.copy") is not None
    assert row.query_selector("td.job-suffix").inner_text() == ok["suffix"]
    assert row.query_selector("td.job-tokens").inner_text().replace(",", "") == str(ok["trained_tokens"])
    shot(page, "jobs-list")

    page.select_option("#jobs-status", "failed")
    page.wait_for_function("location.hash === '#/jobs?status=failed'")
    page.wait_for_function("document.querySelectorAll('#jobs-table tbody tr').length === 1")
    failed = next(j for j in everything if j["status"] == "failed")
    assert page.get_attribute("#jobs-table tbody tr", "data-key") == failed["id"]
    page.select_option("#jobs-status", "paused")
    page.wait_for_selector("#jobs-empty")
    assert "No jobs with status" in page.inner_text("#jobs-empty")

    page.select_option("#jobs-status", "")
    page.wait_for_selector(f"#jobs-table tr[data-key='{ok['id']}']")
    page.focus(f"#jobs-table tr[data-key='{ok['id']}']")
    page.keyboard.press("Enter")  # rows open with the keyboard too
    page.wait_for_function(f"location.hash === '#/jobs/{ok['id']}'")
    page.wait_for_selector("#job-status .badge[data-status=succeeded]")


def test_paging_a_thousand_jobs_project_and_narrow_window(page, live_server):
    project, key = live_server.new_key("many-jobs")
    db = live_server.db()
    try:
        ids = seed_jobs(db, 30, project=project)
        theirs = seed_jobs(db, 1)[0]  # in the admin key's project
    finally:
        db.dispose()
    newest = ids[::-1]
    signed_in(page, live_server, "/jobs", key=key)
    page.wait_for_selector("#jobs-table")
    rows = lambda: page.eval_on_selector_all("#jobs-table tbody tr", "rs => rs.map(r => r.dataset.key)")  # noqa: E731
    assert rows() == newest[:25] and page.inner_text("#jobs-page") == "Page 1" and page.is_visible("#jobs-next")
    assert not page.is_enabled("#jobs-prev")
    page.click("#jobs-next")
    page.wait_for_function("document.querySelector('#jobs-page').textContent === 'Page 2'")
    assert rows() == newest[25:] and not page.is_enabled("#jobs-next")
    page.click("#jobs-prev")
    page.wait_for_function("document.querySelector('#jobs-page').textContent === 'Page 1'")
    assert rows() == newest[:25]

    page.set_viewport_size({"width": 480, "height": 800})
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 480, f"the jobs list scrolls sideways at 480 px ({width} px)"

    # another project's job is not there for this key
    page.evaluate(f"location.hash = '#/jobs/{theirs}'")
    assert f"No job {theirs} in this project." in page.wait_for_selector("main .state.error").inner_text()


def test_job_page_narrow_window(page, live_server):
    """A 200-step job (seeded as the server stores it) at 480 px: charts fit, nothing scrolls sideways."""
    db = live_server.db()
    try:
        jid = seed_jobs(db, 1, start=time.time() - 120)[0]
        seed_metrics(db, jid, range(1, 201), 200)
    finally:
        db.dispose()
    page.set_viewport_size({"width": 480, "height": 800})
    signed_in(page, live_server, f"/jobs/{jid}")
    page.wait_for_function("document.querySelector('#chart-loss')?.dataset.points === '200'")
    page.wait_for_function("document.querySelector('#chart-loss .uplot').offsetWidth <= 460")  # resized
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 480, f"the job page scrolls sideways at 480 px ({width} px)"
    loss, _ = chart(page, "loss")
    assert loss["step"] == list(range(1, 201)) and sum(v is not None for v in loss["valid_loss"]) == 20
    assert not page.is_visible("#figure-reward_margin") and not page.is_visible("#figure-reward_accuracy")  # SFT
    assert sum(v is not None for v in loss["full_valid_loss"]) == 4  # one per epoch
    shot(page, "job-narrow")


def test_live_points_after_a_resume_replace_the_repeated_steps(page, live_server):
    """js/chart.js's appendColumns: a later answer starting at a step the page already holds (a
    job resumed from an earlier checkpoint) drops the held points from that step on; ema keeps
    nulls and is debiased."""
    signed_in(page, live_server, "/jobs")
    out = page.evaluate("""async () => {
      const { appendColumns, ema } = await import('./js/chart.js');
      const held = { steps: [1, 2, 3, 4], train_loss: [4, 3, 2, 1], valid_loss: [null, 5, null, 4] };
      appendColumns(held, { steps: [3, 4, 5], train_loss: [9, 8, 7], valid_loss: [null, null, 6],
                            full_valid_loss: [null, 1, null] });
      const same = appendColumns(held, { steps: [], train_loss: [] });
      return { held, same, smooth: ema([1, null, 3], 0.5) };
    }""")
    assert out["held"] == {"steps": [1, 2, 3, 4, 5], "train_loss": [4, 3, 9, 8, 7], "valid_loss": [None, 5, None, None, 6],
                           "full_valid_loss": [None, None, None, 1, None]}
    assert out["same"] is False
    assert out["smooth"][0] == 1 and out["smooth"][1] is None and abs(out["smooth"][2] - 1.75 / 0.75) < 1e-12


@pytest.mark.slow
def test_preference_job_page_charts_rewards(page, live_server):
    """A real DPO job (tiny model, embedded worker): its page adds reward-margin and reward-accuracy
    curves equal to the metrics endpoint's columns (training and validation)."""
    sdk = live_server.client()
    train = upload(sdk, pref_jsonl(12), "prefs.jsonl")
    valid = upload(sdk, pref_jsonl(4, seed=1), "prefs-valid.jsonl")
    job = sdk.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id, validation_file=valid.id,
                                      method=dpo_method(n_epochs=2, batch_size=4, lora_r=8))
    job = wait_job(sdk, job.id, {"succeeded", "failed", "cancelled"}, timeout=480)
    assert job.status == "succeeded", job.error
    metrics = http(live_server).get(f"/fine_tuning/jobs/{job.id}/metrics").json()
    n = len(metrics["steps"])
    assert n > 0 and any(v is not None for v in metrics["valid_reward_margin"])
    signed_in(page, live_server, f"/jobs/{job.id}")
    page.wait_for_function(f"document.querySelector('#chart-reward_margin')?.dataset.points === '{n}'")
    assert page.is_visible("#figure-reward_margin") and page.is_visible("#figure-reward_accuracy")
    assert "Reward margin" in page.inner_text("#figure-reward_margin figcaption")
    for name in ("reward_margin", "reward_accuracy"):
        drawn, _ = chart(page, name)
        assert drawn["step"] == metrics["steps"]
        for key in (f"train_{name}", f"valid_{name}", f"full_valid_{name}"):
            assert drawn[key] == metrics[key], key
    _, distr = chart(page, "reward_accuracy")
    assert distr == 1
    shot(page, "job-dpo")
