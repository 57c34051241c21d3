"""Sign-up, email codes, sessions, password reset, enumeration, cookies + CSRF and bad input on /api/v1/auth.

Everything goes through the real HTTP API, a real (migrated) SQLite database, real argon2 (cheap parameters)
and the console mailer, whose messages are read back to get the 6-digit codes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from studiolo.app import create_app
from studiolo.db.base import utcnow
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.mail import ConsoleMailer, Mail
from studiolo.domain.accounts.models import LOCAL_USER_ID, OneTimeCode, RefreshToken, User
from studiolo.domain.accounts.service import InvalidCode
from studiolo.services import Services, build_services
from tests.helpers import PUBLIC_AUTH_ROUTES, create_user, in_threads, statements, writes_meet

if TYPE_CHECKING:  # the TestClient's responses (Starlette's test client runs on httpx2)
    from httpx2 import Response

STRONG = "velvet-harbor-1937"
OTHER = "quiet-lantern-2046"
CODE_RE = re.compile(r"\b(\d{6})\b")


# --- helpers ------------------------------------------------------------------------------------------------
def mailer(services: Services) -> ConsoleMailer:
    services.outbox.flush()
    m = services.outbox.mailer
    assert isinstance(m, ConsoleMailer)
    return m


def mails_to(services: Services, to: str) -> list[Mail]:
    return [m for m in mailer(services).sent if m.to == to]


def last_code(services: Services, to: str) -> str:
    sent = [m for m in mails_to(services, to) if CODE_RE.search(m.text)]
    assert sent, f"no code mailed to {to}"
    match = CODE_RE.search(sent[-1].text)
    assert match is not None
    return match.group(1)


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: Response, status: int, code: str, *, same_request_id: bool = True) -> dict[str, Any]:
    """``r`` is the standard error envelope with this status and code."""
    assert r.status_code == status, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "request_id"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert body["request_id"]
    if same_request_id:
        assert body["request_id"] == r.headers["x-request-id"]
    return body


def without_request_id(r: Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    body.pop("request_id", None)
    return body


def settled(api: TestClient, r: Response) -> Response:
    """``r``, once the work its request left to the outbox thread is done (sign-up, resend and reset answer first)."""
    services: Services = api.app.state.services  # type: ignore[attr-defined]
    services.outbox.flush()
    return r


def register(api: TestClient, email: str, password: str = STRONG, display_name: str = "") -> Response:
    r = api.post("/api/v1/auth/register", json={"email": email, "password": password, "display_name": display_name})
    return settled(api, r)


def signup(api: TestClient, services: Services, email: str, password: str = STRONG) -> dict[str, Any]:
    """Register and verify: an active account; returns the token pair."""
    assert register(api, email, password).status_code == 202
    r = api.post("/api/v1/auth/verify", json={"email": email, "code": last_code(services, email), "password": STRONG})
    assert r.status_code == 200, r.text
    pair: dict[str, Any] = r.json()
    return pair


def login(api: TestClient, email: str, password: str = STRONG, **extra: Any) -> Response:
    return api.post("/api/v1/auth/login", json={"email": email, "password": password, **extra})


def refresh(api: TestClient, token: str) -> Response:
    return api.post("/api/v1/auth/refresh", json={"refresh_token": token})


def me(api: TestClient, token: str) -> Response:
    return api.get("/api/v1/auth/me", headers=bearer(token))


def user_row(services: Services, email: str) -> User | None:
    with services.db.session() as session:
        return session.scalar(select(User).where(User.email == email))


def user_count(services: Services) -> int:
    with services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(User)) or 0)


# --- sign-up ------------------------------------------------------------------------------------------------
def test_register_mails_a_code_and_verifying_signs_in(api: TestClient, services: Services) -> None:
    r = register(api, "alice@example.com", display_name="Alice")
    assert r.status_code == 202
    assert r.json()["status"] == "accepted" and r.json()["message"]
    row = user_row(services, "alice@example.com")
    assert row is not None and row.status == "pending" and row.email_verified_at is None
    assert row.password_hash is not None and STRONG not in row.password_hash

    mail = mails_to(services, "alice@example.com")
    assert len(mail) == 1
    code = last_code(services, "alice@example.com")
    # The code is in the body only: subjects show up in notifications, mail lists and server logs.
    assert code in mail[0].text and code not in mail[0].subject
    assert mail[0].kind == "verification_code" and mail[0].secret == code

    r = api.post("/api/v1/auth/verify", json={"email": "alice@example.com", "code": code, "password": STRONG})
    assert r.status_code == 200, r.text
    pair = r.json()
    assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_at"}
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == services.settings.access_token_minutes * 60

    r = me(api, pair["access_token"])
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["email"] == "alice@example.com"
    assert view["display_name"] == "Alice"
    assert view["status"] == "active" and view["email_verified"] is True
    assert view["role"] == "user" and view["has_password"] is True
    assert view["id"] == row.id


def test_email_is_normalised_for_every_route(api: TestClient, services: Services) -> None:
    assert register(api, "  Alice.Smith@Example.COM ").status_code == 202
    row = user_row(services, "alice.smith@example.com")
    assert row is not None
    assert user_count(services) == 2  # the local owner and Alice
    code = last_code(services, "alice.smith@example.com")
    r = api.post("/api/v1/auth/verify", json={"email": "ALICE.SMITH@example.com", "code": code, "password": STRONG})
    assert r.status_code == 200, r.text
    r = login(api, " alice.smith@EXAMPLE.com ")
    assert r.status_code == 200, r.text
    # A differently spelled re-registration is the same account, not a second one.
    assert register(api, "ALICE.SMITH@EXAMPLE.COM", OTHER).status_code == 202
    assert user_count(services) == 2


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("alice@example.com", "password123"),
        ("alice@example.com", "PASSWORD123"),  # common lists are checked without case
        ("alice@example.com", "12345678"),
        ("alice@example.com", "s0rt!"),  # under 8 characters
        ("alice@example.com", "x7!" * 86),  # 258 characters: over 256
        ("alice@example.com", "aaaaaaaaab"),  # too few different characters
        ("margarethe.v@example.com", "Margarethe.V"),  # the address's local part
    ],
    ids=["common", "common-upper", "digits", "short", "long", "repetitive", "local-part"],
)
def test_weak_passwords_are_refused_and_create_nothing(
    api: TestClient, services: Services, email: str, password: str
) -> None:
    before = user_count(services)
    r = register(api, email, password)
    assert_error(r, 422, "weak_password")
    assert user_count(services) == before
    assert user_row(services, email) is None
    assert mails_to(services, email) == []


def test_password_of_exactly_256_characters_is_accepted(api: TestClient, services: Services) -> None:
    password = ("Kq7!" * 64)[:256]
    assert register(api, "long@example.com", password).status_code == 202
    api.post(
        "/api/v1/auth/verify",
        json={"email": "long@example.com", "code": last_code(services, "long@example.com"), "password": password},
    )
    assert login(api, "long@example.com", password).status_code == 200


@pytest.mark.parametrize(
    "email", ["not-an-email", "alice@", "@example.com", "alice@@example.com", "bob@example.test", "alice@localhost"]
)
def test_invalid_email_is_refused(api: TestClient, services: Services, email: str) -> None:
    before = user_count(services)
    assert_error(register(api, email), 422, "invalid_email")
    assert user_count(services) == before


def test_pending_account_cannot_log_in(api: TestClient, services: Services) -> None:
    register(api, "pending@example.com")
    assert_error(login(api, "pending@example.com"), 403, "email_not_verified")
    # Without the right password nothing says the account exists or is pending.
    wrong = login(api, "pending@example.com", OTHER)
    unknown = login(api, "nobody@example.com", OTHER)
    assert_error(wrong, 401, "invalid_credentials")
    assert without_request_id(wrong) == without_request_id(unknown)
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"]


def test_re_registering_a_pending_address_replaces_password_and_code(api: TestClient, services: Services) -> None:
    register(api, "bob@example.com", STRONG, "First")
    with services.db.session() as session:
        first_code_id = session.scalar(select(OneTimeCode.id).join(User).where(User.email == "bob@example.com"))
    r = register(api, "bob@example.com", OTHER, "Second")
    assert r.status_code == 202
    assert len(mails_to(services, "bob@example.com")) == 2
    with services.db.session() as session:
        ids = session.scalars(
            select(OneTimeCode.id).join(User).where(User.email == "bob@example.com", OneTimeCode.purpose == "verify")
        ).all()
    assert len(ids) == 1 and ids[0] != first_code_id  # the first code is gone
    pair = api.post(
        "/api/v1/auth/verify",
        json={"email": "bob@example.com", "code": last_code(services, "bob@example.com"), "password": OTHER},
    ).json()
    assert me(api, pair["access_token"]).json()["display_name"] == "Second"
    assert_error(login(api, "bob@example.com", STRONG), 401, "invalid_credentials")
    assert login(api, "bob@example.com", OTHER).status_code == 200


def test_a_re_registration_cannot_plant_a_password_the_mailbox_owner_then_activates(
    api: TestClient, services: Services
) -> None:
    """Pre-hijacking: the owner signs up, an attacker re-registers the still-pending address with a password of
    their own, and the owner enters the code from their inbox (the newest one, the first was replaced). The
    owner is signed in and sees nothing wrong; the attacker's password must not open the account."""
    register(api, "victim@example.com", STRONG)
    register(api, "victim@example.com", "attackers-own-pass-77")
    r = verify(api, "victim@example.com", last_code(services, "victim@example.com"))
    assert r.status_code in (200, 400, 422), r.text
    r = login(api, "victim@example.com", "attackers-own-pass-77")
    assert r.status_code != 200, "the attacker signed in with the password they planted"


