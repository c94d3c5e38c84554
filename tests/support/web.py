"""Driving the dashboard in a browser page (Playwright) as a person would: open it and sign in,
drop a file on an element, save screenshots for docs/ (OPENFT_SCREENSHOTS=DIR).

The browser itself is a fixture (tests/web/conftest.py). Knows the dashboard's sign-in form and
the server's URL; nothing about what a page shows.
"""

from __future__ import annotations

import os
from pathlib import Path


def dashboard_url(server) -> str:
    return server.base_url.removesuffix("/v1") + "/"


def signed_in(page, server, path: str = "/jobs", key: str | None = None):
    """Open the dashboard at #path and sign in through the form (as a person would)."""
    page.goto(dashboard_url(server) + f"#{path}")
    page.fill("#api-key", key or server.api_key)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("nav.topnav")
    return page


def shot(page, name: str) -> None:
    """Save a full-page screenshot as DIR/NAME.png when OPENFT_SCREENSHOTS=DIR (for docs/)."""
    if folder := os.environ.get("OPENFT_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def top_shot(page, name: str) -> None:
    """shot() scrolled to the top first: the sticky header would sit mid-page in a full-page shot."""
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, name)


def drop(page, selector: str, name: str, text: str) -> None:
    """Drop a file on an element as a person dragging it from their desktop would."""
    page.evaluate("""([sel, name, text]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([text], name, { type: "application/octet-stream" }));
        const zone = document.querySelector(sel);
        zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    }""", [selector, name, text])


def fine_tune(client, suffix: str):
    """A 3-step LoRA job on openft-tiny (12 examples, batch 4), followed to success."""
    from tests.support.data import chat_jsonl, upload
    from tests.support.wait import wait_job

    f = upload(client, chat_jsonl(12))
    job = client.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id, suffix=suffix,
                                         hyperparameters={"n_epochs": 1, "batch_size": 4})
    job = wait_job(client, job.id, timeout=400)
    assert job.status == "succeeded", job.error
    return job
