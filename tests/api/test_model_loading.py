"""Cold models never make a request wait in silence (openft.serve.loading): a chat for a model
still loading gets a 503 `model_loading` with Retry-After and the stage in its message (the
default), or, with OPENFT_SERVE_LOAD_WAIT_S, waits without holding a worker thread, so the rest
of the API answers meanwhile; the server preloads OPENFT_PRELOAD_MODELS at start and every model
object says whether it is loaded.

Each load is held at its gate (`state.loads.gate`, an event) until the test opens it: what is
"still loading" is decided by the test, not by the machine's speed."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.servers import in_process_server
from tests.support.wait import wait_until

MODEL = "openft-tiny"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
MANY = 48   # more than AnyIO's 40 worker threads


def _headers(settings) -> dict:
    return {"Authorization": f"Bearer {settings.api_key}"}


def _serving(srv, settings, model: str = MODEL) -> dict:
    return httpx.get(f"{srv.base_url}/models/{model}", headers=_headers(settings), timeout=30).json()["serving"]


def _held(srv) -> threading.Event:
    gate = srv.app.state.openft.loads.gate = threading.Event()
    return gate


def test_chat_for_a_loading_model_is_503_with_retry_after_and_the_api_answers(settings):
    s = settings.model_copy(update={"serve_load_wait_s": 0})
    with in_process_server(s, worker=False) as srv:
        gate = _held(srv)
        try:
            assert _serving(srv, s)["state"] == "not_loaded"
            with httpx.Client(timeout=30) as http, ThreadPoolExecutor(MANY) as pool:
                replies = list(pool.map(lambda _: http.post(f"{srv.base_url}/chat/completions", json=CHAT,
                                                            headers=_headers(s)), range(MANY)))
                listed = http.get(f"{srv.base_url}/models", headers=_headers(s))
            assert not gate.is_set()  # every answer came while the load was still held
            assert [r.status_code for r in replies] == [503] * MANY
            err = replies[0].json()["error"]
            assert err["code"] == "model_loading" and err["param"] == "model" and err["type"] == "server_error"
            assert f"`{MODEL}` is still loading (waiting to start" in err["message"]
            assert int(replies[0].headers["retry-after"]) >= 1
            assert listed.status_code == 200
            view = _serving(srv, s)
            assert view["state"] == "loading" and view["stage"] == "waiting to start" and view["stages"] == 3
        finally:
            gate.set()
        wait_until(lambda: _serving(srv, s)["state"] == "ready", 120, what="the model to load")
        # the SDK, retrying as it does on a 503, gets its answer once the model is loaded
        r = srv.client.chat.completions.create(**CHAT)
        assert r.choices[0].finish_reason in ("length", "stop")


def test_chats_waiting_for_a_load_hold_no_thread(settings):
    """OPENFT_SERVE_LOAD_WAIT_S: MANY chats wait for the held load; /v1/models and auth answer while
    all of them are still waiting (none has finished), and all of them finish once it loads."""
    s = settings.model_copy(update={"serve_load_wait_s": 600})
    with in_process_server(s, worker=False) as srv:
        gate = _held(srv)
        loads = srv.app.state.openft.loads
        with httpx.Client(timeout=300) as http, ThreadPoolExecutor(MANY) as pool:
            try:
                futures = [pool.submit(http.post, f"{srv.base_url}/chat/completions", json=CHAT, headers=_headers(s))
                           for _ in range(MANY)]
                load = wait_until(lambda: loads._loads.get(MODEL), 60, what="the load to start")
                wait_until(lambda: len(load._waiters) == MANY, 120, what=f"{MANY} chats waiting for the load")
                listed = http.get(f"{srv.base_url}/models", headers=_headers(s))
                unauthorized = http.get(f"{srv.base_url}/models")
                assert listed.status_code == 200 and unauthorized.status_code == 401
                assert not any(f.done() for f in futures) and len(load._waiters) == MANY
                assert _serving(srv, s)["state"] == "loading"
            finally:
                gate.set()
            assert [f.result().status_code for f in futures] == [200] * MANY


def test_the_server_preloads_the_listed_models_and_logs_each_stage(settings, caplog):
    caplog.set_level(logging.INFO, logger="openft.serve")
    with in_process_server(settings.model_copy(update={"preload_models": MODEL}), worker=False) as srv:
        wait_until(lambda: _serving(srv, settings)["state"] == "ready", 120, what="the preloaded model")
        assert MODEL in srv.app.state.openft.engine().stats()["models"]   # loaded before any request
        listed = httpx.get(f"{srv.base_url}/models", headers=_headers(settings)).json()["data"]
        assert {m["id"]: m["serving"]["state"] for m in listed}[MODEL] == "ready"
    said = [r.getMessage() for r in caplog.records if r.name == "openft.serve"]
    for stage in ("starting the serving engine", "preparing the model files", "loading the weights"):
        assert any(stage in m for m in said), said
    assert any(f"model {MODEL} is loaded" in m for m in said), said


def test_a_failed_load_is_reported_to_the_request(settings, tmp_path):
    """A model whose weights cannot load fails its request with the reason (not a 503 forever),
    and the next request tries again."""
    from openft.models import register_local

    s = settings.model_copy(update={"serve_load_wait_s": 600})
    with in_process_server(s, worker=False) as srv:
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "config.json").write_text("{}")   # a model folder with no weights
        register_local(s, "broken-model", tmp_path / "broken")
        body = {**CHAT, "model": "broken-model"}
        r = httpx.post(f"{srv.base_url}/chat/completions", json=body, headers=_headers(s), timeout=120)
        assert r.status_code == 500 and "could not be loaded" in r.json()["error"]["message"]
        assert srv.app.state.openft.loads._loads.get("broken-model") is None   # the next request retries
