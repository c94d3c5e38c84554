"""`run(settings)`: what `openft serve` does. Prepare the data folder and database, make sure an
admin key exists (printing a new one), start the embedded worker thread, recover jobs (requeue
those whose worker vanished, re-validate those left in `validating_files`), start loading the
models OPENFT_PRELOAD_MODELS names (in the background: openft.serve.loading), and serve the
app with uvicorn until SIGINT/SIGTERM.

The embedded worker gets the app's `AppState.release_memory` as a callback: a job it claims first
makes the chat engine give back its caches (one card, two users), without the worker importing the API.
`ServerThread` is the same server in a background thread (tests, benchmarks, notebooks).
Knows nothing about routes or training.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
import time

import uvicorn

from openft.config import Settings
from openft.store.auth import admin_key_file, ensure_admin_key
from openft.store.db import make_engine, migrate

log = logging.getLogger("openft.server")


# Credentials that may ride in a URL or a logged header: query parameters named like a key or
# token, Authorization values, and openft's own key format wherever it appears.
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:[\w.-]*(?:api[_-]?key|key|token|secret|password|passwd|auth\w*|"
                           r"credential\w*|signature|sig))=)[^&;#\s\"']*")
_SECRET_HEADER = re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)?\s*)[^\s\"',]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',]+")
_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")


def redact(text: str) -> str:
    """`text` with credentials replaced by [REDACTED] (for log lines, never for responses)."""
    text = _SECRET_QUERY.sub(r"\1[REDACTED]", text)
    text = _SECRET_HEADER.sub(r"\1[REDACTED]", text)
    text = _BEARER.sub(r"\1[REDACTED]", text)
    return _KEY.sub("sk-[REDACTED]", text)


class RedactCredentials(logging.Filter):
    """Rewrites a log record whose message carries a credential (uvicorn's access log prints the
    query string: `?api_key=...`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):  # keep the tuple: uvicorn's access formatter unpacks it
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(a) if isinstance(a, str) else a for k, a in record.args.items()}
        return True


def install_log_redaction() -> None:
    """The filter on the loggers that write request lines, and on every handler of the root
    logger (what propagates there from openft's own loggers)."""
    f = RedactCredentials()
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn", "openft"):
        logger = logging.getLogger(name)
        if not any(isinstance(x, RedactCredentials) for x in logger.filters):
            logger.addFilter(f)
        for h in logger.handlers:
            if not any(isinstance(x, RedactCredentials) for x in h.filters):
                h.addFilter(f)
    for h in logging.getLogger().handlers:
        if not any(isinstance(x, RedactCredentials) for x in h.filters):
            h.addFilter(f)


def prepare(settings: Settings):
    """Owner-only files (umask 0o077 for this process and the job runners it starts; existing
    files tightened), data folders, abandoned upload files removed, migrated database (export
    records of older versions imported into it), admin key. Returns (db engine, newly generated
    key or None)."""
    from openft.jobs.exports import import_files
    from openft.store.blobs import BlobStore
    from openft.store.perms import owner_only

    owner_only(settings)
    settings.ensure_dirs()
    BlobStore(settings.layout.blobs).remove_stale_uploads()
    db = make_engine(settings.resolved_database_url())
    migrate(db)
    import_files(settings, db)
    return db, ensure_admin_key(settings, db)


def recover_in_background(settings: Settings, db) -> threading.Thread:
    """Requeue running jobs whose worker vanished and validate again the jobs a previous server
    left in `validating_files` (openft.jobs.validate.recover_at_start), without delaying start-up."""
    def run():
        try:
            from openft.jobs.validate import recover_at_start

            out = recover_at_start(settings, db)
            if out.requeued or out.revalidated:
                log.info("recovered jobs: requeued %s, revalidated %s", out.requeued, out.revalidated)
        except Exception:
            log.exception("recovering jobs at start failed")

    t = threading.Thread(target=run, name="openft-recover", daemon=True)
    t.start()
    return t


