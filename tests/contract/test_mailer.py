"""The Mailer port: the console adapter prints, the SMTP adapter speaks real SMTP; the outbox sends from a thread.

The SMTP tests run a real SMTP server (aiosmtpd) on 127.0.0.1: plain, STARTTLS with AUTH, implicit TLS,
and servers that refuse. TLS uses a certificate made here and trusted through ``SSL_CERT_FILE``, so the
adapter's certificate checks stay on.
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import logging
import re
import smtplib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from studiolo.app import create_app
from studiolo.domain.accounts.mail import ConsoleMailer, Mail, MailOutbox, SmtpMailer, build_mailer
from studiolo.errors import ServiceUnavailable
from studiolo.services import build_services
from studiolo.settings import Settings
from tests.helpers import create_user
from tests.smtp_server import Handler, body_of, free_port, smtp_server

MAIL = Mail(
    to="alice@example.com",
    kind="verification_code",
    subject="Your Studiolo verification code",
    text="Your code is 123456.\nBye.",
    secret="123456",
)


@dataclass
class Tls:
    cert: Path
    server_context: ssl.SSLContext


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A self-signed certificate for 127.0.0.1 and a server context using it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return Tls(cert_path, context)


def smtp_settings(settings_factory: Callable[..., Settings], port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mailer": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_timeout_seconds": 10,
        "mail_from": "Studiolo <noreply@example.com>",
    }
    values.update(overrides)
    return settings_factory(**values)


# --- console ------------------------------------------------------------------------------------------------
def test_console_mailer_prints_the_message_and_logs_no_code(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a laptop the console is the mailbox: the whole message is printed there. The log (which a pipeline may
    collect as JSON) only says that a message of this kind went to this address."""
    mailer = ConsoleMailer()
    with caplog.at_level(logging.DEBUG):
        mailer.send(MAIL)
    printed = capsys.readouterr().err
    assert MAIL.to in printed and MAIL.subject in printed and MAIL.text in printed
    assert mailer.sent == [MAIL]
    [record] = [r for r in caplog.records if r.name == "studiolo.mail"]
    assert MAIL.to in record.getMessage() and MAIL.kind in record.getMessage()
    assert all(MAIL.secret not in r.getMessage() for r in caplog.records)


def test_a_code_in_a_subject_is_refused() -> None:
    with pytest.raises(ValueError, match="subject"):
        Mail(to="a@example.com", kind="reset_code", subject="Your code: 828783", text="828783", secret="828783")
    assert "123456" not in repr(MAIL)  # a stray %r of a message shows no body and no code


def test_console_mailer_keeps_only_recent_messages() -> None:
    mailer = ConsoleMailer()
    for i in range(150):
        mailer.send(Mail(to=f"u{i}@example.com", kind="test", subject="s", text="t"))
    assert len(mailer.sent) == 100
    assert mailer.sent[-1].to == "u149@example.com"


def test_console_is_the_default(settings_factory: Callable[..., Settings]) -> None:
    assert isinstance(build_mailer(settings_factory()), ConsoleMailer)
    assert isinstance(build_mailer(settings_factory(mailer="smtp")), SmtpMailer)


# --- SMTP ---------------------------------------------------------------------------------------------------
def test_smtp_plain_delivers_the_message(settings_factory: Callable[..., Settings]) -> None:
    handler = Handler()
    with smtp_server(handler) as port:
        SmtpMailer(smtp_settings(settings_factory, port)).send(MAIL)
    [got] = handler.received
    assert got.rcpt_tos == ["alice@example.com"]
    assert got.mail_from == "noreply@example.com"
    assert not got.tls
    msg = got.message
    assert parseaddr(str(msg["From"])) == ("Studiolo", "noreply@example.com")
    assert str(msg["To"]) == "alice@example.com"
    assert str(msg["Subject"]) == MAIL.subject
    assert re.fullmatch(r"<.+@studiolo>", str(msg["Message-ID"]))
    assert msg.get_content_type() == "text/plain"
    assert body_of(msg) == MAIL.text


