"""Standard Webhooks signatures (https://www.standardwebhooks.com), as OpenAI signs its webhooks.

Headers: `webhook-id` (the event id, the same on every retry), `webhook-timestamp` (Unix
seconds of this attempt), `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
keyed by the base64 bytes after `whsec_`; several space-separated signatures while a rotated
secret is still honoured. `openai.OpenAI().webhooks.unwrap(body, headers, secret=...)` verifies
them. Knows nothing about endpoints or delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from openft import __version__

PREFIX = "whsec_"


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def hint(secret: str) -> str:
    """A masked form that identifies a secret without revealing it: `whsec_****abcd`."""
    return f"{PREFIX}****{secret[-4:]}"


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret[len(PREFIX):]) if secret.startswith(PREFIX) else secret.encode()
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(signing_secrets: list[str], msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The request headers of one attempt, signed with every secret in `signing_secrets`."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {"content-type": "application/json", "user-agent": f"openft-webhooks/{__version__}",
            "webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": " ".join(signature(s, msg_id, ts, body) for s in signing_secrets)}