def test_re_registering_an_active_address_mails_its_owner_and_answers_the_same(
    api: TestClient, services: Services
) -> None:
    signup(api, services, "carol@example.com")
    with services.db.session() as session:
        hash_before = session.scalar(select(User.password_hash).where(User.email == "carol@example.com"))

    known = register(api, "carol@example.com", OTHER)
    unknown = register(api, "dave@example.com", OTHER)
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()

    carol_mail = mails_to(services, "carol@example.com")
    assert len(carol_mail) == 2
    assert "tried" in carol_mail[-1].subject.lower()
    assert not CODE_RE.search(carol_mail[-1].text)  # no code: nobody can take the account over
    with services.db.session() as session:
        assert session.scalar(select(User.password_hash).where(User.email == "carol@example.com")) == hash_before
    assert login(api, "carol@example.com", STRONG).status_code == 200
    assert_error(login(api, "carol@example.com", OTHER), 401, "invalid_credentials")


def test_resend_code_is_throttled_silently(api: TestClient, services: Services) -> None:
    assert services.settings.resend_code_seconds > 0
    register(api, "erin@example.com")
    code = last_code(services, "erin@example.com")
    r = api.post("/api/v1/auth/resend-code", json={"email": "erin@example.com"})
    unknown = api.post("/api/v1/auth/resend-code", json={"email": "nobody@example.com"})
    assert r.status_code == unknown.status_code == 202
    assert r.json() == unknown.json()
    assert len(mails_to(services, "erin@example.com")) == 1  # nothing new sent
    assert mails_to(services, "nobody@example.com") == []
    # The first code still works.
    assert (
        api.post(
            "/api/v1/auth/verify", json={"email": "erin@example.com", "code": code, "password": STRONG}
        ).status_code
        == 200
    )
    # An active account gets no code from resend.
    assert api.post("/api/v1/auth/resend-code", json={"email": "erin@example.com"}).status_code == 202
    assert len(mails_to(services, "erin@example.com")) == 1


def test_resend_code_after_the_pause_replaces_the_code(settings_factory: Callable[..., Any]) -> None:
    svc = build_services(settings_factory(resend_code_seconds=0), upgrade_db=False)
    try:
        with TestClient(create_app(services=svc, start_workers=False)) as api:
            register(api, "frank@example.com")
            first = last_code(svc, "frank@example.com")
            assert api.post("/api/v1/auth/resend-code", json={"email": "frank@example.com"}).status_code == 202
            assert len(mails_to(svc, "frank@example.com")) == 2
            second = last_code(svc, "frank@example.com")
            if first != second:  # one chance in a million that both codes are the same
                r = api.post(
                    "/api/v1/auth/verify", json={"email": "frank@example.com", "code": first, "password": STRONG}
                )
                assert_error(r, 400, "invalid_code")
            r = api.post("/api/v1/auth/verify", json={"email": "frank@example.com", "code": second, "password": STRONG})
            assert r.status_code == 200, r.text
    finally:
        svc.close()


# --- codes ----------------------------------------------------------------------------------------------------
def verify(api: TestClient, email: str, code: str) -> Response:
    return api.post("/api/v1/auth/verify", json={"email": email, "code": code, "password": STRONG})