class EmbeddedWorker:
    """`openft.jobs.worker.Worker(settings).run_forever(stop_event)` in a daemon thread;
    `release_memory`: the app's (`AppState.release_memory`), called when a job is claimed;
    `serve_engine`: the app's engine (`AppState.engine`), which eval runs share with the vLLM backend."""

    def __init__(self, settings: Settings, release_memory=None, serve_engine=None):
        self.settings = settings
        self.release_memory = release_memory
        self.serve_engine = serve_engine
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.worker = None  # the openft.jobs.worker.Worker, once started

    def start(self) -> EmbeddedWorker:
        from openft.jobs.worker import Worker

        worker = self.worker = Worker(self.settings, release_memory=self.release_memory,
                                      serve_engine=self.serve_engine)
        self.thread = threading.Thread(target=worker.run_forever, args=(self.stop_event,), name="openft-worker",
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout)


def _announce(settings: Settings, new_key: str | None) -> None:
    if new_key:
        print(f"openft: generated an admin API key (saved to {admin_key_file(settings)}):\n\n    {new_key}\n",
              file=sys.stderr, flush=True)
    print(f"openft: serving the OpenAI API on http://{settings.host}:{settings.port}/v1", file=sys.stderr, flush=True)


def _config(settings: Settings, db, **kw) -> uvicorn.Config:
    from openft.api.app import create_app

    kw = {"log_level": "info", "timeout_graceful_shutdown": 10, **kw}
    config = uvicorn.Config(create_app(settings, db=db), host=settings.host, port=settings.port, **kw)
    install_log_redaction()  # after uvicorn configured its loggers
    return config


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGINT/SIGTERM also stop the embedded worker at once and are
    not re-raised after the graceful shutdown: `run` finishes its clean-up and returns (exit 0)
    instead of dying by the signal (or printing a KeyboardInterrupt traceback)."""

    def __init__(self, config: uvicorn.Config, on_signal=None):
        super().__init__(config)
        self._on_signal = on_signal

    def handle_exit(self, sig, frame) -> None:
        if self._on_signal is not None:
            self._on_signal()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM: drain connections, stop the worker (its running job goes back
    to the queue and continues from its checkpoint later), close the engine, return."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    db, new_key = prepare(settings)
    _announce(settings, new_key)
    worker = None
    try:
        config = _config(settings, db)
        if settings.embedded_worker:
            worker = EmbeddedWorker(settings, config.app.state.openft.release_memory,
                                    config.app.state.openft.engine).start()
        recover_in_background(settings, db)
        config.app.state.openft.loads.preload(settings.preload_model_ids())  # in the background, logged
        _Server(config, on_signal=worker.stop_event.set if worker else None).run()
    finally:
        if worker is not None:
            worker.stop()
        db.dispose()


class ServerThread:
    """The full server (API + optional embedded worker) in a thread; a context manager."""

    def __init__(self, settings: Settings, *, worker: bool | None = None):
        self.settings = settings
        self.worker_enabled = settings.embedded_worker if worker is None else worker
        self.db = None
        self.new_key: str | None = None
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.worker: EmbeddedWorker | None = None

    @property
    def app(self):
        """The FastAPI app this thread serves (its `state.openft` is the AppState)."""
        return self.server.config.app

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}/v1"

    def start(self, timeout: float = 60.0) -> ServerThread:
        self.db, self.new_key = prepare(self.settings)
        self.server = uvicorn.Server(_config(self.settings, self.db, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="openft-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"openft server did not start on port {self.settings.port}")
            time.sleep(0.05)
        if self.worker_enabled:
            self.worker = EmbeddedWorker(self.settings, self.app.state.openft.release_memory,
                                         self.app.state.openft.engine).start()
        recover_in_background(self.settings, self.db)
        self.app.state.openft.loads.preload(self.settings.preload_model_ids())
        return self

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(30)
        if self.db is not None:
            self.db.dispose()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # `python -m openft.api.server`: settings from OPENFT_* only
    run(Settings())