def test_smtp_sends_non_ascii_subjects_and_bodies(settings_factory: Callable[..., Settings]) -> None:
    handler = Handler()
    mail = Mail(to="zoe@example.com", kind="test", subject="Café ☕ · your code", text="Grüße, Zoë. 你好.")
    with smtp_server(handler) as port:
        SmtpMailer(smtp_settings(settings_factory, port)).send(mail)
    [got] = handler.received
    assert str(got.message["Subject"]) == mail.subject
    assert body_of(got.message) == mail.text


def test_smtp_each_message_gets_its_own_id(settings_factory: Callable[..., Settings]) -> None:
    handler = Handler()
    with smtp_server(handler) as port:
        mailer = SmtpMailer(smtp_settings(settings_factory, port))
        mailer.send(MAIL)
        mailer.send(MAIL)
    ids = {str(r.message["Message-ID"]) for r in handler.received}
    assert len(ids) == 2


def _accept(logins: list[tuple[bytes, bytes]]) -> Callable[..., AuthResult]:
    def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        # handled=False: aiosmtpd then answers "535" itself (handled=True would leave the client waiting)
        return AuthResult(success=data.login == b"studiolo" and data.password == b"s3cret-pass", handled=False)

    return authenticator


def test_smtp_starttls_with_login(
    settings_factory: Callable[..., Settings], tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.cert))
    handler = Handler()
    logins: list[tuple[bytes, bytes]] = []
    with smtp_server(
        handler,
        tls_context=tls.server_context,
        require_starttls=True,
        auth_required=True,
        authenticator=_accept(logins),
    ) as port:
        settings = smtp_settings(
            settings_factory, port, smtp_security="starttls", smtp_username="studiolo", smtp_password="s3cret-pass"
        )
        SmtpMailer(settings).send(MAIL)
    [got] = handler.received
    assert got.tls  # the message went over the upgraded connection
    assert logins == [(b"studiolo", b"s3cret-pass")]
    assert str(got.message["Subject"]) == MAIL.subject


def test_smtp_wrong_credentials_raise(
    settings_factory: Callable[..., Settings], tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.cert))
    handler = Handler()
    with smtp_server(
        handler, tls_context=tls.server_context, require_starttls=True, auth_required=True, authenticator=_accept([])
    ) as port:
        settings = smtp_settings(
            settings_factory, port, smtp_security="starttls", smtp_username="studiolo", smtp_password="wrong"
        )
        with pytest.raises(smtplib.SMTPAuthenticationError):
            SmtpMailer(settings).send(MAIL)
    assert handler.received == []


def test_smtp_starttls_refuses_an_untrusted_certificate(settings_factory: Callable[..., Settings], tls: Tls) -> None:
    handler = Handler()
    with smtp_server(handler, tls_context=tls.server_context, require_starttls=True) as port:
        settings = smtp_settings(settings_factory, port, smtp_security="starttls")
        with pytest.raises(ssl.SSLCertVerificationError):
            SmtpMailer(settings).send(MAIL)
    assert handler.received == []  # no fallback to plain text


def test_smtp_implicit_tls(
    settings_factory: Callable[..., Settings], tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.cert))
    handler = Handler()
    with smtp_server(handler, ssl_context=tls.server_context) as port:
        SmtpMailer(smtp_settings(settings_factory, port, smtp_security="tls")).send(MAIL)
    [got] = handler.received
    assert got.rcpt_tos == ["alice@example.com"]
    assert body_of(got.message) == MAIL.text


def test_smtp_without_auth_sends_no_login(settings_factory: Callable[..., Settings]) -> None:
    """No username configured: the adapter must not try AUTH (a local relay without TLS has none to offer)."""
    handler = Handler()
    logins: list[tuple[bytes, bytes]] = []
    with smtp_server(handler, authenticator=_accept(logins), auth_require_tls=True) as port:
        SmtpMailer(smtp_settings(settings_factory, port, smtp_security="none")).send(MAIL)
    assert logins == []
    assert len(handler.received) == 1


