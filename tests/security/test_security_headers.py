"""Security headers over HTTP (issue 21, section 4, item 4): the dashboard's pages and assets
carry a Content-Security-Policy that allows only its own origin and no framing; API answers
(success, errors, the unauthenticated) a `default-src 'none'` one; every answer X-Frame-Options
DENY, X-Content-Type-Options nosniff and a Referrer-Policy. (In the browser: tests/web/.)"""

from __future__ import annotations

import httpx
import pytest

COMMON = {"x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def _get(server, path: str, auth: bool = True) -> httpx.Response:
    root = server.base_url.removesuffix("/v1")
    return httpx.get(root + path, headers={"Authorization": f"Bearer {server.api_key}"} if auth else {}, timeout=30)


def _policy(r: httpx.Response) -> dict[str, str]:
    out = {}
    for part in r.headers["content-security-policy"].split(";"):
        name, _, value = part.strip().partition(" ")
        out[name] = value
    return out


@pytest.mark.parametrize("path", ["/", "/index.html", "/js/app.js", "/js/pages/files.js", "/app.css",
                                  "/vendor/uPlot.iife.min.js"])
def test_dashboard_has_a_strict_policy(sec_server, path):
    r = _get(sec_server, path, auth=False)
    assert r.status_code == 200
    assert {k: r.headers.get(k) for k in COMMON} == COMMON
    csp = _policy(r)
    assert csp["default-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"  # no inline code, no eval
    assert csp["object-src"] == "'none'" and csp["base-uri"] == "'none'"


@pytest.mark.parametrize("path,auth,status", [("/v1/models", True, 200), ("/v1/files/file-nope", True, 404),
                                              ("/v1/models", False, 401), ("/v1/nowhere", True, 404),
                                              ("/health", False, 200)])
def test_api_answers_have_a_data_only_policy(sec_server, path, auth, status):
    r = _get(sec_server, path, auth=auth)
    assert r.status_code == status
    assert {k: r.headers.get(k) for k in COMMON} == COMMON
    csp = _policy(r)
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert r.headers["x-request-id"].startswith("req_")


def test_file_content_is_never_sniffed(sec_server):
    from tests.support.data import upload
    api = sec_server.client()
    f = upload(api, b'{"messages": [{"role": "user", "content": "<script>alert(1)</script>"}, '
                    b'{"role": "assistant", "content": "x"}]}\n')
    r = _get(sec_server, f"/v1/files/{f.id}/content")
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    assert _policy(r)["default-src"] == "'none'"