def test_wrong_code_is_refused(api: TestClient, services: Services) -> None:
    register(api, "gina@example.com")
    code = last_code(services, "gina@example.com")
    assert_error(verify(api, "gina@example.com", other_code(code)), 400, "invalid_code")
    assert_error(verify(api, "gina@example.com", "abcdef"), 400, "invalid_code")
    row = user_row(services, "gina@example.com")
    assert row is not None and row.status == "pending"
    assert verify(api, "gina@example.com", f"  {code} ").status_code == 200


def test_code_is_burnt_after_too_many_wrong_tries(api: TestClient, services: Services) -> None:
    register(api, "hank@example.com")
    code = last_code(services, "hank@example.com")
    for _ in range(services.settings.verification_code_attempts):
        assert_error(verify(api, "hank@example.com", other_code(code)), 400, "invalid_code")
    assert_error(verify(api, "hank@example.com", code), 400, "invalid_code")
    row = user_row(services, "hank@example.com")
    assert row is not None and row.status == "pending"
    assert_error(login(api, "hank@example.com"), 403, "email_not_verified")


def test_one_wrong_try_less_than_the_limit_still_lets_the_right_code_in(api: TestClient, services: Services) -> None:
    register(api, "ivy@example.com")
    code = last_code(services, "ivy@example.com")
    for _ in range(services.settings.verification_code_attempts - 1):
        verify(api, "ivy@example.com", other_code(code))
    assert verify(api, "ivy@example.com", code).status_code == 200


