"""The pieces of YouTube publishing that need no server: token encryption and the resumable protocol's Range."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from studiolo.domain.film.youtube_google import TokenCipher
from studiolo.domain.film.youtube_schemas import PublishRequest
from studiolo.domain.film.youtube_upload import parse_range


def test_tokens_are_sealed_and_bound_to_their_row() -> None:
    cipher = TokenCipher("server secret")
    sealed = cipher.encrypt("ya29.secret-access-token", "provider_tokens:u1:google:access")
    assert "ya29" not in sealed and sealed.startswith("v1.")
    assert cipher.encrypt("ya29.secret-access-token", "provider_tokens:u1:google:access") != sealed  # fresh nonce
    assert cipher.decrypt(sealed, "provider_tokens:u1:google:access") == "ya29.secret-access-token"
    assert cipher.decrypt(sealed, "provider_tokens:u2:google:access") is None  # another user's row
    assert cipher.decrypt(sealed, "provider_tokens:u1:google:refresh") is None  # another column
    assert TokenCipher("another secret").decrypt(sealed, "provider_tokens:u1:google:access") is None
    raw = bytearray(base64.urlsafe_b64decode(sealed[3:]))
    raw[20] ^= 1
    assert (
        cipher.decrypt("v1." + base64.urlsafe_b64encode(bytes(raw)).decode(), "provider_tokens:u1:google:access")
        is None
    )
    assert cipher.decrypt("plain-token", "provider_tokens:u1:google:access") is None
    assert cipher.decrypt("v1.***", "provider_tokens:u1:google:access") is None


def test_the_next_byte_after_a_308() -> None:
    assert parse_range("bytes=0-262143") == 262144
    assert parse_range(None) == 0  # nothing arrived yet
    assert parse_range("bytes=0-x") == 0
    assert parse_range("bytes=5-9") == 0  # not a prefix of the file: start over rather than leave a hole


def test_publish_requests_are_checked_as_youtube_would() -> None:
    assert PublishRequest.model_validate({"tags": [" a ", "", "b"]}).tags == ["a", "b"]
    assert PublishRequest.model_validate({}).privacy == "private"
    for bad in ({"privacy": "friends"}, {"description": "a > b"}, {"tags": ["x" * 90] * 6}, {"title": ""}):
        with pytest.raises(ValidationError):
            PublishRequest.model_validate(bad)
