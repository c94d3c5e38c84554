"""Every CLI command takes its API key in one order: --api-key, OPENFT_API_KEY, OPENAI_API_KEY,
then <data-dir>/admin_key (openft.cli.common.State.resolved_api_key); `openft data synthesize`
kept its own order (OPENAI_API_KEY first) before.

The commands run as real processes against a real HTTP endpoint that records the bearer token it
is sent and refuses every request (401)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading

import pytest


@pytest.fixture
def recorder():
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _refuse(self):
            seen.append(self.headers.get("Authorization", ""))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"error": {"message": "no", "type": "invalid_request_error", "param": null, "code": null}}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _refuse

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen
    httpd.shutdown()
    httpd.server_close()


def _run(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "openft", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("keys, expected", [
    ({"OPENFT_API_KEY": "ft-key", "OPENAI_API_KEY": "oa-key"}, "ft-key"),
    ({"OPENAI_API_KEY": "oa-key"}, "oa-key"),
])
def test_synthesize_and_other_commands_use_one_key_order(recorder, tmp_path, keys, expected):
    url, seen = recorder
    env = {k: v for k, v in os.environ.items() if k not in ("OPENFT_API_KEY", "OPENAI_API_KEY", "OPENFT_BASE_URL")}
    env.update(keys, OPENFT_DATA_DIR=str(tmp_path / "data"))
    doc = tmp_path / "doc.txt"
    doc.write_text("Owls hunt at night. They have silent feathers.\n")
    _run(["models", "list", "--base-url", url], env, tmp_path)
    _run(["data", "synthesize", str(doc), "-o", str(tmp_path / "out.jsonl"), "--model", "m", "--base-url", url],
         env, tmp_path)
    assert seen and set(seen) == {f"Bearer {expected}"}, seen


def test_synthesize_flag_wins_and_admin_key_file_is_the_last_resort(recorder, tmp_path):
    url, seen = recorder
    env = {k: v for k, v in os.environ.items() if k not in ("OPENFT_API_KEY", "OPENAI_API_KEY", "OPENFT_BASE_URL")}
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin_key").write_text("file-key\n")
    env["OPENFT_DATA_DIR"] = str(data)
    doc = tmp_path / "doc.txt"
    doc.write_text("Owls hunt at night.\n")
    out = str(tmp_path / "out.jsonl")
    _run(["data", "synthesize", str(doc), "-o", out, "--model", "m", "--base-url", url], env, tmp_path)
    assert set(seen) == {"Bearer file-key"}, seen
    seen.clear()
    _run(["data", "synthesize", str(doc), "-o", out, "--model", "m", "--base-url", url, "--api-key", "flag-key"],
         {**env, "OPENFT_API_KEY": "ft-key"}, tmp_path)
    assert set(seen) == {"Bearer flag-key"}, seen
