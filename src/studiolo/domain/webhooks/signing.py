"""Standard Webhooks ``v1`` signatures (HMAC-SHA256 of ``id.timestamp.body``) and the signing secrets' storage.

Secrets look like ``whsec_<base64 of 32 random bytes>`` (the spec's symmetric form). They are needed in the clear to
sign, so they are stored encrypted with the server key (AES-GCM, the cipher that keeps YouTube tokens), the
associated data naming the row and column so a value copied elsewhere does not decrypt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime

from studiolo.domain.film.youtube_google import TokenCipher

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh ``whsec_`` secret: 32 random bytes, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_message_id() -> str:
    """A ``webhook-id``: unique per event, the same on every retry (receivers dedupe on it); no dots (spec)."""
    return "msg_" + secrets.token_urlsafe(24).replace("-", "A").replace("_", "B")


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(raw)


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """One ``v1,<base64>`` signature entry."""
    content = f"{msg_id}.{timestamp}.{body}".encode()
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(signing_secrets: Iterable[str], msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value: one entry per secret (the new and the old one while a rotation's grace
    period lasts), space-separated."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in signing_secrets)


class SecretBox:
    """Encrypts and decrypts the stored secrets under the server key."""

    def __init__(self, server_key: str) -> None:
        self._cipher = TokenCipher(server_key)

    def seal(self, secret: str, context: str) -> str:
        return self._cipher.encrypt(secret, "webhooks:" + context)

    def open(self, sealed: str, context: str) -> str:
        plain = self._cipher.decrypt(sealed, "webhooks:" + context)
        if plain is None:  # the server key changed: nothing can be signed with it any more
            raise ValueError("a webhook secret cannot be decrypted with this server key")
        return plain


def active_secrets(
    box: SecretBox,
    context: str,
    secret: str,
    previous: str | None,
    previous_expires_at: datetime | None,
    now: datetime,
) -> list[str]:
    """The secrets that sign now: the current one, and the previous one until its grace period ends."""
    out = [box.open(secret, context + ":secret")]
    if previous is not None and previous_expires_at is not None and previous_expires_at > now:
        out.append(box.open(previous, context + ":previous"))
    return out
