"""A small HTTP proxy on the loopback in front of one test server, to play a flaky network.

`Proxy(upstream, rule)` forwards every request; `rule(method, path)` may answer instead:
`(status, headers, body)` answers it, "drop" closes the connection without an answer (the
request never reaches the server), "lost" forwards it and then closes the connection (the server
did the work, the client never hears), a function forwards it and answers with that function of
the server's body (to make a job look different). Every request is logged as `(time, method, path, status)`
(status None when dropped). Bounded: it serves until `close()`, on 127.0.0.1 only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host",
       "proxy-connection", "te", "trailer", "upgrade"}


class Proxy:
    def __init__(self, upstream: str, rule: Callable[[str, str], object] | None = None):
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.rule = rule or (lambda method, path: None)
        self.log: list[tuple[float, str, str, int | None]] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=self.upstream, timeout=120)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                verdict = proxy.rule(self.command, self.path)
                if verdict == "drop":
                    proxy._record(self.command, self.path, None)
                    self.close_connection = True
                    return
                if isinstance(verdict, tuple):
                    status, headers, payload = verdict
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                    r = proxy._http.request(self.command, self.path, content=body, headers=headers)
                    if verdict == "lost":
                        proxy._record(self.command, self.path, None)
                        self.close_connection = True
                        return
                    status, payload = r.status_code, r.content
                    if callable(verdict):
                        payload = verdict(payload)
                    headers = {k: v for k, v in r.headers.items() if k.lower() not in HOP}
                proxy._record(self.command, self.path, status)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, method: str, path: str, status: int | None) -> None:
        with self._lock:
            self.log.append((time.monotonic(), method, path, status))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rate_limit_first(n: int, retry_after: int = 1) -> Callable[[str, str], object]:
    """A rule: the first `n` requests get 429 with Retry-After; the rest go through."""
    left = [n]
    lock = threading.Lock()
    body = (b'{"error": {"message": "Rate limit reached, try again later.", "type": "requests", '
            b'"param": null, "code": "rate_limit_exceeded"}}')

    def rule(method: str, path: str):
        with lock:
            if left[0] <= 0:
                return None
            left[0] -= 1
        return 429, {"Retry-After": str(retry_after), "Content-Type": "application/json"}, body
    return rule
