"""OpenAI-looking identifiers (`file-`, `ftjob-`, `ftevent-`, `ftckpt_`, `chatcmpl-`)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, n: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def file_id() -> str:
    return new_id("file-")


def job_id() -> str:
    return new_id("ftjob-")


def event_id() -> str:
    return new_id("ftevent-")


def checkpoint_id() -> str:
    return new_id("ftckpt_")


def completion_id(chat: bool = True) -> str:
    return new_id("chatcmpl-" if chat else "cmpl-")


def api_key() -> str:
    return "sk-openft-" + secrets.token_urlsafe(32)
