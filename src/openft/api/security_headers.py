"""Security headers on every HTTP response: the dashboard's and the API's.

- `Content-Security-Policy`: the dashboard (everything outside `/v1`) may load scripts, styles,
  fonts and data only from its own origin (`'self'`, no inline script or style, no eval), images
  also from `data:` (the blank favicon) and `blob:` (downloads), and may not be framed
  (`frame-ancestors 'none'`). API answers (`/v1`, `/health`) are data, never documents:
  `default-src 'none'`. FastAPI's `/docs` page loads Swagger UI from a CDN with an inline
  script, so it gets only the framing rule.
- `X-Frame-Options: DENY` (older browsers' form of frame-ancestors), `X-Content-Type-Options:
  nosniff` (a stored file served as text is never run as a script or style), `Referrer-Policy:
  no-referrer`.

Pure ASGI (streamed answers pass through unbuffered); a header the app set itself is kept.
Knows nothing about routes beyond their path prefixes.
"""

from __future__ import annotations

DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                 "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                 "frame-ancestors 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = "frame-ancestors 'none'"
COMMON = ((b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
          (b"referrer-policy", b"no-referrer"))


def csp_for(path: str) -> str:
    """The Content-Security-Policy of the answer to a request for `path`."""
    if path == "/health" or path == "/v1" or path.startswith("/v1/") or path == "/openapi.json":
        return API_CSP
    if path == "/docs" or path.startswith("/docs/"):
        return DOCS_CSP
    return DASHBOARD_CSP


class SecurityHeadersMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = ((b"content-security-policy", csp_for(scope.get("path", "")).encode()), *COMMON)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                message["headers"] = headers + [(k, v) for k, v in extra if k not in have]
            await send(message)

        await self.app(scope, receive, send_with_headers)
