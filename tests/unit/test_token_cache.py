"""Access tokens are verified once per process and remembered until they expire (tokens.TokenCodec)."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest

from studiolo.db.base import utcnow
from studiolo.domain.accounts import tokens
from studiolo.errors import Unauthorized


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = tokens.TokenCodec(key="k" * 32, access_minutes=15)
    token = codec.mint_access("user-1", "user", ["read"], 0, "session-1")
    first = codec.decode_access(token)
    assert codec.decode_access(token) is first  # the second use is not decoded again
    later = utcnow() + timedelta(minutes=16)
    monkeypatch.setattr(tokens, "utcnow", lambda: later)
    with pytest.raises(Unauthorized) as expired:
        codec.decode_access(token)
    assert expired.value.code == "token_expired"


def test_only_verified_tokens_are_remembered() -> None:
    codec = tokens.TokenCodec(key="k" * 32, access_minutes=15)
    token = codec.mint_access("user-1", "user", ["read"], 0, "session-1")
    forged = jwt.encode(jwt.decode(token, options={"verify_signature": False}), "another key " * 4, algorithm="HS256")
    for _ in range(2):  # a refused token is refused again, never served from memory
        with pytest.raises(Unauthorized) as refused:
            codec.decode_access(forged)
        assert refused.value.code == "invalid_token"
    other = tokens.TokenCodec(key="x" * 32, access_minutes=15)
    codec.decode_access(token)
    with pytest.raises(Unauthorized):
        other.decode_access(token)  # remembered per codec (per key), not globally


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_VERIFIED_MAX", 3)
    codec = tokens.TokenCodec(key="k" * 32, access_minutes=15)
    for n in range(10):
        codec.decode_access(codec.mint_access(f"user-{n}", "user", [], 0, ""))
        assert len(codec._verified) <= 3
