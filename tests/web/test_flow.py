"""The whole dashboard flow in one browser session, as a person would use it, against a live
`openft serve` on the tiny model: a wrong key, sign in, drop a training file, read the validation
report, split off a validation set, create the job, watch it finish with the curves drawn (the
chart's data points equal the API's metrics), try the fine-tuned model next to its base in the
playground with an answer streamed in each panel, then cancel a second job from its page."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.data import chat_jsonl
from tests.support.web import dashboard_url, drop, signed_in


def chart_series(page, selector: str) -> dict[str, list]:
    return page.evaluate("""(sel) => { const u = document.querySelector(sel)._uplot;
        return Object.fromEntries(u.series.map((s, i) => [i ? s.label : "step", u.data[i]])); }""", selector)


@pytest.mark.slow
def test_whole_flow(page, live_server):
    client = live_server.client()

    # A wrong key is a message on the sign-in page, not a blank page.
    page.goto(dashboard_url(live_server))
    page.fill("#api-key", "sk-wrong")
    page.click("form.signin button[type=submit]")
    assert "not accepted" in page.wait_for_selector("#signin-status .state.error").inner_text()

    # Sign in, drop a training file, read the report.
    signed_in(page, live_server, "/jobs/new?model=openft-tiny")
    page.wait_for_selector("#create-model option[value='openft-tiny']", state="attached")
    drop(page, "#create-drop", "reviews.jsonl", chat_jsonl(30, seed=3).decode())
    page.wait_for_selector("#report[data-ok=true]")
    assert page.inner_text("#report [data-stat=n_examples]").split(" ")[0] == "30"
    assert page.query_selector_all("#report-labels .label-row"), "the label distribution is shown"

    # Split off 20 % as the validation file, one epoch, create.
    page.fill("#create-split-pct", "20")
    page.click("#create-split")
    split = page.wait_for_selector("#create-split-result[data-valid]")
    assert split.get_attribute("data-valid")
    page.fill("#hp-n_epochs", "1")
    page.fill("#create-suffix", "flow")
    page.wait_for_selector("#create-submit:not([hidden])")
    page.click("#create-submit")
    page.wait_for_url(re.compile(r".*#/jobs/ftjob-[A-Za-z0-9]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.training_file and job.validation_file and job.model == "openft-tiny"

    # Watch it finish without reloading; the curves hold the API's points.
    page.wait_for_selector("#job-status .badge[data-status=succeeded]", timeout=240_000)
    metrics = httpx.get(f"{live_server.base_url}/fine_tuning/jobs/{job_id}/metrics",
                        headers={"Authorization": f"Bearer {live_server.api_key}"}).json()
    page.wait_for_function("document.querySelector('#chart-loss')?._uplot?.data[0].length > 0")
    drawn = chart_series(page, "#chart-loss")
    assert drawn["step"] == metrics["steps"]
    assert drawn["train_loss"] == pytest.approx(metrics["train_loss"])
    ft_model = client.fine_tuning.jobs.retrieve(job_id).fine_tuned_model
    assert ft_model and ft_model in page.inner_text("#job-facts")

    # The playground: the base and the fine-tuned model side by side, one input to both.
    page.click("#try-model")
    page.wait_for_url(re.compile(r".*#/playground\?models=.*"))
    page.wait_for_selector(".pg-panel[data-panel]")
    if len(page.query_selector_all(".pg-panel[data-panel]")) < 2:
        page.click("#pg-add")
    panels = page.query_selector_all(".pg-panel[data-panel]")
    panels[0].query_selector("select.pg-model").select_option("openft-tiny")
    panels[1].query_selector("select.pg-model").select_option(ft_model)
    for p in panels[:2]:
        p.query_selector(".pg-max").fill("8")
    page.fill("#pg-input", "They have great dinners.")
    page.click("#pg-send")
    page.wait_for_function("document.querySelectorAll('.pg-msg.assistant.done').length >= 2", timeout=120_000)
    answers = [t.strip() for t in page.eval_on_selector_all(".pg-msg.assistant.done .pg-text",
                                                            "els => els.map(e => e.textContent)")]
    assert len(answers) >= 2 and all(answers), answers

    # A second, longer job, cancelled from its page.
    big = client.files.create(file=("big.jsonl", chat_jsonl(60, seed=4)), purpose="fine-tune")
    other = client.fine_tuning.jobs.create(training_file=big.id, model="openft-tiny", hyperparameters={"n_epochs": 20})
    page.goto(dashboard_url(live_server) + f"#/jobs/{other.id}")
    page.wait_for_selector("#job-cancel:not([disabled])")
    page.once("dialog", lambda d: d.accept())
    page.click("#job-cancel")
    page.wait_for_selector("#job-status .badge[data-status=cancelled]", timeout=120_000)
    assert client.fine_tuning.jobs.retrieve(other.id).status == "cancelled"