def test_expired_code_is_refused(api: TestClient, services: Services) -> None:
    register(api, "jack@example.com")
    code = last_code(services, "jack@example.com")
    with services.db.session() as session:
        session.execute(update(OneTimeCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert_error(verify(api, "jack@example.com", code), 400, "invalid_code")
    row = user_row(services, "jack@example.com")
    assert row is not None and row.status == "pending"


def test_used_verification_code_cannot_be_used_again(api: TestClient, services: Services) -> None:
    register(api, "kate@example.com")
    code = last_code(services, "kate@example.com")
    assert verify(api, "kate@example.com", code).status_code == 200
    assert_error(verify(api, "kate@example.com", code), 400, "invalid_code")


def test_unknown_email_fails_like_a_wrong_code(api: TestClient, services: Services) -> None:
    register(api, "liam@example.com")
    code = last_code(services, "liam@example.com")
    wrong = verify(api, "liam@example.com", other_code(code))
    unknown = verify(api, "nobody@example.com", code)
    assert_error(unknown, 400, "invalid_code")
    assert without_request_id(wrong) == without_request_id(unknown)


def test_a_verification_code_is_not_a_reset_code(api: TestClient, services: Services) -> None:
    register(api, "mia@example.com")
    code = last_code(services, "mia@example.com")
    r = api.post(
        "/api/v1/auth/password-reset/confirm", json={"email": "mia@example.com", "code": code, "new_password": OTHER}
    )
    assert_error(r, 400, "invalid_code")
    assert verify(api, "mia@example.com", code).status_code == 200  # still good for its own purpose
    assert login(api, "mia@example.com", STRONG).status_code == 200


# --- sessions -------------------------------------------------------------------------------------------------
@pytest.fixture
def alice(services: Services) -> str:
    """An active account with a password; returns its id."""
    return create_user(services, "alice@example.com", password=STRONG)


def test_login_returns_a_working_pair(api: TestClient, services: Services, alice: str) -> None:
    r = login(api, "alice@example.com")
    assert r.status_code == 200, r.text
    pair = r.json()
    assert pair["token_type"] == "bearer" and pair["refresh_token"] and pair["access_token"]
    assert me(api, pair["access_token"]).json()["id"] == alice
    assert "set-cookie" not in r.headers  # cookies only when asked for
    with services.db.session() as session:
        row = session.get_one(User, alice)
        assert row.last_login_at is not None


def test_refresh_rotates_and_a_reused_token_ends_the_whole_family(
    api: TestClient, services: Services, alice: str
) -> None:
    first = login(api, "alice@example.com").json()
    other_login = login(api, "alice@example.com").json()  # a separate sign-in, unaffected by the theft

    r = refresh(api, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert me(api, second["access_token"]).status_code == 200

    # The rotated token comes back (it was copied): refused, and the chain it belongs to is ended.
    assert_error(refresh(api, first["refresh_token"]), 401, "refresh_token_reused")
    r = refresh(api, second["refresh_token"])
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    with services.db.session() as session:
        live = session.scalars(
            select(RefreshToken.family_id).where(RefreshToken.user_id == alice, RefreshToken.revoked_at.is_(None))
        ).all()
    assert len(live) == 1  # only the other sign-in's token

    # The other sign-in lives on.
    assert me(api, other_login["access_token"]).status_code == 200
    assert refresh(api, other_login["refresh_token"]).status_code == 200


def test_reuse_detection_ends_the_familys_access_tokens_at_once(
    api: TestClient, services: Services, alice: str
) -> None:
    first = login(api, "alice@example.com").json()
    second = refresh(api, first["refresh_token"]).json()
    assert me(api, second["access_token"]).status_code == 200  # the authenticator now knows this session
    assert_error(refresh(api, first["refresh_token"]), 401, "refresh_token_reused")
    # Like a logout, ending the family in this process must end its access tokens now, not after a cache TTL.
    assert_error(me(api, second["access_token"]), 401, "token_revoked")


def test_an_access_token_is_not_a_refresh_token(api: TestClient, alice: str) -> None:
    pair = login(api, "alice@example.com").json()
    assert_error(refresh(api, pair["access_token"][:200]), 401, "invalid_token")


def test_unknown_or_missing_refresh_token_is_refused(api: TestClient, alice: str) -> None:
    assert_error(refresh(api, "not-a-token"), 401, "invalid_token")
    assert_error(api.post("/api/v1/auth/refresh", json={}), 401, "invalid_token")


def test_expired_refresh_token_is_refused(api: TestClient, services: Services, alice: str) -> None:
    pair = login(api, "alice@example.com").json()
    with services.db.session() as session:
        session.execute(update(RefreshToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert_error(refresh(api, pair["refresh_token"]), 401, "token_expired")


def test_logout_ends_the_session_and_its_access_token(api: TestClient, services: Services, alice: str) -> None:
    a = login(api, "alice@example.com").json()
    b = login(api, "alice@example.com").json()
    assert me(api, a["access_token"]).status_code == 200  # cached as live by the authenticator
    r = api.post("/api/v1/auth/logout", json={}, headers=bearer(a["access_token"]))
    assert r.status_code == 204, r.text
    assert_error(me(api, a["access_token"]), 401, "token_revoked")
    assert_error(refresh(api, a["refresh_token"]), 401, "invalid_token")
    assert me(api, b["access_token"]).status_code == 200
    assert refresh(api, b["refresh_token"]).status_code == 200


def test_logout_everywhere_ends_every_session(api: TestClient, services: Services, alice: str) -> None:
    a = login(api, "alice@example.com").json()
    b = login(api, "alice@example.com").json()
    assert me(api, b["access_token"]).status_code == 200
    r = api.post("/api/v1/auth/logout", json={"everywhere": True}, headers=bearer(a["access_token"]))
    assert r.status_code == 204
    for pair in (a, b):
        assert_error(me(api, pair["access_token"]), 401, "token_revoked")
        assert refresh(api, pair["refresh_token"]).status_code == 401
    assert login(api, "alice@example.com").status_code == 200  # the password still works


def test_sessions_list_marks_the_current_one(api: TestClient, services: Services, alice: str) -> None:
    a = api.post(
        "/api/v1/auth/login",
        json={"email": "alice@example.com", "password": STRONG},
        headers={"User-Agent": "laptop-browser"},
    ).json()
    b = api.post(
        "/api/v1/auth/login",
        json={"email": "alice@example.com", "password": STRONG},
        headers={"User-Agent": "phone-app"},
    ).json()
    r = api.get("/api/v1/auth/sessions", headers=bearer(a["access_token"]))
    assert r.status_code == 200, r.text
    sessions = r.json()
    assert len(sessions) == 2
    assert len({s["id"] for s in sessions}) == 2
    current = [s for s in sessions if s["current"]]
    assert len(current) == 1
    assert {s["user_agent"] for s in sessions} == {"laptop-browser", "phone-app"}
    assert all(s["ip"] for s in sessions)

    seen_from_b = api.get("/api/v1/auth/sessions", headers=bearer(b["access_token"])).json()
    current_b = [s for s in seen_from_b if s["current"]]
    assert len(current_b) == 1 and current_b[0]["id"] != current[0]["id"]

    # Refreshing keeps the session's id and start time (one entry per sign-in, not per token).
    rotated = refresh(api, a["refresh_token"]).json()
    again = api.get("/api/v1/auth/sessions", headers=bearer(rotated["access_token"])).json()
    assert len(again) == 2
    now_current = next(s for s in again if s["current"])
    assert now_current["id"] == current[0]["id"]
    assert now_current["created_at"] == current[0]["created_at"]


def test_revoking_another_of_my_sessions(api: TestClient, services: Services, alice: str) -> None:
    a = login(api, "alice@example.com").json()
    b = login(api, "alice@example.com").json()
    assert me(api, b["access_token"]).status_code == 200
    sessions = api.get("/api/v1/auth/sessions", headers=bearer(a["access_token"])).json()
    other = next(s["id"] for s in sessions if not s["current"])
    r = api.delete(f"/api/v1/auth/sessions/{other}", headers=bearer(a["access_token"]))
    assert r.status_code == 204, r.text
    assert_error(me(api, b["access_token"]), 401, "token_revoked")
    assert refresh(api, b["refresh_token"]).status_code == 401
    left = api.get("/api/v1/auth/sessions", headers=bearer(a["access_token"])).json()
    assert [s["current"] for s in left] == [True]


def test_logout_with_someone_elses_refresh_token_does_not_end_their_session(
    api: TestClient, services: Services, alice: str
) -> None:
    create_user(services, "bob@example.com", password=STRONG)
    a = login(api, "alice@example.com").json()
    b = login(api, "bob@example.com").json()
    r = api.post("/api/v1/auth/logout", json={"refresh_token": b["refresh_token"]}, headers=bearer(a["access_token"]))
    assert r.status_code == 204
    assert me(api, b["access_token"]).status_code == 200
    assert refresh(api, b["refresh_token"]).status_code == 200
    assert_error(me(api, a["access_token"]), 401, "token_revoked")  # the caller's own session ended


def test_a_suspended_account_gets_no_session_by_verifying_its_code(
    api: TestClient, client: TestClient, services: Services
) -> None:
    register(api, "olga@example.com")
    code = last_code(services, "olga@example.com")
    row = user_row(services, "olga@example.com")
    assert row is not None
    assert client.post(f"/api/v1/admin/users/{row.id}/suspend").status_code == 200
    r = verify(api, "olga@example.com", code)
    assert_error(r, 403, "account_suspended")
    with services.db.session() as session:
        live = session.scalar(select(func.count()).select_from(RefreshToken).where(RefreshToken.user_id == row.id))
    assert live == 0


def test_someone_elses_session_is_not_found(
    api: TestClient, client: TestClient, services: Services, alice: str
) -> None:
    a = login(api, "alice@example.com").json()
    owner_session = client.get("/api/v1/auth/sessions").json()[0]["id"]
    r = api.delete(f"/api/v1/auth/sessions/{owner_session}", headers=bearer(a["access_token"]))
    assert_error(r, 404, "session_not_found")
    assert client.get("/api/v1/auth/me").status_code == 200  # the owner's session is untouched
    assert_error(api.delete("/api/v1/auth/sessions/nope", headers=bearer(a["access_token"])), 404, "session_not_found")


def test_profile_update(api: TestClient, alice: str) -> None:
    token = login(api, "alice@example.com").json()["access_token"]
    r = api.patch("/api/v1/auth/me", json={"display_name": "  Alice A.  "}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["display_name"] == "Alice A."
    assert_error(api.patch("/api/v1/auth/me", json={"role": "admin"}, headers=bearer(token)), 422, "invalid_input")
    assert me(api, token).json()["role"] == "user"


# --- password reset -------------------------------------------------------------------------------------------
def reset_request(api: TestClient, email: str) -> Response:
    return settled(api, api.post("/api/v1/auth/password-reset", json={"email": email}))


def reset_confirm(api: TestClient, email: str, code: str, new_password: str = OTHER) -> Response:
    return api.post(
        "/api/v1/auth/password-reset/confirm", json={"email": email, "code": code, "new_password": new_password}
    )


def test_reset_request_answers_the_same_for_known_and_unknown(api: TestClient, services: Services, alice: str) -> None:
    known = reset_request(api, "alice@example.com")
    unknown = reset_request(api, "nobody@example.com")
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert set(known.headers) == set(unknown.headers)
    assert len(mails_to(services, "alice@example.com")) == 1
    assert mails_to(services, "nobody@example.com") == []


def test_reset_sets_the_new_password_and_ends_every_session(api: TestClient, services: Services, alice: str) -> None:
    pair = login(api, "alice@example.com").json()
    assert me(api, pair["access_token"]).status_code == 200
    reset_request(api, "alice@example.com")
    code = last_code(services, "alice@example.com")
    r = reset_confirm(api, "alice@example.com", code)
    assert r.status_code == 204, r.text
    assert_error(login(api, "alice@example.com", STRONG), 401, "invalid_credentials")
    assert login(api, "alice@example.com", OTHER).status_code == 200
    assert_error(me(api, pair["access_token"]), 401, "token_revoked")
    assert refresh(api, pair["refresh_token"]).status_code == 401
    # The code was spent.
    assert_error(reset_confirm(api, "alice@example.com", code, "third-password-4711"), 400, "invalid_code")
    assert login(api, "alice@example.com", OTHER).status_code == 200


def test_reset_verifies_a_pending_account(api: TestClient, services: Services) -> None:
    register(api, "nina@example.com")
    reset_request(api, "nina@example.com")
    code = last_code(services, "nina@example.com")
    assert reset_confirm(api, "nina@example.com", code).status_code == 204
    pair = login(api, "nina@example.com", OTHER).json()
    view = me(api, pair["access_token"]).json()
    assert view["status"] == "active" and view["email_verified"] is True


def test_reset_with_a_weak_password_keeps_the_code(api: TestClient, services: Services, alice: str) -> None:
    reset_request(api, "alice@example.com")
    code = last_code(services, "alice@example.com")
    assert_error(reset_confirm(api, "alice@example.com", code, "password123"), 422, "weak_password")
    assert login(api, "alice@example.com", STRONG).status_code == 200
    assert reset_confirm(api, "alice@example.com", code).status_code == 204


def test_reset_with_a_wrong_code_or_unknown_email_changes_nothing(
    api: TestClient, services: Services, alice: str
) -> None:
    reset_request(api, "alice@example.com")
    code = last_code(services, "alice@example.com")
    wrong = reset_confirm(api, "alice@example.com", other_code(code))
    unknown = reset_confirm(api, "nobody@example.com", code)
    assert_error(wrong, 400, "invalid_code")
    assert without_request_id(wrong) == without_request_id(unknown)
    assert login(api, "alice@example.com", STRONG).status_code == 200


def test_suspended_accounts_get_no_reset_code(api: TestClient, services: Services) -> None:
    create_user(services, "sam@example.com", password=STRONG, status="suspended")
    assert reset_request(api, "sam@example.com").status_code == 202
    assert mails_to(services, "sam@example.com") == []


# --- enumeration ----------------------------------------------------------------------------------------------
class Counting:
    """Counts calls to a method of the real password hasher (which still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: object, name: str):
        self.calls = 0
        original = getattr(target, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(target, name, wrapper)

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


def test_every_login_spends_exactly_one_verification(
    api: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_user(services, "known@example.com", password=STRONG)
    register(api, "pending@example.com")
    create_user(services, "nopassword@example.com")
    verify_calls = Counting(monkeypatch, services.accounts.hashing, "verify")

    for email, password, status in [
        ("unknown@example.com", STRONG, 401),
        ("known@example.com", OTHER, 401),
        ("known@example.com", STRONG, 200),
        ("pending@example.com", OTHER, 401),
        ("pending@example.com", STRONG, 403),
        ("nopassword@example.com", STRONG, 401),
    ]:
        assert login(api, email, password).status_code == status, email
        assert verify_calls.take() == 1, (email, password)


def test_every_registration_spends_exactly_one_hash(
    api: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_user(services, "active@example.com", password=STRONG)
    register(api, "pending@example.com")
    hash_calls = Counting(monkeypatch, services.accounts.hashing, "hash")
    bodies = []
    for email in ("new@example.com", "pending@example.com", "active@example.com"):
        r = register(api, email, OTHER)
        assert r.status_code == 202
        bodies.append(r.json())
        assert hash_calls.take() == 1, email
    assert bodies[0] == bodies[1] == bodies[2]


def test_answers_do_not_tell_which_addresses_have_accounts(api: TestClient, services: Services) -> None:
    create_user(services, "known@example.com", password=STRONG)
    register(api, "pending@example.com")
    pairs: list[tuple[Response, Response]] = [
        (register(api, "known@example.com", OTHER), register(api, "unknown1@example.com", OTHER)),
        (login(api, "known@example.com", OTHER), login(api, "unknown2@example.com", OTHER)),
        (reset_request(api, "known@example.com"), reset_request(api, "unknown3@example.com")),
        (
            api.post("/api/v1/auth/resend-code", json={"email": "pending@example.com"}),
            api.post("/api/v1/auth/resend-code", json={"email": "unknown4@example.com"}),
        ),
    ]
    for known, unknown in pairs:
        assert known.status_code == unknown.status_code, (known.url, known.text, unknown.text)
        assert without_request_id(known) == without_request_id(unknown), known.url
        assert known.headers.get("www-authenticate") == unknown.headers.get("www-authenticate")
        assert known.headers.get("set-cookie") == unknown.headers.get("set-cookie")


# --- cookies and CSRF -----------------------------------------------------------------------------------------
def cookie_attrs(r: Response) -> dict[str, dict[str, str | bool]]:
    """Set-Cookie headers of ``r`` as name -> {attribute: value}, attributes lower-cased."""
    out: dict[str, dict[str, str | bool]] = {}
    for header in r.headers.get_list("set-cookie"):
        parts = [p.strip() for p in header.split(";")]
        name, _, value = parts[0].partition("=")
        attrs: dict[str, str | bool] = {"value": value}
        for p in parts[1:]:
            key, eq, val = p.partition("=")
            attrs[key.lower()] = val if eq else True
        out[name] = attrs
    return out


def test_login_with_cookies_sets_httponly_session_cookies(api: TestClient, alice: str) -> None:
    r = login(api, "alice@example.com", use_cookies=True)
    assert r.status_code == 200, r.text
    cookies = cookie_attrs(r)
    assert set(cookies) == {"studiolo_access", "studiolo_refresh", "studiolo_csrf"}
    access, refresh_cookie, csrf = cookies["studiolo_access"], cookies["studiolo_refresh"], cookies["studiolo_csrf"]
    assert access["value"] == r.json()["access_token"]
    assert access.get("httponly") is True
    assert str(access.get("samesite")).lower() == "lax"
    assert refresh_cookie["value"] == r.json()["refresh_token"]
    assert refresh_cookie.get("httponly") is True
    assert refresh_cookie.get("path") == "/api/v1/auth"
    assert "httponly" not in csrf  # the page's script copies it into X-CSRF-Token
    assert csrf["value"]
    # http://testserver is plain http and not localhost: Secure cookies would never come back.
    assert "secure" not in access


def test_cookie_secure_always_marks_every_cookie_secure(settings_factory: Callable[..., Any]) -> None:
    svc = build_services(settings_factory(cookie_secure="always"), upgrade_db=False)
    try:
        create_user(svc, "alice@example.com", password=STRONG)
        with TestClient(create_app(services=svc, start_workers=False)) as api:
            r = login(api, "alice@example.com", use_cookies=True)
            assert r.status_code == 200
            assert all(attrs.get("secure") is True for attrs in cookie_attrs(r).values())
    finally:
        svc.close()


def test_cookie_session_needs_the_csrf_header_for_changes(api: TestClient, alice: str) -> None:
    r = login(api, "alice@example.com", use_cookies=True)
    csrf = api.cookies.get("studiolo_csrf")
    assert csrf
    assert "authorization" not in api.headers

    r = api.get("/api/v1/auth/me")
    assert r.status_code == 200 and r.json()["id"] == alice
    assert_error(api.post("/api/v1/collections", json={"name": "no header"}), 403, "csrf_failed")
    r = api.post("/api/v1/collections", json={"name": "wrong"}, headers={"X-CSRF-Token": "0" * len(csrf)})
    assert_error(r, 403, "csrf_failed")
    assert api.get("/api/v1/collections").json()["items"] == []
    r = api.post("/api/v1/collections", json={"name": "right"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    # A Bearer token needs no CSRF header (a cross-site page cannot make a browser send one).
    token = login(api, "alice@example.com").json()["access_token"]
    api.cookies.clear()
    assert api.post("/api/v1/collections", json={"name": "bearer"}, headers=bearer(token)).status_code == 201


def test_another_sessions_csrf_token_does_not_pass(api: TestClient, services: Services, alice: str) -> None:
    other = login(api, "alice@example.com", use_cookies=True)
    stolen = str(cookie_attrs(other)["studiolo_csrf"]["value"])
    api.cookies.clear()
    login(api, "alice@example.com", use_cookies=True)
    assert api.cookies.get("studiolo_csrf") != stolen
    r = api.post("/api/v1/collections", json={"name": "x"}, headers={"X-CSRF-Token": stolen})
    assert_error(r, 403, "csrf_failed")


def test_refresh_and_logout_with_cookies(api: TestClient, alice: str) -> None:
    first = login(api, "alice@example.com", use_cookies=True).json()
    r = api.post("/api/v1/auth/refresh", json={})
    assert r.status_code == 200, r.text
    assert set(cookie_attrs(r)) == {"studiolo_access", "studiolo_refresh", "studiolo_csrf"}
    assert api.cookies.get("studiolo_access") == r.json()["access_token"]
    assert api.cookies.get("studiolo_refresh") == r.json()["refresh_token"] != first["refresh_token"]
    assert api.get("/api/v1/auth/me").status_code == 200
    # The spent refresh token is a stolen one now.
    assert_error(refresh(api, first["refresh_token"]), 401, "refresh_token_reused")

    second = login(api, "alice@example.com", use_cookies=True).json()
    csrf = api.cookies.get("studiolo_csrf")
    assert_error(api.post("/api/v1/auth/logout", json={}), 403, "csrf_failed")
    r = api.post("/api/v1/auth/logout", json={}, headers={"X-CSRF-Token": csrf or ""})
    assert r.status_code == 204
    cleared = cookie_attrs(r)
    assert {"studiolo_access", "studiolo_refresh", "studiolo_csrf"} <= set(cleared)
    assert_error(api.get("/api/v1/auth/me"), 401, "not_authenticated")
    assert_error(me(api, second["access_token"]), 401, "token_revoked")
    assert refresh(api, second["refresh_token"]).status_code == 401


# --- bad input ------------------------------------------------------------------------------------------------
VALID_BODIES: dict[str, dict[str, Any]] = {
    "/api/v1/auth/register": {"email": "x@example.com", "password": STRONG},
    "/api/v1/auth/resend-code": {"email": "x@example.com"},
    "/api/v1/auth/verify": {"email": "x@example.com", "code": "123456"},
    "/api/v1/auth/login": {"email": "x@example.com", "password": STRONG},
    "/api/v1/auth/refresh": {"refresh_token": "x"},
    "/api/v1/auth/password-reset": {"email": "x@example.com"},
    "/api/v1/auth/password-reset/confirm": {"email": "x@example.com", "code": "123456", "new_password": STRONG},
    "/api/v1/setup": {"token": "x", "email": "x@example.com", "password": STRONG},
}


@pytest.mark.parametrize("path", PUBLIC_AUTH_ROUTES)
def test_malformed_json_is_a_422_envelope(api: TestClient, path: str) -> None:
    for raw in (b"{", b'{"email": ', b"\xff\xfe", b"[]", b"null", b'"text"', b"{'single': 'quotes'}"):
        r = api.post(path, content=raw, headers={"Content-Type": "application/json"})
        assert_error(r, 422, "invalid_input")


@pytest.mark.parametrize("path", PUBLIC_AUTH_ROUTES)
def test_extra_fields_are_refused(api: TestClient, path: str) -> None:
    r = api.post(path, json={**VALID_BODIES[path], "role": "admin"})
    body = assert_error(r, 422, "invalid_input")
    assert any(e["loc"][-1] == "role" for e in body["error"]["details"]["errors"])


@pytest.mark.parametrize("path", PUBLIC_AUTH_ROUTES)
def test_wrong_types_and_oversized_fields_are_422(api: TestClient, services: Services, path: str) -> None:
    before = user_count(services)
    body = VALID_BODIES[path]
    for field in body:
        for bad in (123, None, ["a"], {"a": 1}, "x" * 5000):
            r = api.post(path, json={**body, field: bad})
            assert r.status_code == 422 or (r.status_code in (400, 401, 403) and field == "refresh_token"), (
                field,
                bad,
                r.text,
            )
            assert r.json()["error"]["code"], r.text
    assert user_count(services) == before


def test_oversized_bodies_are_413(settings_factory: Callable[..., Any]) -> None:
    svc = build_services(settings_factory(max_upload_bytes=1024), upgrade_db=False)
    limit = 2 * svc.settings.max_upload_bytes + 1024 * 1024
    try:
        with TestClient(create_app(services=svc, start_workers=False)) as api:
            for path in PUBLIC_AUTH_ROUTES:
                huge = b'{"email": "' + b"a" * (limit + 10) + b'"}'
                r = api.post(path, content=huge, headers={"Content-Type": "application/json"})
                assert_error(r, 413, "payload_too_large", same_request_id=False)  # see the next test
    finally:
        svc.close()


def test_a_413_carries_one_request_id(settings_factory: Callable[..., Any]) -> None:
    svc = build_services(settings_factory(max_upload_bytes=1024), upgrade_db=False)
    try:
        with TestClient(create_app(services=svc, start_workers=False)) as api:
            r = api.post("/api/v1/auth/login", content=b"x" * (2 * 1024 * 1024), headers={"X-Request-ID": "req-413"})
            assert r.status_code == 413
            assert r.headers.get_list("x-request-id") == ["req-413"]
            assert r.json()["request_id"] == "req-413"
    finally:
        svc.close()


def test_oversized_streamed_bodies_are_413(settings_factory: Callable[..., Any]) -> None:
    svc = build_services(settings_factory(max_upload_bytes=1024), upgrade_db=False)
    limit = 2 * svc.settings.max_upload_bytes + 1024 * 1024

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while the body streams in
        yield b'{"email": "'
        for _ in range(limit // 65536 + 2):
            yield b"a" * 65536
        yield b'"}'

    try:
        with TestClient(create_app(services=svc, start_workers=False)) as api:
            for path in PUBLIC_AUTH_ROUTES:
                r = api.post(path, content=chunks(), headers={"Content-Type": "application/json"})
                assert "content-length" not in r.request.headers
                assert_error(r, 413, "payload_too_large")
    finally:
        svc.close()


def test_password_fields_over_the_schema_limit_are_422(api: TestClient, services: Services) -> None:
    r = register(api, "x@example.com", "Aa1!" * 300)  # 1200 characters: refused before any hashing
    assert_error(r, 422, "invalid_input")
    r = login(api, "x@example.com", "Aa1!" * 300)
    assert_error(r, 422, "invalid_input")


def test_nothing_about_the_local_owner_leaks_through_public_routes(api: TestClient, services: Services) -> None:
    # The built-in owner has no password: it can never be signed into, reset or verified by email.
    with services.db.session() as session:
        local = session.get_one(User, LOCAL_USER_ID)
        email = local.email
    for r in (login(api, email, STRONG), reset_request(api, email), verify(api, email, "123456")):
        assert r.status_code in (202, 400, 401, 422), r.text
    assert mails_to(services, email) == []


# --- codes under concurrency (issue 13, item 6) ------------------------------------------------------------------
def code_attempts(services: Services, email: str, purpose: str) -> int:
    with services.db.session() as session:
        attempts = session.scalar(
            select(OneTimeCode.attempts)
            .join(User, User.id == OneTimeCode.user_id)
            .where(User.email == email, OneTimeCode.purpose == purpose)
        )
    assert attempts is not None
    return attempts


@pytest.mark.parametrize("purpose", ["verify", "reset"])
def test_concurrent_wrong_guesses_are_each_counted_and_the_code_dies_after_the_limit(
    api: TestClient, services: Services, purpose: str
) -> None:
    """Regression (issue 13, item 6): the counter was read, then ``attempts += 1`` written back from Python, and
    SQLite ignores FOR UPDATE: 5 concurrent wrong guesses left it at 2-3, so a code allowed 3-4x the documented 5
    tries. Real threads, with their writes made to meet (tests/helpers.py, writes_meet)."""
    email = "gus@example.com"
    if purpose == "verify":
        register(api, email)

        def guess(code: str) -> object:
            return services.accounts.verify_email(email, code, STRONG, Origin())
    else:
        create_user(services, email, password=STRONG)
        reset_request(api, email)

        def guess(code: str) -> object:
            return services.accounts.reset_password(email, code, OTHER, Origin(), keep_api_keys=False)

    code = last_code(services, email)
    limit = services.settings.verification_code_attempts
    assert limit == 5  # the documented number

    with writes_meet(services.db, "UPDATE one_time_codes", parties=limit):
        outcomes = in_threads(limit, lambda: guess(other_code(code)))
    assert all(isinstance(o, InvalidCode) for o in outcomes), outcomes
    assert code_attempts(services, email, purpose) == limit

    # More concurrent guesses never count past the limit, and the code is dead: the right one fails now.
    outcomes = in_threads(2 * limit, lambda: guess(other_code(code)))
    assert all(isinstance(o, InvalidCode) for o in outcomes), outcomes
    assert code_attempts(services, email, purpose) == limit
    with pytest.raises(InvalidCode):
        guess(code)
    if purpose == "verify":
        assert_error(login(api, email, STRONG), 403, "email_not_verified")
    else:
        assert login(api, email, STRONG).status_code == 200  # the password was not reset


def test_two_concurrent_right_guesses_use_the_code_once(api: TestClient, services: Services) -> None:
    """Two requests with the right reset code at once: one sets the password, the other is refused."""
    create_user(services, "hal@example.com", password=STRONG)
    reset_request(api, "hal@example.com")
    code = last_code(services, "hal@example.com")
    passwords = iter(["first-choice-7781", "second-choice-9912"])
    chosen = {}

    def reset() -> None:
        password = next(passwords)
        services.accounts.reset_password("hal@example.com", code, password, Origin(), keep_api_keys=False)
        chosen["winner"] = password

    outcomes = in_threads(2, reset)
    assert sorted(type(o).__name__ for o in outcomes) == ["InvalidCode", "NoneType"], outcomes
    assert login(api, "hal@example.com", chosen["winner"]).status_code == 200


# --- the answer does not wait for address-dependent work (issue 13, item 7) ---------------------------------------
@pytest.fixture
def held_outbox(services: Services) -> Iterator[Callable[[], None]]:
    """The outbox thread kept busy until the returned function is called (then everything queued runs)."""
    release = threading.Event()
    services.outbox.spread_seconds = 0  # no pauses: the blocker holds everything queued after it
    services.outbox.run("test blocker", lambda: release.wait(30) and None)

    def let_go() -> None:
        release.set()
        services.outbox.flush()

    yield let_go
    release.set()


@pytest.mark.parametrize(
    ("path", "body", "known", "mailed"),
    [
        ("/api/v1/auth/password-reset", {}, "known@example.com", ("reset_code", None)),
        ("/api/v1/auth/register", {"password": OTHER}, "known@example.com", ("sign_up_attempt", "verification_code")),
        ("/api/v1/auth/resend-code", {}, "pending@example.com", ("verification_code", None)),
    ],
)
def test_enumeration_the_answer_leaves_before_any_work_that_depends_on_the_address(
    api: TestClient,
    services: Services,
    held_outbox: Callable[[], None],
    path: str,
    body: dict[str, str],
    known: str,
    mailed: tuple[str, str | None],
) -> None:
    """Regression (issue 13, item 7): a reset for a known address wrote a code, an audit row and queued a mail before
    answering, an unknown one only looked it up, and the time told them apart (6.6 vs 4.6 ms). Now the request
    runs no statement at all for either (the work waits on the outbox thread, held busy here), so both answers come
    from the same code path; the work then happens in the background. Sign-up and resend had the same asymmetry."""
    create_user(services, "known@example.com", password=STRONG)
    create_user(services, "pending@example.com", password=STRONG, status="pending")
    answers = []
    for email in (known, "unknown@example.com"):
        with statements(services.db) as run:
            r = api.post(path, json={"email": email, **body})
        assert r.status_code == 202, r.text
        assert run == [], (email, run)  # no lookup, no write: nothing that depends on the address
        answers.append(without_request_id(r))
    assert answers[0] == answers[1]
    assert mails_to_now(services, known) == mails_to_now(services, "unknown@example.com") == []

    held_outbox()  # the background work runs now
    assert [m.kind for m in mails_to(services, known)] == [mailed[0]]
    assert [m.kind for m in mails_to(services, "unknown@example.com")] == ([mailed[1]] if mailed[1] else [])


def mails_to_now(services: Services, to: str) -> list[Mail]:
    """What the console mailer has sent to ``to`` so far, without waiting for the outbox."""
    mailer = services.outbox.mailer
    assert isinstance(mailer, ConsoleMailer)
    return [m for m in mailer.sent if m.to == to]


def test_enumeration_a_wrong_code_runs_the_same_statements_for_known_and_unknown_addresses(
    api: TestClient, services: Services
) -> None:
    """Checking a code: one counting UPDATE for a known address with a live code and for an unknown address alike
    (before, the known one ran two more statements, a locking read and the counter's write)."""
    create_user(services, "known@example.com", password=STRONG)
    reset_request(api, "known@example.com")
    code = last_code(services, "known@example.com")
    runs = []
    for email in ("known@example.com", "unknown@example.com"):
        with statements(services.db) as run:
            assert_error(reset_confirm(api, email, other_code(code)), 400, "invalid_code")
        runs.append([s.split()[0] + " " + s.split()[1] for s in run])
    assert runs[0] == runs[1] == ["UPDATE one_time_codes"], runs


# --- responses that carry secrets are never stored by a cache ----------------------------------------------------
def test_every_response_with_tokens_or_a_key_is_no_store(api: TestClient, services: Services) -> None:
    """Token responses (sign-in, refresh, verification, setup, password change, the web sign-in form) and a new API
    key must not be kept by the browser's or a proxy's cache: ``Cache-Control: no-store``."""
    r = api.post(
        "/api/v1/setup",
        json={"token": services.admin.setup_token(), "email": "root@example.com", "password": STRONG},
    )
    assert r.status_code == 200, r.text
    responses = {"setup": r}
    create_user(services, "alice@example.com", password=STRONG)
    responses["login"] = login(api, "alice@example.com")
    responses["login with cookies"] = login(api, "alice@example.com", use_cookies=True)
    pair = responses["login"].json()
    responses["refresh"] = refresh(api, pair["refresh_token"])
    access = responses["refresh"].json()["access_token"]
    responses["password"] = api.post(
        "/api/v1/auth/password",
        json={"current_password": STRONG, "new_password": OTHER, "keep_api_keys": True},
        headers=bearer(access),
    )
    access = responses["password"].json()["access_token"]
    responses["api key"] = api.post("/api/v1/api-keys", json={"name": "k"}, headers=bearer(access))
    register(api, "bea@example.com")
    responses["verify"] = verify(api, "bea@example.com", last_code(services, "bea@example.com"))
    responses["sign-in form"] = api.post(
        "/signin", data={"email": "alice@example.com", "password": OTHER, "next": "/gallery"}, follow_redirects=False
    )
    for name, response in responses.items():
        assert response.status_code in (200, 201, 303), (name, response.status_code, response.text)
        assert response.headers.get("cache-control") == "no-store", name


class AnswerThenWork:
    """ASGI wrapper noting, in order, when the answer's last byte is handed to the server ("answered") and when
    work is queued on the outbox ("queued")."""

    def __init__(self, app: Any, services: Services, events: list[str]):
        self.app, self.events = app, events
        original = services.outbox.run

        def run(what: str, task: Callable[[], Any]) -> None:
            events.append("queued")
            original(what, task)

        services.outbox.run = run  # type: ignore[method-assign]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def noting(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.events.append("answered")

        await self.app(scope, receive, noting)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/auth/password-reset", {}),
        ("/api/v1/auth/register", {"password": OTHER}),
        ("/api/v1/auth/resend-code", {}),
    ],
)
def test_enumeration_the_work_is_queued_only_after_the_answer_is_sent(
    services: Services, path: str, body: dict[str, str]
) -> None:
    """Queued during the request, the work competed with the answer for the interpreter (the thread starts at once),
    and a known address still answered slower (measured: 3.7 vs 2.2 ms). It is queued once the answer is sent."""
    create_user(services, "known@example.com", password=STRONG)
    create_user(services, "pending@example.com", password=STRONG, status="pending")
    events: list[str] = []
    with TestClient(AnswerThenWork(create_app(services=services, start_workers=False), services, events)) as api:
        for email in ("known@example.com", "pending@example.com", "unknown@example.com"):
            events.clear()
            assert api.post(path, json={"email": email, **body}).status_code == 202
            assert events == ["answered", "queued"], (email, events)


def test_a_full_outbox_refuses_every_address_alike(
    api: TestClient, services: Services, held_outbox: Callable[[], None]
) -> None:
    create_user(services, "known@example.com", password=STRONG)
    services.outbox.limit = 1  # the held task fills it
    known = api.post("/api/v1/auth/password-reset", json={"email": "known@example.com"})
    unknown = api.post("/api/v1/auth/password-reset", json={"email": "unknown@example.com"})
    assert_error(known, 503, "mail_queue_full")
    assert without_request_id(known) == without_request_id(unknown)
    held_outbox()
    assert mails_to(services, "known@example.com") == []  # refused means nothing was queued