@pytest.mark.parametrize(
    ("refuse_rcpt", "refuse_data", "error"),
    [
        ("550 5.1.1 No such user here", "", smtplib.SMTPRecipientsRefused),
        ("", "554 5.7.1 Message rejected", smtplib.SMTPDataError),
        ("", "451 4.3.0 Try again later", smtplib.SMTPDataError),
    ],
)
def test_smtp_refusals_raise(
    settings_factory: Callable[..., Settings], refuse_rcpt: str, refuse_data: str, error: type[Exception]
) -> None:
    handler = Handler(refuse_rcpt=refuse_rcpt, refuse_data=refuse_data)
    with smtp_server(handler) as port, pytest.raises(error):
        SmtpMailer(smtp_settings(settings_factory, port)).send(MAIL)
    assert handler.received == []


def test_smtp_unreachable_server_raises(settings_factory: Callable[..., Settings]) -> None:
    with pytest.raises(OSError):
        SmtpMailer(smtp_settings(settings_factory, free_port(), smtp_timeout_seconds=5)).send(MAIL)


# --- the outbox ---------------------------------------------------------------------------------------------
def test_outbox_logs_a_failure_instead_of_raising_and_keeps_sending(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    handler = Handler(refuse_rcpt="550 5.1.1 No such user here")
    with smtp_server(handler) as port:
        outbox = MailOutbox(SmtpMailer(smtp_settings(settings_factory, port)))
        try:
            with caplog.at_level(logging.ERROR):
                outbox.send(MAIL)
                outbox.flush()  # no exception reaches the caller
            failures = [r for r in caplog.records if "could not send" in r.getMessage()]
            assert len(failures) == 1
            # Kind, recipient and the server's answer; never the subject or the body, so never the code.
            line = failures[0].getMessage()
            assert MAIL.to in line and MAIL.kind in line and "550" in line
            assert MAIL.secret not in line and MAIL.subject not in line
            assert all(MAIL.secret not in r.getMessage() for r in caplog.records)

            handler.refuse_rcpt = ""  # the server recovers: the outbox thread is still alive
            outbox.send(Mail(to="bob@example.com", kind="test", subject="second", text="hello"))
            outbox.flush()
        finally:
            outbox.close()
    assert [r.rcpt_tos for r in handler.received] == [["bob@example.com"]]


def test_sign_up_over_smtp_end_to_end(settings_factory: Callable[..., Settings]) -> None:
    """The real registration route, the real outbox thread, a real SMTP server: the code arrives and works."""
    handler = Handler()
    with smtp_server(handler) as port:
        svc = build_services(smtp_settings(settings_factory, port), upgrade_db=False)
        try:
            with TestClient(create_app(services=svc, start_workers=False)) as api:
                r = api.post(
                    "/api/v1/auth/register", json={"email": "alice@example.com", "password": "velvet-harbor-1937"}
                )
                assert r.status_code == 202
                svc.outbox.flush()
                [got] = handler.received
                assert got.rcpt_tos == ["alice@example.com"]
                match = re.search(r"\b(\d{6})\b", body_of(got.message))
                assert match is not None
                r = api.post(
                    "/api/v1/auth/verify",
                    json={"email": "alice@example.com", "code": match.group(1), "password": "velvet-harbor-1937"},
                )
                assert r.status_code == 200, r.text
        finally:
            svc.close()


class Recording:
    """Keeps each message handed to the real mailer it wraps (so a test knows the code even when sending fails)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.seen: list[Mail] = []

    def send(self, mail: Mail) -> None:
        self.seen.append(mail)
        self.inner.send(mail)


@pytest.mark.parametrize("refusal", ["rcpt", "unreachable"])
def test_a_reset_mail_that_cannot_be_sent_leaves_its_code_out_of_the_log(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture, refusal: str
) -> None:
    """Regression (issue 13, item 3): the failure line quoted the subject, which held the reset code, so whoever
    could read the log could take the account over."""
    handler = Handler(refuse_rcpt="550 5.1.1 No such user here" if refusal == "rcpt" else "")
    with smtp_server(handler) as port:
        settings = smtp_settings(settings_factory, port if refusal == "rcpt" else free_port(), smtp_timeout_seconds=5)
        svc = build_services(settings, upgrade_db=False)
        recording = Recording(svc.outbox.mailer)
        svc.outbox.mailer = recording
        try:
            create_user(svc, "alice@example.com", password="velvet-harbor-1937")
            with TestClient(create_app(services=svc, start_workers=False)) as api, caplog.at_level(logging.DEBUG):
                r = api.post("/api/v1/auth/password-reset", json={"email": "alice@example.com"})
                assert r.status_code == 202
                svc.outbox.flush()
        finally:
            svc.close()
    [mail] = recording.seen
    assert mail.kind == "reset_code" and mail.secret and mail.secret in mail.text
    assert mail.secret not in mail.subject
    failures = [r for r in caplog.records if "could not send" in r.getMessage()]
    assert len(failures) == 1 and "reset_code" in failures[0].getMessage(), [r.getMessage() for r in caplog.records]
    logged = "\n".join(caplog.text.splitlines() + [r.getMessage() for r in caplog.records])
    assert mail.secret not in logged


def test_a_failure_that_quotes_the_message_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    """Should a server or library ever quote the message in its error, the code is masked in the log line."""

    class Quoting:
        def send(self, mail: Mail) -> None:
            raise smtplib.SMTPDataError(554, f"rejected: {mail.text}".encode())

    outbox = MailOutbox(Quoting())
    try:
        with caplog.at_level(logging.DEBUG):
            outbox.send(MAIL)
            outbox.flush()
    finally:
        outbox.close()
    [failure] = [r for r in caplog.records if "could not send" in r.getMessage()]
    assert "554" in failure.getMessage() and "[code]" in failure.getMessage()
    assert MAIL.secret not in caplog.text


def test_the_outbox_refuses_work_past_its_limit() -> None:
    """A flood of sign-up/reset requests cannot grow the background queue without end: past the limit the request
    is refused (503 mail_queue_full, the same for every address) before it queues anything."""
    release = threading.Event()
    ran: list[int] = []
    outbox = MailOutbox(ConsoleMailer(), limit=2)
    try:
        outbox.check_room()
        outbox.run("blocker", lambda: release.wait(30) and None)
        outbox.check_room()
        outbox.run("second", lambda: ran.append(2))
        with pytest.raises(ServiceUnavailable) as refused:
            outbox.check_room()
        assert refused.value.code == "mail_queue_full"
        release.set()
        outbox.flush()
        outbox.check_room()  # room again once the work is done
        outbox.run("after", lambda: ran.append(4))
        outbox.flush()
    finally:
        release.set()
        outbox.close()
    assert ran == [2, 4]


def test_background_work_waits_its_pause_but_plain_mail_does_not() -> None:
    """Address-dependent work starts after a pause, so it does not slow the request that comes right after the one
    that queued it; a plain message (a signed-in user's notice) goes out at once; flush runs everything now."""
    mailer = ConsoleMailer(stream=io.StringIO())
    ran: list[str] = []
    outbox = MailOutbox(mailer, pause=lambda: 3600.0)
    try:
        outbox.run("slow", lambda: ran.append("work") and None)
        outbox.send(MAIL)
        deadline = dt.datetime.now() + dt.timedelta(seconds=30)
        while not mailer.sent and dt.datetime.now() < deadline:
            threading.Event().wait(0.01)
        assert mailer.sent == [MAIL] and ran == []  # queued later, delivered first: the work is still waiting
        outbox.flush()
        assert ran == ["work"]
    finally:
        outbox.close()
