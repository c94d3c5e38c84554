"""Request dependencies: the app's state (settings, database, blobs, serving engine) and auth.

Everything stateful hangs off `app.state.openft` (an `AppState` built by `create_app`); tests
can swap any of it with `app.dependency_overrides`. Knows nothing about individual routes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.engine import Engine as DBEngine

from openft.config import Settings
from openft.errors import AuthenticationFailed
from openft.store.auth import key_secret, project_for_key
from openft.store.blobs import BlobStore

log = logging.getLogger("openft.api")


@dataclass
class AppState:
    settings: Settings
    db: DBEngine
    blobs: BlobStore
    _engine: Any = None
    _engine_lock: threading.Lock = field(default_factory=threading.Lock)
    _key_secret: bytes | None = None
    loads: Any = None   # openft.serve.loading.ModelLoads: models loading in the background

    def __post_init__(self):
        from openft.serve.loading import ModelLoads

        if self.loads is None:
            self.loads = ModelLoads(self.settings, self.engine, self.engine_if_started)

    def key_secret(self) -> bytes:
        """The secret API keys are hashed with (openft.store.auth.key_secret), read once."""
        if self._key_secret is None:
            self._key_secret = key_secret(self.settings)
        return self._key_secret

    def engine(self):
        """The one serving engine of this app, created on first use (loading torch takes seconds)."""
        with self._engine_lock:
            if self._engine is None:
                from openft.serve.backend import open_engine

                self._engine = open_engine(self.settings)
            return self._engine

    def engine_if_started(self):
        return self._engine

    def release_memory(self) -> dict | None:
        """The serving engine gives back what it caches beyond its running requests (a training job
        is starting on the same device: the embedded worker calls this); None if it was never started."""
        engine = self._engine
        return engine.release_memory() if engine is not None else None

    def close(self) -> None:
        with self._engine_lock:
            eng, self._engine = self._engine, None
        if eng is not None:
            try:
                eng.close()
            except Exception:  # shutting down: log, never raise
                log.exception("closing the serving engine failed")


def get_state(request: Request) -> AppState:
    return request.app.state.openft


StateDep = Annotated[AppState, Depends(get_state)]
"""A route parameter `state: StateDep` is the app's AppState."""


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _mask(key: str) -> str:
    return key[:3] + "*" * max(0, min(len(key) - 7, 20)) + key[-4:] if len(key) > 8 else "*" * len(key)


def get_project(request: Request, state: StateDep) -> str:
    """The project id of the request's bearer key; 401 in OpenAI's words otherwise."""
    key = _bearer(request)
    if key is None:
        raise AuthenticationFailed(
            "You didn't provide an API key. You need to provide your API key in an Authorization header using "
            "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", code=None)
    project = project_for_key(state.db, key, state.key_secret())
    if project is None:
        raise AuthenticationFailed(f"Incorrect API key provided: {_mask(key)}.")
    return project


ProjectDep = Annotated[str, Depends(get_project)]
"""A route parameter `project: ProjectDep` is the caller's project id (401 without a valid key)."""
