"""One readable line for what went wrong talking to the source (OpenAI) or the target (openft).

`describe(exc, side, url)` names the side, the status and the server's own message;
`is_fatal(exc)` says when no later request to that side can work (a refused key, an unreachable
server), so a run stops instead of failing every remaining job the same way.

Knows the `openai` SDK's exceptions; nothing about jobs, files or the CLI.
"""

from __future__ import annotations

from openft.errors import OpenFTError


class MigrateError(OpenFTError):
    """A migration that cannot go on (a refused key, an unreachable server, bad options)."""


def server_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        msg = inner.get("message")
        if msg:
            param = inner.get("param")
            return f"{msg} (param: {param})" if param else str(msg)
    return str(getattr(exc, "message", None) or exc)


def describe(exc: BaseException, side: str, url: str) -> str:
    """`the source (https://api.openai.com/v1) refused the API key (401): ...`, one line."""
    import openai

    where = f"the {side} ({url})"
    key_hint = "--source-api-key / OPENAI_API_KEY" if side == "source" else "--api-key / OPENFT_API_KEY"
    if isinstance(exc, openai.AuthenticationError):
        text = f"{where} refused the API key (401): {server_message(exc)}; check {key_hint}"
    elif isinstance(exc, openai.PermissionDeniedError):
        text = f"{where} denied access (403): {server_message(exc)}"
    elif isinstance(exc, openai.RateLimitError):
        text = f"{where} kept answering 429 (rate limited) after every retry: {server_message(exc)}; run again later"
    elif isinstance(exc, openai.APITimeoutError):
        text = f"{where} timed out"
    elif isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        text = f"{where} is not reachable ({type(cause).__name__ if cause else 'connection error'}: {cause or exc})"
    elif isinstance(exc, openai.APIStatusError):
        text = f"{where} answered {exc.status_code}: {server_message(exc)}"
    elif isinstance(exc, OpenFTError):
        text = exc.message
    elif isinstance(exc, OSError):
        text = f"{type(exc).__name__}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def is_fatal(exc: BaseException) -> bool:
    """True when every later request to the same side would fail the same way."""
    import openai

    return isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError, MigrateError))
