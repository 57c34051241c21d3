"""Administration: first-run setup, the admin's user list (search, suspend, re-activate, role), account
deletion (by the user or an admin) and the audit log.

First run: with no usable administrator, `studiolo users create-admin` or the setup page creates one. The page
needs a setup token printed in the server log at start-up (an HMAC of the server secret: the same in every
process sharing the secret, useless once an admin exists), so whoever reaches a fresh server first over the
network cannot take it over, as they could on an open install page.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from sqlalchemy import false, func, or_, select, update
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts import audit
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_EMAIL, LOCAL_USER_ID, OAuthAccount, RefreshToken, User
from studiolo.domain.accounts.passwords import PasswordHashing, check_policy
from studiolo.domain.accounts.schemas import AuditPage, AuditView, UserPage, UserView
from studiolo.domain.accounts.service import AccountService, normalize_email
from studiolo.domain.accounts.tokens import TokenCodec
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.service import GalleryService, StoredFiles
from studiolo.domain.generation.models import Job
from studiolo.errors import Conflict, Forbidden, NotFound
from studiolo.storage.base import ObjectStore

log = logging.getLogger(__name__)


class AdminService:
    def __init__(
        self,
        *,
        db: Database,
        accounts: AccountService,
        hashing: PasswordHashing,
        codec: TokenCodec,
        gallery: GalleryService,
        store: ObjectStore,
        on_user_changed: Callable[[str], None],
    ):
        self.db = db
        self.accounts = accounts
        self.hashing = hashing
        self.codec = codec
        self.gallery = gallery
        self.store = store
        self.on_user_changed = on_user_changed

    # --- first run -----------------------------------------------------------------------------------
    def needs_setup(self) -> bool:
        """True while no administrator can sign in (no active admin with a password or a linked provider)."""
        with self.db.session() as session:
            can_sign_in = or_(
                User.password_hash.is_not(None),
                User.id.in_(select(OAuthAccount.user_id)),
            )
            admin = session.scalar(
                select(User.id).where(User.role == "admin", User.status == "active", can_sign_in).limit(1)
            )
            return admin is None

    def setup_token(self) -> str:
        return self.codec.sign("setup", "first-admin")[:32]

    def create_admin(
        self, raw_email: str, password: str, display_name: str, origin: Origin, *, setup_token: str | None = None
    ) -> UserView:
        """The first administrator (setup page: needs the setup token and no admin yet), or another one (CLI).

        The install's built-in local owner becomes the first admin, so what was made before sign-in existed
        (e.g. with `studiolo generate`) stays with the person who installed Studiolo."""
        email = normalize_email(raw_email)
        check_policy(password, email=email)
        if setup_token is not None:
            if not self.needs_setup():
                raise Conflict("Studiolo is already set up; sign in instead.", code="already_set_up")
            if not hmac.compare_digest(setup_token.encode(), self.setup_token().encode()):
                raise Forbidden("The setup token is wrong; copy it from the server log.", code="invalid_setup_token")
        password_hash = self.hashing.hash(password)
        with self.db.session() as session:
            existing = session.scalar(select(User).where(User.email == email))
            local = session.get(User, LOCAL_USER_ID)
            if existing is not None:
                user = existing
            elif local is not None and local.email == LOCAL_USER_EMAIL and local.password_hash is None:
                user = local
                user.email = email
            else:
                user = User(email=email, token_epoch=0)
                session.add(user)
            user.display_name = display_name.strip() or user.display_name or email.split("@")[0]
            user.password_hash = password_hash
            user.role = "admin"
            user.status = "active"
            user.email_verified_at = user.email_verified_at or utcnow()
            if user not in session.new:
                # An existing account's tokens end (they carry the old role), bumped in SQL like every epoch change.
                # (``+= 1`` in Python also failed on a new row, whose epoch is None until inserted: a second admin
                # with a new address could not be created; test_admin.py, test_a_second_admin_*.)
                user.token_epoch = User.token_epoch + 1
            session.flush()
            audit.record(session, "admin_created", actor_id=user.id, origin=origin, target_id=user.id)
            view = self.accounts.view(session, user)
        self.on_user_changed(view.id)
        return view

    # --- users ---------------------------------------------------------------------------------------
    def list_users(
        self, *, q: str = "", status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> UserPage:
        with self.db.session() as session:
            query = select(User).order_by(User.id.desc()).limit(limit + 1)
            if q:
                pattern = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                query = query.where(
                    or_(User.email.like(pattern, escape="\\"), func.lower(User.display_name).like(pattern, escape="\\"))
                )
            if status:
                query = query.where(User.status == status)
            if cursor:
                query = query.where(User.id < cursor)
            rows = list(session.scalars(query))
            more = len(rows) > limit
            rows = rows[:limit]
            return UserPage(
                items=[self.accounts.view(session, u) for u in rows], next_cursor=rows[-1].id if more and rows else None
            )

    def get_user(self, user_id: str) -> UserView:
        with self.db.session() as session:
            user = _user(session, user_id)
            return self.accounts.view(session, user)

    def _lock_admins(self, session: Session) -> int:
        """Serialise every change that may take away an administrator, then count the active ones.

        Must be the transaction's first statement. PostgreSQL: lock the active admins' rows (in id order, so two
        such changes never deadlock); one that waited reads what the other committed. SQLite ignores FOR UPDATE
        and reads outside any transaction until the first write, so it takes the database's write lock first with
        a write that changes nothing. Two admins demoting each other at once then leave one
        (tests/integration/test_admin.py, test_concurrent_*)."""
        if self.db.is_sqlite:
            session.execute(update(User).where(false()).values(role=User.role))
        else:
            session.execute(_ACTIVE_ADMINS.order_by(User.id).with_for_update()).all()
        return _count_active_admins(session)

    def _keep_an_admin(self, session: Session, before: int, message: str) -> None:
        """Refuse (roll back) a change that took the last active administrator away."""
        session.flush()
        if before > 0 and _count_active_admins(session) == 0:
            raise Conflict(message, code="last_admin")

    def set_status(
        self, actor_id: str | None, user_id: str, status: str, origin: Origin, reason: str | None = None
    ) -> UserView:
        """Suspend (every session, access token and API key of the user ends; keys stay revoked) or re-activate.
        ``reason``: what the suspended user is told (kept in the audit event; see suspension.py)."""
        if status == "suspended" and actor_id == user_id:
            raise Conflict("You cannot suspend your own account.", code="cannot_suspend_self")
        revoked: list[str] = []
        with self.db.session() as session:
            admins = self._lock_admins(session)
            user = _user(session, user_id)
            if status == "active" and user.email_verified_at is None and user.status != "active":
                raise Conflict("The user has not verified their email yet.", code="email_not_verified")
            if user.status != status:
                previous, user.status = user.status, status
                if status == "suspended":
                    self.accounts.revoke_all(session, user)
                    revoked = self.accounts.revoke_keys(session, user, origin, "suspended")
                    self._keep_an_admin(session, admins, "This is the last administrator; it cannot be suspended.")
                audit.record(
                    session,
                    f"user_{'suspended' if status == 'suspended' else 'activated'}",
                    actor_id=actor_id,
                    origin=origin,
                    target_id=user_id,
                    previous=previous,
                    **({"reason": reason} if status == "suspended" and reason else {}),
                )
            view = self.accounts.view(session, user)
        self.on_user_changed(user_id)
        self.accounts.forget_keys(revoked)
        return view

    def set_role(self, actor_id: str, user_id: str, role: str, origin: Origin) -> UserView:
        with self.db.session() as session:
            admins = self._lock_admins(session)
            user = _user(session, user_id)
            if user.role != role:
                previous, user.role = user.role, role
                user.token_epoch = User.token_epoch + 1  # tokens carry the role's scopes: old ones must go
                self._keep_an_admin(session, admins, "This is the last administrator; make someone else admin first.")
                audit.record(
                    session,
                    "role_changed",
                    actor_id=actor_id,
                    origin=origin,
                    target_id=user_id,
                    previous=previous,
                    role=role,
                )
            view = self.accounts.view(session, user)
        self.on_user_changed(user_id)
        return view

    # --- deletion ------------------------------------------------------------------------------------
    def delete_account(
        self,
        actor_id: str,
        user_id: str,
        origin: Origin,
        *,
        password: str | None = None,
        confirm_email: str | None = None,
    ) -> None:
        """Delete the user's rows (jobs, images, collections, keys, sessions: by cascade) and then their files.
        The audit trail keeps the event with the user's id, not their email."""
        if actor_id == user_id:
            # Checked before the locking transaction: argon2 must not run while every writer waits.
            with self.db.session() as session:
                user = _user(session, user_id)
                if user.password_hash is not None:
                    if not self.hashing.verify(user.password_hash, password or ""):
                        raise Forbidden("The password is wrong.", code="invalid_credentials")
                elif (confirm_email or "").strip().lower() != user.email:
                    raise Forbidden("Type your email address to confirm.", code="confirmation_required")
        with self.db.session() as session:
            admins = self._lock_admins(session)
            user = _user(session, user_id)
            images = session.execute(
                select(Image.original_key, Image.thumbnail_keys, Image.size_bytes).where(Image.owner_id == user_id)
            ).all()
            inputs = {
                key
                for keys in session.scalars(
                    select(Job.input_keys).where(Job.owner_id == user_id, Job.kind != "txt2img")
                )
                for key in (keys or {}).values()
            }
            # Running jobs: their workers find the row gone when storing and discard what they made.
            session.execute(update(Job).where(Job.owner_id == user_id).values(cancel_requested=True))
            session.execute(update(RefreshToken).where(RefreshToken.user_id == user_id).values(revoked_at=utcnow()))
            session.delete(user)
            self._keep_an_admin(session, admins, "The last administrator cannot be deleted.")
            audit.forget_subject(session, user.email)  # failed sign-ins typed the address: it goes with the account
            audit.record(
                session, "account_deleted", actor_id=actor_id, origin=origin, target_id=user_id, images=len(images)
            )
        self.on_user_changed(user_id)
        self.gallery.discard_files(StoredFiles(o, dict(t or {}), s) for o, t, s in images)
        self._discard_inputs(inputs)
        # Nothing of the account may stay readable in the database files (tests/integration/test_secure_delete.py).
        self.gallery.forget_deleted(search_index=True)

    def _discard_inputs(self, keys: set[str]) -> None:
        """Upload keys are content-addressed and may be shared with another user's job: keep those."""
        if not keys:
            return
        with self.db.session() as session:
            still_used = {
                key
                for other in session.scalars(select(Job.input_keys).where(Job.kind != "txt2img"))
                for key in (other or {}).values()
            }
        for key in keys - still_used:
            self.store.delete(key)

    # --- audit ---------------------------------------------------------------------------------------
    def audit_log(
        self, *, actor_id: str | None = None, action: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> AuditPage:
        rows = audit.list_events(self.db, actor_id=actor_id, action=action, before=cursor, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        items = [
            AuditView(
                id=r.id,
                created_at=r.created_at,
                action=r.action,
                actor_id=r.actor_id,
                target_id=r.target_id,
                subject=r.subject,
                ip=r.ip,
                user_agent=r.user_agent,
                details=r.details or {},
            )
            for r in rows
        ]
        return AuditPage(items=items, next_cursor=rows[-1].id if more and rows else None)


_ACTIVE_ADMINS = select(User.id).where(User.role == "admin", User.status == "active")


def _count_active_admins(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(_ACTIVE_ADMINS.subquery())) or 0)


def _user(session: Session, user_id: str) -> User:
    """Any account, for administrators (who see every user; the owner-scoped get_owned does not apply)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user with id '{user_id}'.", code="user_not_found")
    return user
