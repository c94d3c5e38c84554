"""The playground in a real browser against a live server: two models side by side (the tiny base
and a model fine-tuned on it by a small job) each streaming an answer token by token, sync mode
and per-panel inputs, stop, an error shown in its panel, and "copy as code" whose curl and Python
actually run against the server with the key taken from the environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.web import fine_tune, shot, signed_in

# Records every text the first assistant bubble of each panel shows, as it changes.
OBSERVE = """() => {
  window.__seen = {};
  const root = document.getElementById("pg-panels");
  new MutationObserver(() => {
    document.querySelectorAll(".pg-panel").forEach((p) => {
      const t = p.querySelector(".pg-msg.assistant .pg-text");
      if (!t) return;
      const seen = (window.__seen[p.dataset.panel] ||= []);
      if (seen[seen.length - 1] !== t.textContent) seen.push(t.textContent);
    });
  }).observe(root, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def fine_tuned(live_server):
    """A model fine-tuned on openft-tiny by a 3-step job, and one of its checkpoints."""
    client = live_server.client()
    job = fine_tune(client, "play")
    ckpts = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    return job.fine_tuned_model, ckpts[0].fine_tuned_model_checkpoint


def _panel(page, i: int):
    return page.locator(".pg-panel").nth(i)


def _wait_answers(page, n_panels: int, n_answers: int = 1):
    page.wait_for_function(
        """([n, k]) => { const ps = document.querySelectorAll('.pg-panel');
             return ps.length === n && [...ps].every((p) => p.querySelectorAll('.pg-msg.assistant.done').length >= k); }""",
        arg=[n_panels, n_answers], timeout=120_000)


def test_two_models_stream_side_by_side(page, live_server, fine_tuned):
    ft_model, _ = fine_tuned
    signed_in(page, live_server, f"/playground?models=openft-tiny,{ft_model}")
    page.wait_for_selector(".pg-panel >> nth=1")
    assert _panel(page, 0).locator("select.pg-model").input_value() == "openft-tiny"
    assert _panel(page, 1).locator("select.pg-model").input_value() == ft_model
    page.fill("#pg-system", "Classify the review as positive or negative.")
    for i in range(2):
        _panel(page, i).locator(".pg-max").fill("24")
        _panel(page, i).locator(".pg-temp").fill("0.8")
    page.evaluate(OBSERVE)
    page.fill("#pg-input", "Review 1: the product was great.")
    page.click("#pg-send")
    _wait_answers(page, 2)
    seen = page.evaluate("window.__seen")
    for i in range(2):
        panel = _panel(page, i)
        text = panel.locator(".pg-msg.assistant .pg-text").inner_text()
        assert text.strip(), f"panel {i} has no answer"
        states = seen[panel.get_attribute("data-panel")]
        # Streamed: the bubble showed several growing prefixes of the final answer, not one jump.
        assert len(states) > 2, states
        assert all(states[k + 1].startswith(states[k]) for k in range(len(states) - 1)), states
        assert int(panel.locator(".pg-msg.assistant").get_attribute("data-chunks")) > 1
        assert panel.locator(".pg-msg.user").inner_text().endswith("Review 1: the product was great.")
        assert "tokens" in panel.locator(".pg-meta").inner_text()
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top in the full-page shot
    shot(page, "playground")


def test_sync_off_each_panel_has_its_own_input(page, live_server, fine_tuned):
    ft_model, ckpt = fine_tuned
    signed_in(page, live_server, f"/playground?models=openft-tiny,{ckpt}")
    page.wait_for_selector(".pg-panel >> nth=1")
    assert _panel(page, 1).locator("select.pg-model").input_value() == ckpt
    page.click("#pg-add")
    assert page.locator(".pg-panel").count() == 3 and page.is_disabled("#pg-add")
    _panel(page, 2).locator(".pg-remove").click()
    assert page.locator(".pg-panel").count() == 2
    page.uncheck("#pg-sync")
    assert page.is_hidden("#pg-shared")
    second = _panel(page, 1)
    second.locator(".pg-max").fill("8")
    second.locator(".pg-panel-input").fill("Only to the checkpoint")
    second.locator(".pg-panel-input").press("Control+Enter")
    second.locator(".pg-msg.assistant.done").wait_for()
    assert _panel(page, 0).locator(".pg-msg").count() == 0
    assert second.locator(".pg-msg.user").inner_text().endswith("Only to the checkpoint")
    page.check("#pg-sync")
    assert page.is_visible("#pg-shared") and second.locator(".pg-own").is_hidden()


def test_stop_and_errors_in_the_panel(page, live_server):
    signed_in(page, live_server, "/playground?models=openft-tiny,openft-tiny")
    page.wait_for_selector(".pg-panel >> nth=1")
    first, second = _panel(page, 0), _panel(page, 1)
    first.locator(".pg-max").fill("1500")
    second.locator(".pg-max").fill("100000")  # past the tiny model's 2048-token context
    page.fill("#pg-input", "Tell me a long story.")
    page.click("#pg-send")
    err = second.locator(".pg-status .state.error")
    err.wait_for()
    assert "context length" in err.inner_text()
    assert second.locator(".pg-msg.user.failed").count() == 1
    page.wait_for_function("() => +(document.querySelector('.pg-panel .pg-msg.assistant')?.dataset.chunks || 0) > 2")
    page.click("#pg-stop")
    first.locator(".pg-msg.assistant.done").wait_for()
    assert first.locator(".pg-meta").inner_text().startswith("stopped")
    assert page.is_disabled("#pg-stop") and page.is_enabled("#pg-send")
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top in the full-page shot
    shot(page, "playground-error")


def test_copy_as_code_runs(page, live_server, tmp_path):
    signed_in(page, live_server, "/playground?models=openft-tiny")
    page.wait_for_selector(".pg-panel")
    panel = _panel(page, 0)
    page.fill("#pg-system", "Be brief.")
    panel.locator(".pg-max").fill("5")
    panel.locator(".pg-temp").fill("0.3")
    panel.locator(".pg-stops").fill("END, \\n\\n")
    page.fill("#pg-input", "It's \"quoted\" and it's fine")
    page.click("#pg-send")
    panel.locator(".pg-msg.assistant.done").wait_for()
    answer = panel.locator(".pg-msg.assistant .pg-text").inner_text()
    panel.locator(".pg-code-btn").click()
    curl, python = panel.locator(".pg-curl").inner_text(), panel.locator(".pg-python").inner_text()
    assert live_server.api_key not in curl + python
    assert "$OPENFT_API_KEY" in curl and 'os.environ["OPENFT_API_KEY"]' in python
    body = json.loads(curl.split(" -d '", 1)[1].rsplit("'", 1)[0].replace("'\\''", "'"))
    assert body == {"model": "openft-tiny", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "It's \"quoted\" and it's fine"},
        {"role": "assistant", "content": answer}], "temperature": 0.3, "max_tokens": 5, "stop": ["END", "\n\n"],
        "stream": True}
    env = {**os.environ, "OPENFT_API_KEY": live_server.api_key}
    script = tmp_path / "snippet.py"
    script.write_text(python)
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    if shutil.which("curl") and shutil.which("bash"):
        run = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and "data: [DONE]" in run.stdout, run.stdout + run.stderr
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top in the full-page shot
    shot(page, "playground-code")


def test_narrow_window(page, live_server):
    page.set_viewport_size({"width": 480, "height": 800})
    signed_in(page, live_server, "/playground?models=openft-tiny,openft-tiny")
    page.wait_for_selector(".pg-panel >> nth=1")
    assert page.evaluate("document.documentElement.scrollWidth") <= 480
