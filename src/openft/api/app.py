"""`create_app(settings)`: the FastAPI app with every route under `/v1`, `/health`, one error
handler, and an `x-request-id` and the security headers (api/security_headers.py) on every response.

The app opens the database (it does not migrate it: `server.run` or the caller does) and the
blob store; models load in the background (`state.loads`, openft.serve.loading: a chat for a
model still loading gets a 503 with Retry-After, never a silent wait; `server.run` preloads the
ones OPENFT_PRELOAD_MODELS names); the engine is created by the first load, closed on shutdown. The dashboard's
static files (openft/web/static), when present, are served at `/`. The app does not
run jobs: that is the worker's business (`server.run` embeds one).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import FastAPI

from openft import __version__
from openft.api.deps import AppState
from openft.api.errors import RequestIdMiddleware, install_error_handlers
from openft.api.security_headers import SecurityHeadersMiddleware
from openft.config import Settings
from openft.store.blobs import BlobStore
from openft.store.db import make_engine


def create_app(settings: Settings, *, db=None) -> FastAPI:
    state = AppState(settings=settings, db=db if db is not None else make_engine(settings.resolved_database_url()),
                     blobs=BlobStore(settings.layout.blobs))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="openft", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.openft = state
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: also on the 500s RequestIdMiddleware writes

    from openft.api.routes import (
        chat,
        completions,
        data_tools,
        evals,
        exports,
        files,
        fine_tuning,
        job_metrics,
        models,
        responses,
        webhooks,
    )

    for mod in (files, fine_tuning, job_metrics, models, chat, completions, responses, evals, exports, webhooks,
                data_tools):
        app.include_router(mod.router, prefix="/v1")

    @app.get("/health", include_in_schema=False)
    def health():
        return {"status": "ok", "version": __version__}

    static = Path(__file__).resolve().parents[1] / "web" / "static"
    if (static / "index.html").exists():  # the dashboard, when installed; it talks only to /v1
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=static, html=True), name="web")
    return app
