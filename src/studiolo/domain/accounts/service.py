"""Sign-up, email codes, sign-in, sessions (rotating refresh tokens), profile, password and account deletion.

Enumeration: register, resend and reset answer the same whether the address is known or not, and before doing any
work that depends on it (that work runs on the outbox thread); a code check runs one statement for any address;
every sign-in spends one argon2 verification (a dummy hash for unknown addresses). So neither the message nor the
time tells an attacker which emails have accounts.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from studiolo.db.base import UTCDateTime, new_id, utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts import audit, suspension
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.keys import revoke_all_keys
from studiolo.domain.accounts.mail import Mail, MailOutbox
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
        # email_validator says why ("...It must have exactly one @-sign."): its words, without repeating ours.
        why = str(exc).removeprefix("The email address is not valid. ")
        raise InvalidInput(
            f"That is not a valid email address. {why}", code="invalid_email", details={"field": "email"}
        ) from exc
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
        on_key_revoked: Callable[[str], None],
    ):
        self.db = db
        self.settings = settings
        self.hashing = hashing
        self.codec = codec
        self.outbox = outbox
        self.limiter = limiter
        # Called after a change that must end existing access (suspension, password, deletion): the
        # authenticator drops its cached view of the user, session or API key (by digest).
        self.on_user_changed = on_user_changed
        self.on_session_ended = on_session_ended
        self.on_key_revoked = on_key_revoked

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

    def _try_code(self, email: str, purpose: str, code: str, password: str | None = None) -> _CodeTry:
        """The live ``purpose`` code of ``email`` if ``code`` is it; raises InvalidCode otherwise. Unknown emails
        fail the same way, through the same statement. With ``password``, a wrong password is a wrong try too.

        Every try, right or wrong, is counted by one atomic ``UPDATE ... attempts = attempts + 1 ... RETURNING``,
        committed before the guess is even compared: concurrent guesses can neither lose a count nor pass the
        limit (SQLite ignores ``SELECT ... FOR UPDATE``; tests/integration/test_auth.py,
        test_concurrent_wrong_guesses_*). The caller spends the code with ``_spend_code`` in its own transaction."""
        wrong = InvalidCode("The code is wrong or has expired; ask for a new one.")
        with self.db.session() as session:
            row = session.execute(
                _COUNT_TRY,
                {
                    "b_email": email,
                    "b_purpose": purpose,
                    "b_now": utcnow(),
                    "b_max_attempts": self.settings.verification_code_attempts,
                },
            ).first()
        if row is None:
            raise wrong
        right = code.isdigit() and hmac.compare_digest(code_digest(row.id, code), row.code_hash)
        if right and password is not None:
            with self.db.session() as session:
                password_hash = session.scalar(select(User.password_hash).where(User.id == row.user_id))
            right = self.hashing.verify(password_hash, password)
        if not right:
            raise wrong
        return _CodeTry(code_id=row.id, user_id=row.user_id)

    def _spend_code(self, session: Session, code_id: str) -> None:
        """Mark the code used, in the caller's transaction; of two requests with the same right code, one wins."""
        spent = session.execute(
            update(OneTimeCode)
            .where(OneTimeCode.id == code_id, OneTimeCode.used_at.is_(None))
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if spent != 1:
            raise InvalidCode("The code is wrong or has expired; ask for a new one.")

    # --- sign-up -------------------------------------------------------------------------------------
    # Sign-up, resend and reset check their input and return the function that starts the rest: the work that
    # depends on the address, on the outbox thread (mail.MailOutbox.run). The HTTP layer calls it once the answer is
    # sent, so what a caller can measure is the same for every address, known or not. Other callers call it at once.
    def register(self, raw_email: str, password: str, display_name: str, origin: Origin) -> Callable[[], None]:
        email = normalize_email(raw_email)
        check_policy(password, email=email)
        self.outbox.check_room()
        # Hashed here, on the caller's request, for every address alike: a flood of sign-ups is paced by the request
        # threads instead of queueing argon2 work on the outbox.
        password_hash = self.hashing.hash(password)
        return lambda: self.outbox.run(
            "sign-up", lambda: self._register(email, password_hash, display_name.strip(), origin)
        )

    def _register(self, email: str, password_hash: str, display_name: str, origin: Origin) -> Mail:
        with self.db.session() as session:
            user = self._user_by_email(session, email)
            if user is not None and user.status != "pending":
                # Known, verified address: tell its owner, tell the caller nothing.
                return Mail(
                    to=email,
                    kind="sign_up_attempt",
                    subject="Someone tried to sign up with your address",
                    text="Someone (maybe you) tried to create a Studiolo account with this address, which already "
                    "has one. Sign in, or reset your password if you forgot it. If it was not you, ignore this.",
                )
            if user is None:
                user = User(email=email, display_name=display_name, status="pending")
                session.add(user)
                session.flush()
            else:
                # A pending (never verified) account can be claimed again: only the mailbox owner can verify,
                # so whoever registered it first gains nothing.
                user.display_name = display_name
            user.password_hash = password_hash
            code = self._new_code(session, user, "verify")
            audit.record(session, "register", actor_id=user.id, origin=origin, target_id=user.id)
        return self._code_mail(email, code)

    def _code_mail(self, email: str, code: str) -> Mail:
        return Mail(
            to=email,
            kind="verification_code",
            subject="Your Studiolo verification code",
            text=f"Your verification code is {code}. It expires in {self.settings.verification_code_minutes} minutes.",
            secret=code,
        )

    def resend_code(self, raw_email: str) -> Callable[[], None]:
        email = normalize_email(raw_email)
        self.outbox.check_room()
        return lambda: self.outbox.run("code resend", lambda: self._resend_code(email))

    def _resend_code(self, email: str) -> Mail | None:
        with self.db.session() as session:
            user = self._user_by_email(session, email)
            if user is None or user.status != "pending":
                return None
            last = session.scalar(
                select(OneTimeCode.created_at).where(OneTimeCode.user_id == user.id, OneTimeCode.purpose == "verify")
            )
            if last is not None and utcnow() - last < timedelta(seconds=self.settings.resend_code_seconds):
                return None  # throttled silently: a 429 here would reveal that the address is registered
            code = self._new_code(session, user, "verify")
        return self._code_mail(email, code)

    def verify_email(self, raw_email: str, code: str, password: str, origin: Origin) -> TokenPair:
        """Activate with the emailed code *and* the sign-up password: a pending address can be registered again
        (see ``register``), and without the password check whoever re-registered it last would have planted a
        password that the mailbox owner's code then activates."""
        tried = self._try_code(normalize_email(raw_email), "verify", code.strip(), password)
        with self.db.session() as session:
            # Spent first: that write takes SQLite's write lock, so the user read next is current (PostgreSQL: locked).
            self._spend_code(session, tried.code_id)
            user = session.get_one(User, tried.user_id, with_for_update=True)
            if user.status == "suspended":
                raise suspension.suspended(suspension.reason(session, user.id))
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
                raise suspension.suspended(suspension.reason(session, user.id))
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
        # In SQL, not ``+= 1`` in Python: two concurrent changes (a password change and "sign out everywhere") must
        # bump the epoch twice, or the second would not end the tokens the first just issued.
        user.token_epoch = User.token_epoch + 1
        session.flush()  # the next read of user.token_epoch loads the new value

    def revoke_keys(self, session: Session, user: User, origin: Origin, reason: str) -> list[str]:
        """Revoke every live API key of ``user`` in this transaction (audited); returns their digests, which the
        caller hands to ``forget_keys`` after the commit."""
        hashes = revoke_all_keys(session, user.id)
        if hashes:
            audit.record(
                session,
                "api_keys_revoked",
                actor_id=user.id,
                origin=origin,
                target_id=user.id,
                reason=reason,
                count=len(hashes),
            )
        return hashes

    def _set_password(
        self, session: Session, user: User, password_hash: str, origin: Origin, event: str, keep_api_keys: bool
    ) -> list[str]:
        """A new password (changed or reset): every session ends, every API key too unless kept, audited as
        ``event``. Returns the revoked keys' digests for ``forget_keys`` after the commit."""
        user.password_hash = password_hash
        self.revoke_all(session, user)
        revoked = [] if keep_api_keys else self.revoke_keys(session, user, origin, event)
        audit.record(session, event, actor_id=user.id, origin=origin, target_id=user.id, kept_api_keys=keep_api_keys)
        return revoked

    def forget_keys(self, hashes: list[str]) -> None:
        for key_hash in hashes:
            self.on_key_revoked(key_hash)

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

    def change_password(
        self, user_id: str, current: str, new: str, origin: Origin, *, keep_api_keys: bool
    ) -> TokenPair:
        """Set a new password: every other session ends, and every API key too unless ``keep_api_keys``; this
        client gets a fresh pair."""
        with self.db.session() as session:
            user = session.get_one(User, user_id)
            check_policy(new, email=user.email, field="new_password")
            if user.password_hash is not None and not self.hashing.verify(user.password_hash, current):
                raise Forbidden("The current password is wrong.", code="invalid_credentials")
            revoked = self._set_password(
                session, user, self.hashing.hash(new), origin, "password_changed", keep_api_keys
            )
            # Every other session ends; this client gets a fresh one so it stays signed in.
            pair = self.start_session(session, user, origin)
        self.on_user_changed(user_id)
        self.forget_keys(revoked)
        self.outbox.send(
            Mail(
                to=user.email,
                kind="password_changed",
                subject="Your Studiolo password was changed",
                text="If this was not you, reset it now.",
            )
        )
        return pair

    def request_password_reset(self, raw_email: str, origin: Origin) -> Callable[[], None]:
        """Mail a reset code if the address has an account that may reset; the caller learns nothing either way.
        Returns the function that starts the work (see ``register``)."""
        email = normalize_email(raw_email)
        self.outbox.check_room()
        return lambda: self.outbox.run("password reset request", lambda: self._request_password_reset(email, origin))

    def _request_password_reset(self, email: str, origin: Origin) -> Mail | None:
        with self.db.session() as session:
            user = self._user_by_email(session, email)
            if user is None or user.status == "suspended" or email == LOCAL_USER_EMAIL:
                return None
            code = self._new_code(session, user, "reset")
            audit.record(session, "password_reset_requested", actor_id=user.id, origin=origin, target_id=user.id)
        return Mail(
            to=email,
            kind="reset_code",
            subject="Your Studiolo password reset code",
            text=f"Use the code {code} to choose a new password. It expires in "
            f"{self.settings.verification_code_minutes} minutes. If you did not ask for it, ignore this email.",
            secret=code,
        )

    def reset_password(
        self, raw_email: str, code: str, new_password: str, origin: Origin, *, keep_api_keys: bool
    ) -> None:
        """Set a new password with an emailed code: every session ends, and every API key too unless
        ``keep_api_keys`` (whoever forgot a password, or lost it to someone, chooses)."""
        email = normalize_email(raw_email)
        check_policy(new_password, email=email, field="new_password")
        password_hash = self.hashing.hash(new_password)
        tried = self._try_code(email, "reset", code.strip())
        with self.db.session() as session:
            self._spend_code(session, tried.code_id)  # first, as in verify_email
            user = session.get_one(User, tried.user_id, with_for_update=True)
            if user.status == "pending":  # the code proves the mailbox, same as verification
                user.status = "active"
            user.email_verified_at = user.email_verified_at or utcnow()
            revoked = self._set_password(session, user, password_hash, origin, "password_reset", keep_api_keys)
        self.on_user_changed(tried.user_id)
        self.forget_keys(revoked)


@dataclass(frozen=True)
class _CodeTry:
    code_id: str
    user_id: str


# One try at a code: counted atomically, whatever the guess. The user is looked up inside the statement, so an
# unknown address runs exactly the same statement as a known one (it matches no row).
_COUNT_TRY = (
    update(OneTimeCode)
    .where(
        OneTimeCode.user_id == select(User.id).where(User.email == bindparam("b_email")).scalar_subquery(),
        OneTimeCode.purpose == bindparam("b_purpose"),
        OneTimeCode.used_at.is_(None),
        OneTimeCode.expires_at > bindparam("b_now", type_=UTCDateTime()),
        OneTimeCode.attempts < bindparam("b_max_attempts"),
    )
    .values(attempts=OneTimeCode.attempts + 1)
    .returning(OneTimeCode.id, OneTimeCode.user_id, OneTimeCode.code_hash)
    .execution_options(synchronize_session=False)
)
