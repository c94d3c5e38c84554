"""Webhook test helpers: a real HTTP(S) receiver in a thread that records every request and
answers the status codes it is told, the delivering server's settings, a second project's client."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """POSTs to `url` are recorded as (headers, body); the answers are `codes` in order, then 200.
    `tls`: serve HTTPS with that server-side SSLContext. `hold`: seconds the first answer waits
    (so that the next attempt is signed in a later second than the first)."""

    def __init__(self, codes=(), tls=None, hold: float = 0.0):
        self.codes = list(codes)
        self.requests: list[tuple[dict, bytes]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.cond:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    code = receiver.codes.pop(0) if receiver.codes else 200
                    first = len(receiver.requests) == 1
                    receiver.cond.notify_all()
                if first and hold:
                    time.sleep(hold)
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
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"received {len(self.requests)} of {n} webhook requests")
                self.cond.wait(left)
            return list(self.requests[:n])

    def events(self, n: int = 1, timeout: float = 60.0) -> list[dict]:
        return [json.loads(body) for _, body in self.wait(n, timeout)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


DELIVERING_ENV = {"OPENFT_WEBHOOKS_ALLOW_PRIVATE": "1", "OPENFT_WEBHOOKS_RETRY_SECONDS": "0.2",
                  "OPENFT_WEBHOOKS_MAX_ATTEMPTS": "3"}


def other_client(server: LiveServer, name: str = "other-project"):
    """A client holding a key of a second project of `server`."""
    return server.client(api_key=server.new_key(name)[1])
