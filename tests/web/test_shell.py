"""The dashboard's frame in a real browser: served at `/` by `openft serve`, sign-in with a key,
a wrong key is a message (not a blank page), navigation, the narrow layout."""

from __future__ import annotations

from tests.support.web import dashboard_url, shot, signed_in


def test_served_at_root_without_network(live_server):
    import httpx

    base = dashboard_url(live_server)
    r = httpx.get(base)
    assert r.status_code == 200 and "<title>openft</title>" in r.text
    for asset in ("js/app.js", "js/api.js", "js/ui.js", "app.css", "vendor/uPlot.iife.min.js"):
        assert httpx.get(base + asset).status_code == 200, asset
    # Nothing is loaded from another host: every src/href is relative.
    assert "http://" not in r.text and "https://" not in r.text


def test_wrong_key_is_a_clear_message(page, live_server):
    page.goto(dashboard_url(live_server))
    page.fill("#api-key", "sk-not-a-real-key")
    page.click("form.signin button[type=submit]")
    msg = page.wait_for_selector("#signin-status .state.error")
    assert "not accepted" in msg.inner_text()
    assert page.query_selector("nav.topnav") is None
    shot(page, "signin-wrong-key")


def test_sign_in_navigate_and_sign_out(page, live_server):
    signed_in(page, live_server)
    for label, section in (("Playground", "playground"), ("Files", "files"), ("Models", "models"),
                           ("Evaluations", "evals"), ("Fine-tuning", "jobs")):
        page.click(f"nav.topnav >> text={label}")
        page.wait_for_selector(f"nav.topnav a.active[href='#/{section}']")
    # The key lives in this tab's sessionStorage only.
    assert page.evaluate("sessionStorage.getItem('openft.key')") == live_server.api_key
    assert page.evaluate("localStorage.length") == 0
    page.click("button.signout")
    page.wait_for_selector("#api-key")
    assert page.evaluate("sessionStorage.getItem('openft.key')") is None


def test_keyboard_sign_in_and_narrow_window(page, live_server):
    page.set_viewport_size({"width": 480, "height": 800})
    page.goto(dashboard_url(live_server))
    page.wait_for_selector("#api-key:focus")  # the key field has focus on load
    page.keyboard.type(live_server.api_key)
    page.keyboard.press("Enter")
    page.wait_for_selector("nav.topnav")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 480, f"the page scrolls sideways at 480 px ({width} px wide)"
