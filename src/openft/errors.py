"""Error types shared by the library, the API and the CLI.

Each error knows its HTTP status and OpenAI `type`/`code`/`param`; the API turns any
`OpenFTError` into `{"error": {...}}` in one handler, the CLI into one readable line.
Data errors also carry a location (file, line, field) so both can say *where*.
"""

from __future__ import annotations


class OpenFTError(Exception):
    status: int = 400
    type: str = "invalid_request_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def to_openai(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def one_line(self) -> str:
        return f"error: {self.message}"


class InvalidRequest(OpenFTError):
    status = 400


class AuthenticationFailed(OpenFTError):
    status = 401
    default_code = "invalid_api_key"


class NotFound(OpenFTError):
    status = 404
    default_code = "not_found"


class PayloadTooLarge(OpenFTError):
    status = 413
    default_code = "file_too_large"


class _TryLater(OpenFTError):
    """An error that says when to try again: a `Retry-After` header in whole seconds (at least 1)."""

    retry_after_default = 1.0

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        seconds = self.retry_after_default if retry_after is None else retry_after
        super().__init__(message, headers={"Retry-After": str(max(1, round(seconds)))}, **kw)


class RateLimited(_TryLater):
    status = 429
    type = "rate_limit_exceeded"
    default_code = "rate_limit_exceeded"


class ModelLoading(_TryLater):
    """The model a request needs is still loading (503, with when to try again)."""

    status = 503
    type = "server_error"
    default_code = "model_loading"
    retry_after_default = 5.0


class ServerError(OpenFTError):
    status = 500
    type = "server_error"
    default_code = "internal_error"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class DataError(InvalidRequest):
    """A problem in a user's data file, with where it is."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, code: str | None = None, param: str | None = None):
        self.file, self.line, self.field = file, line, field
        super().__init__(self.locate(message), code=code, param=param)

    def locate(self, message: str) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        if self.field:
            where = f"{where} [{self.field}]" if where else f"[{self.field}]"
        return f"{where}: {message}" if where else message
