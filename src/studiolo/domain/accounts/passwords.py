"""Password policy and hashing (argon2id).

Hashing is deliberately slow (>= 50 ms, see bench/auth.py), so the async routes run it in a worker thread:
argon2-cffi releases the GIL while it hashes, and the server keeps answering other requests meanwhile.
"""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from studiolo.errors import InvalidInput
from studiolo.settings import Settings

MIN_LENGTH = 8
MAX_LENGTH = 256  # argon2 takes anything, but a megabyte "password" is an attack on our CPU, not a password
COMMON_PASSWORDS = Path(__file__).parent / "data" / "common-passwords.txt.gz"


@cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS, "rt", encoding="utf-8") as f:
        return frozenset(line.strip().lower() for line in f if line.strip())


def check_policy(password: str, *, email: str = "", field: str = "password") -> None:
    """Raise InvalidInput (code ``weak_password``) when ``password`` is too short, too long or well known;
    ``details.field`` names the form field it came from, so the web studio says it next to that field."""

    def weak(message: str) -> InvalidInput:
        return InvalidInput(message, code="weak_password", details={"field": field})

    if len(password) < MIN_LENGTH:
        raise weak(f"Use at least {MIN_LENGTH} characters for the password.")
    if len(password) > MAX_LENGTH:
        raise weak(f"Use at most {MAX_LENGTH} characters for the password.")
    lowered = password.lower()
    local_part = email.split("@", 1)[0].lower()
    if lowered in common_passwords() or (len(local_part) >= 4 and lowered == local_part):
        raise weak("This password is too common (it appears in lists attackers try first); choose another.")
    if len(set(password)) < 3:
        raise weak("The password repeats too few different characters; mix in a few more.")


class PasswordHashing:
    def __init__(self, settings: Settings):
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        # Verified against when the email is unknown, so a miss costs the same time as a wrong password
        # (no account enumeration by timing).
        self._dummy = self._hasher.hash("studiolo-timing-equaliser")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
