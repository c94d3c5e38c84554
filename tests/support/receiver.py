"""A webhook receiver for the tests: a real HTTP(S) server in a thread that counts the attempts it
is sent, records each (headers, body, when it arrived) and answers attempt n with the n-th of the
status codes it is told (then 200). Also the delivering server's settings.

Knows HTTP only; the signature checks are the tests' (with the SDK's verifier).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.wait import wait_until

DELIVERING_ENV = {"OPENFT_WEBHOOKS_ALLOW_PRIVATE": "1", "OPENFT_WEBHOOKS_RETRY_SECONDS": "0.2",
                  "OPENFT_WEBHOOKS_MAX_ATTEMPTS": "3"}


class Receiver:
    """POSTs to `url` are recorded in `requests` as (headers, body), and the time each arrived in
    `received_at` (Unix seconds); attempt n is answered `codes[n-1]`, then 200.
    `tls`: serve HTTPS with that server-side SSLContext."""

    def __init__(self, codes=(), tls=None):
        self.codes = list(codes)
        self.requests: list[tuple[dict, bytes]] = []
        self.received_at: list[float] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.received_at.append(time.time())
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    attempt = len(receiver.requests)
                    code = receiver.codes[attempt - 1] if attempt <= len(receiver.codes) else 200
                self.send_response(code)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:  # an ssl.SSLContext with the server's certificate
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, n: int = 1, timeout: float = 60.0) -> list[tuple[dict, bytes]]:
        """The first `n` requests, once they arrived."""
        def arrived():
            with self.lock:
                return list(self.requests[:n]) if len(self.requests) >= n else None

        try:
            return wait_until(arrived, timeout, what=f"{n} webhook request(s)", interval=0.02)
        except AssertionError as e:
            raise AssertionError(f"received {len(self.requests)} of {n} webhook requests") from e

    def events(self, n: int = 1, timeout: float = 60.0) -> list[dict]:
        return [json.loads(body) for _, body in self.wait(n, timeout)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
