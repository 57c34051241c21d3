"""API shapes for accounts: sign-up and sign-in, sessions, API keys, admin views."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

# Password fields accept up to 1 KB here; the policy (8..256 characters, not common) gives the precise error.
Password = Field(min_length=1, max_length=1024)
Email = Field(min_length=3, max_length=320)
Code = Field(min_length=1, max_length=16)


Scope = Literal["read", "generate", "admin"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Strict):
    email: str = Email
    password: str = Password
    display_name: str = Field(default="", max_length=120)


class EmailRequest(_Strict):
    email: str = Email


class VerifyRequest(_Strict):
    email: str = Email
    code: str = Code
    password: str = Password  # the sign-up password: proves the code activates the password its owner chose
    use_cookies: bool = False


class LoginRequest(_Strict):
    email: str = Email
    password: str = Password
    use_cookies: bool = False


class RefreshRequest(_Strict):
    refresh_token: str | None = Field(default=None, max_length=200)
    use_cookies: bool = False


class LogoutRequest(_Strict):
    refresh_token: str | None = Field(default=None, max_length=200)
    everywhere: bool = False


# A new password ends every session and, unless the user keeps them, revokes every API key (docs/accounts.md).
KeepApiKeys = Field(default=False, description="keep the account's API keys working (default: revoke them all)")


class ResetRequest(_Strict):
    email: str = Email
    code: str = Code
    new_password: str = Password
    keep_api_keys: bool = KeepApiKeys


class ChangePasswordRequest(_Strict):
    current_password: str = Password
    new_password: str = Password
    keep_api_keys: bool = KeepApiKeys


class ProfilePatch(_Strict):
    display_name: str | None = Field(default=None, max_length=120)


class DeleteAccountRequest(_Strict):
    # Accounts that only sign in through Google/GitHub have no password: they confirm with their email.
    password: str | None = Field(default=None, max_length=1024)
    confirm_email: str | None = Field(default=None, max_length=320)


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    message: str


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the access token stays valid")
    refresh_token: str
    refresh_expires_at: datetime


class UserView(BaseModel):
    id: str
    email: str
    display_name: str
    role: str
    status: str
    email_verified: bool
    has_password: bool
    oauth_providers: list[str]
    created_at: datetime
    last_login_at: datetime | None


class SessionView(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str
    user_agent: str
    current: bool


class ApiKeyCreate(_Strict):
    name: str = Field(max_length=120)
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["read", "generate"]))
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        # The key list shows only names: a blank one (spaces too) could not be told from another.
        if not name.strip():
            raise PydanticCustomError("name_missing", "Give the key a name")
        return name.strip()


class ApiKeyView(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyView):
    key: str = Field(description="the secret, shown only in this response")


class SetupStatus(BaseModel):
    needs_setup: bool
    auth_mode: str
    oauth_providers: list[str]


class SetupRequest(_Strict):
    token: str = Field(min_length=1, max_length=128)
    email: str = Email
    password: str = Password
    display_name: str = Field(default="", max_length=120)


class UserPage(BaseModel):
    items: list[UserView]
    next_cursor: str | None


class RoleChange(_Strict):
    role: Literal["user", "admin"]


class SuspendRequest(_Strict):
    reason: str | None = Field(
        default=None, max_length=500, description="Why: shown to the user when they sign in or use a key"
    )


class AuditView(BaseModel):
    id: str
    created_at: datetime
    action: str
    actor_id: str | None
    target_id: str | None
    subject: str
    ip: str
    user_agent: str
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditView]
    next_cursor: str | None
