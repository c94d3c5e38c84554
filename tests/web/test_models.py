"""The models page in a real browser against a live server: base models with context length,
parameters and size; a model fine-tuned by a small job exported as GGUF with its progress shown
until it completes, then downloaded; deleting the fine-tuned model after confirming."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from tests.support.web import fine_tune, shot, signed_in

# Records every progress value the first export row shows.
OBSERVE = """() => {
  window.__progress = [];
  new MutationObserver(() => {
    const p = document.querySelector('#md-exports .md-progress');
    if (p && window.__progress[window.__progress.length - 1] !== +p.dataset.progress) window.__progress.push(+p.dataset.progress);
  }).observe(document.getElementById('md-exports'), {subtree: true, childList: true, attributes: true});
}"""


@pytest.fixture(scope="module")
def fine_tuned(live_server):
    return fine_tune(live_server.client(), "models").fine_tuned_model


def _row(page, model_id: str):
    return page.locator(f"#md-list tr[data-key='{model_id}']")


def test_models_list_with_metadata(page, live_server, fine_tuned, tiny_model_dir):
    folder = Path(tiny_model_dir)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    with open(folder / "model.safetensors", "rb") as fh:
        header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
    params = sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    signed_in(page, live_server, "/models")
    tiny = _row(page, "openft-tiny")
    tiny.wait_for()
    assert tiny.locator(".md-context").inner_text() == "2,048"
    assert tiny.locator(".md-params").inner_text() == f"{params / 1e6:.1f}M"
    assert tiny.locator(".md-size").inner_text() == f"{size / 1024 / 1024:.1f} MB"
    ft = _row(page, fine_tuned)
    assert "fine-tuned" in ft.inner_text() and ft.locator(".md-delete").count() == 1
    assert tiny.locator(".md-delete").count() == 0  # base models cannot be deleted
    assert ft.locator("a.md-try").get_attribute("href") == f"#/playground?models={fine_tuned.replace(':', '%3A')}"
    shot(page, "models")


def test_export_with_progress_and_download(page, live_server, fine_tuned, tmp_path):
    signed_in(page, live_server, "/models")
    page.wait_for_selector("#md-exports .state.empty")
    page.evaluate(OBSERVE)
    _row(page, fine_tuned).locator(".md-export").click()
    page.select_option("#md-format", "gguf")
    page.select_option("#md-quant", "q8_0")
    page.click("#md-export-start")
    row = page.locator("#md-exports tbody tr").first
    row.locator(".badge[data-status='succeeded']").wait_for(timeout=180_000)
    seen = page.evaluate("window.__progress")
    assert seen[0] < 100 and seen[-1] == 100 and seen == sorted(seen), seen
    assert "q8_0" in row.inner_text() and fine_tuned in row.inner_text()
    shot(page, "models-export")
    with page.expect_download() as dl:
        row.locator(".md-download").click()
    path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(path)
    assert path.name.endswith("-q8_0.gguf") and path.read_bytes()[:4] == b"GGUF"
    from gguf import GGUFReader

    assert any(t.name == "blk.0.attn_q.weight" for t in GGUFReader(str(path)).tensors)


def test_delete_needs_confirmation(page, live_server, fine_tuned):
    signed_in(page, live_server, "/models")
    ft = _row(page, fine_tuned)
    ft.wait_for()
    ft.locator(".md-delete").click()
    ft.locator(".md-delete-no").click()  # cancel keeps it
    assert live_server.client().models.retrieve(fine_tuned).id == fine_tuned
    ft.locator(".md-delete").click()
    ft.locator(".md-delete-yes").click()
    page.wait_for_selector(f"#md-list tr[data-key='{fine_tuned}']", state="detached")
    assert fine_tuned not in [m.id for m in live_server.client().models.list()]


def test_narrow_window_and_error_state(page, live_server):
    page.set_viewport_size({"width": 480, "height": 800})
    signed_in(page, live_server, "/models")
    page.wait_for_selector("#md-list tr[data-key='openft-tiny']")
    assert page.evaluate("document.documentElement.scrollWidth") <= 480
    page.route("**/v1/exports", lambda route: route.fulfill(status=500, content_type="application/json",
                                                          body='{"error": {"message": "disk on fire"}}'))
    page.reload()
    page.wait_for_selector("#md-exports .state.error >> text=disk on fire")
