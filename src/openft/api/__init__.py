"""The OpenAI-compatible HTTP API: `create_app(settings)` and `server.run(settings)`.

Routes are thin: they validate with pydantic, call the store / jobs / serving library, and
render OpenAI-shaped objects. Nothing is built at import time.
"""

from openft.api.app import create_app

__all__ = ["create_app"]
