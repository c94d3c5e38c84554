"""The dashboard under its Content-Security-Policy in a real browser (issue 21, section 4, item 4):
every page loads and works with the policy the server sends (the `page` fixture fails a test on
any violation the console reports), an inline script injected into the page is refused (so the
policy is really in force), the dashboard cannot be framed, and a file name with bidi controls
is shown without them (item 6)."""

from __future__ import annotations

import io

import httpx

from tests.support.data import chat_jsonl
from tests.support.web import dashboard_url, signed_in

SECTIONS = (("Playground", "playground"), ("Files", "files"), ("Models", "models"), ("Evaluations", "evals"),
            ("Fine-tuning", "jobs"))


def test_every_section_works_under_the_policy(page, live_server):
    r = httpx.get(dashboard_url(live_server), timeout=30)
    assert "default-src 'self'" in r.headers["content-security-policy"]
    signed_in(page, live_server)
    for label, section in SECTIONS:
        page.click(f"nav.topnav >> text={label}")
        page.wait_for_selector(f"nav.topnav a.active[href='#/{section}']")
        page.wait_for_load_state("networkidle")
    page.goto(dashboard_url(live_server) + "#/jobs/new")
    page.wait_for_load_state("networkidle")
    assert page.csp_violations == []


def test_the_policy_is_enforced(page, live_server):
    signed_in(page, live_server)
    ran = page.evaluate("""() => new Promise((done) => {
        document.addEventListener("securitypolicyviolation", (e) => done(["refused", e.violatedDirective]));
        const s = document.createElement("script");
        s.textContent = "window.__injected = true";
        document.body.append(s);
        setTimeout(() => done([window.__injected === true ? "ran" : "not run", null]), 2000);
    })""")
    assert ran[0] == "refused" and ran[1].startswith("script-src"), ran
    page.csp_violations.clear()  # the one violation this test caused on purpose


def test_the_dashboard_cannot_be_framed(page, live_server):
    page.set_content(f'<iframe id="f" src="{dashboard_url(live_server)}"></iframe>')
    frame = page.wait_for_selector("#f")
    page.wait_for_load_state("load")
    inner = frame.content_frame()
    assert inner is None or inner.evaluate("() => document.querySelector('#app') === null")
    page.csp_violations.clear()  # the refusal to frame is reported as one


def test_bidi_controls_are_not_shown(page, live_server):
    f = live_server.client().files.create(file=("bill\u202egpj.exe.jsonl", io.BytesIO(chat_jsonl(3))),
                                          purpose="fine-tune")
    signed_in(page, live_server, f"/files/{f.id}")
    title = page.wait_for_selector("#file-title").inner_text()
    assert title == "billgpj.exe.jsonl" and "\u202e" not in page.title()
