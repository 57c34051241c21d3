"""Sign-up, email codes, sign-in, sessions (rotating refresh tokens), profile, password and account deletion.

Enumeration: register, resend and reset answer the same whether the address is known or not, and every
sign-in spends one argon2 verification (a dummy hash for unknown addresses), so neither the message nor
the time tells an attacker which emails have accounts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from studiolo.db.base import new_id, utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts import audit
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.mail import Mail, Mailer
from studiolo.domain.accounts.models import (
    LOCAL_USER_EMAIL,
    ROLE_SCOPES,
    OAuthAccount,
    OneTimeCode,
    RefreshToken,
    User,
)
from studiolo.domain.accounts.passwords import PasswordHashing, check_policy
from studiolo.domain.accounts.ratelimit import RateLimiter
from studiolo.domain.accounts.schemas import SessionView, TokenPair, UserView
from studiolo.domain.accounts.tokens import TokenCodec, code_digest, digest, new_code, new_refresh_token
from studiolo.errors import Forbidden, InvalidInput, NotFound, RateLimited, StudioloError, Unauthorized
from studiolo.settings import Settings

log = logging.getLogger(__name__)


class InvalidCode(StudioloError):
    status_code = 400
    code = "invalid_code"


def normalize_email(raw: str) -> str:
    """Lower-cased, syntax-checked address (no DNS lookups: a laptop install may be offline)."""
    try:
        # Intranet domains (corp.internal, home.lan) are fine on a self-hosted install; syntax is still checked.
        result = validate_email(raw.strip(), check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"That is not a valid email address: {exc}", code="invalid_email") from exc
    return result.normalized.lower()


def user_view(user: User, providers: list[str]) -> UserView:
    return UserView(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        role=user.role,
        status=user.status,
        email_verified=user.email_verified_at is not None,
        has_password=user.password_hash is not None,
        oauth_providers=providers,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


@dataclass
class MailOutbox:
    """Sends mail from one background thread: a slow or unreachable SMTP server never delays a response (and
    the response time cannot tell whether a message was sent, i.e. whether the address has an account)."""

    mailer: Mailer

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studiolo-mail")

    def send(self, mail: Mail) -> None:
        def deliver() -> None:
            try:
                self.mailer.send(mail)
            except Exception:
                log.exception("could not send email %r to %s", mail.subject, mail.to)

        self._pool.submit(deliver)

    def flush(self) -> None:
        self._pool.submit(lambda: None).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class AccountService:
    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        hashing: PasswordHashing,
        codec: TokenCodec,
        outbox: MailOutbox,
        limiter: RateLimiter,
        on_user_changed: Callable[[str], None],
        on_session_ended: Callable[[str], None],
    ):
        self.db = db
        self.settings = settings
        self.hashing = hashing
        self.codec = codec
        self.outbox = outbox
        self.limiter = limiter
        # Called after a change that must end existing access (suspension, password, deletion): the
        # authenticator drops its cached view of the user.
        self.on_user_changed = on_user_changed
        self.on_session_ended = on_session_ended

    # --- helpers -------------------------------------------------------------------------------------
    def _user_by_email(self, session: Session, email: str) -> User | None:
        return session.scalar(select(User).where(User.email == email))

    def _providers(self, session: Session, user_id: str) -> list[str]:
        return sorted(session.scalars(select(OAuthAccount.provider).where(OAuthAccount.user_id == user_id)))

    def view(self, session: Session, user: User) -> UserView:
        return user_view(user, self._providers(session, user.id))

    def _new_code(self, session: Session, user: User, purpose: str) -> str:
        session.execute(delete(OneTimeCode).where(OneTimeCode.user_id == user.id, OneTimeCode.purpose == purpose))
        code, code_id = new_code(), new_id()
        session.add(
            OneTimeCode(
                id=code_id,
                user_id=user.id,
                purpose=purpose,
                code_hash=code_digest(code_id, code),
                expires_at=utcnow() + timedelta(minutes=self.settings.verification_code_minutes),
            )
        )
        return code

    def _check_code(self, email: str, purpose: str, code: str, password: str | None = None) -> str:
        """The user id if ``code`` is the live ``purpose`` code of ``email``. Every wrong try counts (committed
        even though the request fails); the 5th wrong try burns the code. Unknown emails fail the same way.
        With ``password``, a wrong password counts as a wrong try too."""
        wrong = InvalidCode("The code is wrong or has expired; ask for a new one.")
        with self.db.session() as session:
            user = self._user_by_email(session, email)
            row = None
            if user is not None:
                row = session.scalar(
                    select(OneTimeCode)
                    .where(OneTimeCode.user_id == user.id, OneTimeCode.purpose == purpose)
                    .with_for_update()
                )
            if user is None or row is None or row.used_at is not None or row.expires_at <= utcnow():
                raise wrong
            if row.attempts >= self.settings.verification_code_attempts:
                raise wrong
            right = code.isdigit() and code_digest(row.id, code) == row.code_hash
            if right and password is not None:
                right = self.hashing.verify(user.password_hash, password)
            if not right:
                row.attempts += 1
                session.commit()  # the failed attempt must count even though this request fails
                raise wrong
            row.used_at = utcnow()
            return user.id

    def _mail(self, to: str, subject: str, text: str) -> None:
        self.outbox.send(Mail(to=to, subject=subject, text=text))

    # --- sign-up -------------------------------------------------------------------------------------
    def register(self, raw_email: str, password: str, display_name: str, origin: Origin) -> None:
        email = normalize_email(raw_email)
        check_policy(password, email=email)
        # Hash before looking anything up: every path costs one argon2 hash (timing says nothing).
        password_hash = self.hashing.hash(password)
        minutes = self.settings.verification_code_minutes
        with self.db.session() as session:
            user = self._user_by_email(session, email)
            if user is not None and user.status != "pending":
                # Known, verified address: tell its owner, tell the caller nothing.
                self._mail(
                    email,
                    "Someone tried to sign up with your address",
                    "Someone (maybe you) tried to create a Studiolo account with this address, which already "
                    "has one. Sign in, or reset your password if you forgot it. If it was not you, ignore this.",
                )
                return
            if user is None:
                user = User(email=email, display_name=display_name.strip(), status="pending")
                session.add(user)
                session.flush()
            else:
                # A pending (never verified) account can be claimed again: only the mailbox owner can verify,
                # so whoever registered it first gains nothing.
                user.display_name = display_name.strip()
            user.password_hash = password_hash
            code = self._new_code(session, user, "verify")
            audit.record(session, "register", actor_id=user.id, origin=origin, target_id=user.id)
        self._mail(
            email,
            f"Your Studiolo code: {code}",
            f"Your verification code is {code}. It expires in {minutes} minutes.",
        )

    def resend_code(self, raw_email: str) -> None:
        email = normalize_email(raw_email)
        with self.db.session() as session:
            user = self._user_by_email(session, email)
            if user is None or user.status != "pending":
                return
            last = session.scalar(
                select(OneTimeCode.created_at).where(OneTimeCode.user_id == user.id, OneTimeCode.purpose == "verify")
            )
            if last is not None and utcnow() - last < timedelta(seconds=self.settings.resend_code_seconds):
                return  # throttled silently: a 429 here would reveal that the address is registered
            code = self._new_code(session, user, "verify")
        self._mail(email, f"Your Studiolo code: {code}", f"Your verification code is {code}.")

    def verify_email(self, raw_email: str, code: str, password: str, origin: Origin) -> TokenPair:
        """Activate with the emailed code *and* the sign-up password: a pending address can be registered again
        (see ``register``), and without the password check whoever re-registered it last would have planted a
        password that the mailbox owner's code then activates."""
        user_id = self._check_code(normalize_email(raw_email), "verify", code.strip(), password)
        with self.db.session() as session:
            user = session.get_one(User, user_id)
            if user.status == "suspended":
                raise Forbidden("This account is suspended.", code="account_suspended")
            user.status = "active"
            user.email_verified_at = user.email_verified_at or utcnow()
            audit.record(session, "email_verified", actor_id=user.id, origin=origin, target_id=user.id)
            return self.start_session(session, user, origin)

    # --- sign-in and sessions ------------------------------------------------------------------------
    def login(self, raw_email: str, password: str, origin: Origin) -> TokenPair:
        email = normalize_email(raw_email)
        s = self.settings
        locked = self.limiter.locked_for(email, s.lockout_failures, s.lockout_minutes)
        if locked:
            raise RateLimited(
                "Too many failed sign-ins for this account; try again later or reset the password.",
                retry_after=locked,
                code="account_locked",
            )
        with self.db.session() as session:
            user = self._user_by_email(session, email)
            ok = self.hashing.verify(user.password_hash if user else None, password)
            if not ok or user is None:
                self.limiter.record_failure(email, s.lockout_failures, s.lockout_minutes)
                audit.record(session, "login_failed", actor_id=user.id if user else None, origin=origin, subject=email)
                session.commit()
                raise Unauthorized("The email or password is wrong.", code="invalid_credentials")
            if user.status == "pending":
                raise Forbidden("Verify your email address first (we sent you a code).", code="email_not_verified")
            if user.status == "suspended":
                raise Forbidden("This account is suspended.", code="account_suspended")
            self.limiter.clear_failures(email, s.lockout_failures, s.lockout_minutes)
            if self.hashing.needs_rehash(user.password_hash or ""):
                user.password_hash = self.hashing.hash(password)
            user.last_login_at = utcnow()
            audit.record(session, "login", actor_id=user.id, origin=origin, method="password")
            return self.start_session(session, user, origin)

    def start_session(self, session: Session, user: User, origin: Origin, family_id: str | None = None) -> TokenPair:
        """A new refresh token (a new family unless rotating) and an access token bound to it."""
        family = family_id or new_id()
        token = new_refresh_token()
        expires = utcnow() + timedelta(days=self.settings.refresh_token_days)
        session.add(
            RefreshToken(
                user_id=user.id,
                family_id=family,
                token_hash=digest(token),
                expires_at=expires,
                ip=origin.ip[:64],
                user_agent=origin.user_agent[:255],
            )
        )
        scopes = sorted(ROLE_SCOPES[user.role])
        access = self.codec.mint_access(user.id, user.role, scopes, user.token_epoch, family)
        return TokenPair(
            access_token=access,
            expires_in=self.settings.access_token_minutes * 60,
            refresh_token=token,
            refresh_expires_at=expires,
        )

    def refresh(self, token: str, origin: Origin) -> TokenPair:
        invalid = Unauthorized("The refresh token is not valid; sign in again.", code="invalid_token")
        now = utcnow()
        with self.db.session() as session:
            row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest(token)))
            if row is None:
                raise invalid
            if row.revoked_at is not None:
                raise invalid
            # Compare-and-set: of two requests presenting the same token, exactly one rotates it.
            rotated = session.execute(
                update(RefreshToken)
                .where(RefreshToken.id == row.id, RefreshToken.rotated_at.is_(None))
                .values(rotated_at=now)
            ).rowcount  # type: ignore[attr-defined]
            if rotated != 1:
                # A token that was already exchanged came back: it was copied. End the whole sign-in.
                self._revoke_family(session, row.family_id, now)
                audit.record(session, "refresh_token_reuse", actor_id=row.user_id, origin=origin, family=row.family_id)
                session.commit()
                self.on_session_ended(row.family_id)  # its access tokens stop now, not when the cache expires
                raise Unauthorized(
                    "This refresh token was already used; the session has been ended for safety. Sign in again.",
                    code="refresh_token_reused",
                )
            if row.expires_at <= now:
                raise Unauthorized("The session has expired; sign in again.", code="token_expired")
            user = session.get(User, row.user_id)
            if user is None or user.status != "active":
                raise invalid
            return self.start_session(session, user, origin, family_id=row.family_id)

    def _revoke_family(self, session: Session, family_id: str, now: datetime) -> None:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    def revoke_all(self, session: Session, user: User) -> None:
        """End every session of ``user``: refresh tokens revoked, access tokens dead through the epoch."""
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        user.token_epoch += 1

    def logout(self, user_id: str, session_id: str, refresh_token: str | None, everywhere: bool) -> None:
        family = session_id
        with self.db.session() as session:
            if everywhere:
                self.revoke_all(session, session.get_one(User, user_id))
            else:
                if refresh_token:
                    row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest(refresh_token)))
                    if row is not None and row.user_id == user_id:
                        family = row.family_id
                if family:
                    self._revoke_family(session, family, utcnow())
        if everywhere:
            self.on_user_changed(user_id)
        elif family:
            self.on_session_ended(family)

    def sessions(self, user_id: str, current_session_id: str) -> list[SessionView]:
        """Live sign-ins (one per refresh-token family), newest first."""
        now = utcnow()
        with self.db.session() as session:
            rows = session.scalars(
                select(RefreshToken)
                .where(
                    RefreshToken.user_id == user_id,
                    RefreshToken.rotated_at.is_(None),
                    RefreshToken.revoked_at.is_(None),
                    RefreshToken.expires_at > now,
                )
                .order_by(RefreshToken.id.desc())
            ).all()
            starts = dict(
                session.execute(
                    select(RefreshToken.family_id, RefreshToken.created_at)
                    .where(RefreshToken.family_id.in_([r.family_id for r in rows]))
                    .order_by(RefreshToken.id.desc())
                ).all()
            )
            return [
                SessionView(
                    id=r.family_id,
                    created_at=starts.get(r.family_id, r.created_at),
                    last_used_at=r.created_at,
                    expires_at=r.expires_at,
                    ip=r.ip,
                    user_agent=r.user_agent,
                    current=r.family_id == current_session_id,
                )
                for r in rows
            ]

    def revoke_session(self, user_id: str, family_id: str) -> None:
        with self.db.session() as session:
            owned = session.scalar(
                select(RefreshToken.id).where(RefreshToken.family_id == family_id, RefreshToken.user_id == user_id)
            )
            if owned is None:
                raise NotFound(f"No session with id '{family_id}'.", code="session_not_found")
            self._revoke_family(session, family_id, utcnow())
        self.on_session_ended(family_id)

    # --- profile and password ------------------------------------------------------------------------
    def me(self, user_id: str) -> UserView:
        with self.db.session() as session:
            user = session.get(User, user_id)
            if user is None:
                raise Unauthorized("The account no longer exists.", code="invalid_token")
            return self.view(session, user)

    def update_profile(self, user_id: str, display_name: str | None) -> UserView:
        with self.db.session() as session:
            user = session.get_one(User, user_id)
            if display_name is not None:
                user.display_name = display_name.strip()
            return self.view(session, user)

    def change_password(self, user_id: str, current: str, new: str, origin: Origin) -> TokenPair:
        with self.db.session() as session:
            user = session.get_one(User, user_id)
            check_policy(new, email=user.email)
            if user.password_hash is not None and not self.hashing.verify(user.password_hash, current):
                raise Forbidden("The current password is wrong.", code="invalid_credentials")
            user.password_hash = self.hashing.hash(new)
            self.revoke_all(session, user)
            audit.record(session, "password_changed", actor_id=user.id, origin=origin, target_id=user.id)
            # Every other session ends; this client gets a fresh one so it stays signed in.
            pair = self.start_session(session, user, origin)
        self.on_user_changed(user_id)
        self._mail(user.email, "Your Studiolo password was changed", "If this was not you, reset it now.")
        return pair

    def request_password_reset(self, raw_email: str, origin: Origin) -> None:
        email = normalize_email(raw_email)
        with self.db.session() as session:
            user = self._user_by_email(session, email)
            if user is None or user.status == "suspended" or email == LOCAL_USER_EMAIL:
                return
            code = self._new_code(session, user, "reset")
            audit.record(session, "password_reset_requested", actor_id=user.id, origin=origin, target_id=user.id)
        self._mail(
            email,
            f"Your Studiolo password reset code: {code}",
            f"Use the code {code} to choose a new password. It expires in "
            f"{self.settings.verification_code_minutes} minutes. If you did not ask for it, ignore this email.",
        )

    def reset_password(self, raw_email: str, code: str, new_password: str, origin: Origin) -> None:
        email = normalize_email(raw_email)
        check_policy(new_password, email=email)
        password_hash = self.hashing.hash(new_password)
        user_id = self._check_code(email, "reset", code.strip())
        with self.db.session() as session:
            user = session.get_one(User, user_id)
            user.password_hash = password_hash
            if user.status == "pending":  # the code proves the mailbox, same as verification
                user.status = "active"
            user.email_verified_at = user.email_verified_at or utcnow()
            self.revoke_all(session, user)
            audit.record(session, "password_reset", actor_id=user.id, origin=origin, target_id=user.id)
        self.on_user_changed(user_id)
