"""One place that turns every failure into OpenAI's error shape, plus the request-id middleware.

`{"error": {"message", "type", "param", "code"}}` with 400/401/404/413/429/500 (never 409: the
SDK retries it). Pydantic errors name the offending parameter (`method.supervised...n_epochs`).
Knows nothing about the routes.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from openft.errors import OpenFTError

log = logging.getLogger("openft.api")

_HTTP_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_exceeded",
               500: "server_error"}


class ErrorResponse(JSONResponse):
    """An error body as ASCII JSON: a message may quote the caller's input, and input that is not
    valid Unicode (a lone surrogate) must still make a response rather than a 500."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":"), default=str).encode("ascii")


# OS errors that mean "the data directory cannot be written", not "openft has a bug".
_STORAGE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO}
_DB_STORAGE_WORDS = ("readonly database", "read-only", "unable to open database", "disk i/o error",
                     "database or disk is full", "disk is full")


def storage_error(exc: BaseException) -> bool:
    """Is `exc` the data directory (or the database in it) refusing writes?"""
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return True
    from sqlalchemy.exc import OperationalError

    return isinstance(exc, OperationalError) and any(w in str(exc.orig).lower() for w in _DB_STORAGE_WORDS)


def storage_response(request_id: str | None) -> JSONResponse:
    """503: the server's storage refused a write. Says so without paths or a traceback."""
    return ErrorResponse(error_body(
        "The server cannot store data right now: its data directory (or database) is not writable or is full. "
        f"Ask the server's operator to check it (request id {request_id}).", "server_error", None,
        "storage_unavailable"), status_code=503)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# Pydantic puts the union member tried into `loc` ("str", "list[str]", "literal['auto']", a model
# class name); OpenAI's `param` is the field path only.
_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|bytes|[a-z-]+\[.*\]|[A-Z]\w*)$")


def _param_from_loc(loc: tuple) -> str | None:
    parts = [p for p in loc if p not in ("body", "query", "path", "header", "form")
             and not (isinstance(p, str) and _TYPE_TAG.match(p))]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or None


def validation_error(errors: list[dict]) -> tuple[str, str | None, str | None]:
    """(message, param, code) for the first pydantic error, phrased like OpenAI's."""
    if not errors:
        return "Invalid request.", None, None
    err = errors[0]
    loc = tuple(err.get("loc") or ())
    param = _param_from_loc(loc)
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param, "unknown_parameter"
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    if kind == "json_invalid":
        return ("We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                "your HTTP library correctly. The OpenAI API expects a JSON payload.)"), None, None
    msg = str(err.get("msg", "Invalid value."))
    msg = msg.removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {json.dumps(got, default=str)[:100]})"
    return f"Invalid value for '{param}': {msg}{shown}", param, "invalid_value"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenFTError)
    async def _openft(request: Request, exc: OpenFTError):
        return ErrorResponse(exc.to_openai(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, param, code = validation_error(list(exc.errors()))
        return ErrorResponse(error_body(message, param=param, code=code), status_code=400)

    async def _storage(request: Request, exc: Exception):
        if not storage_error(exc):
            raise exc  # a real bug: RequestIdMiddleware logs it and answers 500
        request_id = request.scope.get("state", {}).get("request_id")
        log.error("storage refused a write in %s %s (%s): %s", request.method, request.url.path, request_id, exc)
        return storage_response(request_id)

    from sqlalchemy.exc import OperationalError

    app.add_exception_handler(OSError, _storage)
    app.add_exception_handler(OperationalError, _storage)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        status = exc.status_code
        if status == 404 and exc.detail == "Not Found":
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif status == 405:
            status, message = 404, f"Invalid URL ({request.method} {request.url.path})"
        else:
            message = str(exc.detail)
        if status == 409:  # the SDK retries 409s; OpenFT never answers one
            status = 400
        return ErrorResponse(error_body(message, _HTTP_TYPES.get(status, "invalid_request_error")),
                             status_code=status, headers=getattr(exc, "headers", None))


class RequestIdMiddleware:
    """Pure ASGI: adds `x-request-id` to every response and turns crashes into a 500 error body
    (here rather than in an exception handler so the 500 carries the header too)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = "req_" + secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (%s)", scope.get("method"), scope.get("path"), request_id)
            if started:
                return
            body = json.dumps(error_body(f"The server had an error while processing your request (request id "
                                         f"{request_id}).", "server_error", None, "internal_error")).encode()
            await send_with_id({"type": "http.response.start", "status": 500,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
