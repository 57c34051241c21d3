"""The Mailer port, its adapters and the outbox that sends from a background thread.

Adapters: ``console`` (the default on a local install: each message is printed on the server's console, which is
how a laptop user reads their sign-up code) and ``smtp`` (any SMTP server; STARTTLS, implicit TLS or plain for a
local relay).

One-time codes travel only in a message's body: never in its subject (mail clients show subjects in
notifications, lists and server logs) and never in a log line. The console adapter prints the body on its own
stream, not through ``logging``, so a log pipeline (``STUDIOLO_LOG_FORMAT=json``) never receives a code; log lines
about mail name the message's kind and recipient only (tests/contract/test_mailer.py).
"""

from __future__ import annotations

import heapq
import logging
import secrets
import smtplib
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol, TextIO

from studiolo.errors import ServiceUnavailable
from studiolo.settings import Settings

log = logging.getLogger("studiolo.mail")

_RANDOM = secrets.SystemRandom()
# Work queued on the outbox at most (tasks and messages): past it, sign-up, resend and reset answer 503 instead of
# letting a flood of requests grow the queue (and its memory) without end.
OUTBOX_LIMIT = 1000


@dataclass(frozen=True)
class Mail:
    """One message. ``kind`` names it in logs (``verification_code``, ``reset_code``, ...); ``secret`` is the
    one-time code it carries, if any: it may appear in ``text`` only."""

    to: str
    kind: str
    subject: str
    text: str = field(repr=False)
    secret: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.secret and self.secret in self.subject:
            raise ValueError("a one-time code must not be part of an email's subject")


class Mailer(Protocol):
    def send(self, mail: Mail) -> None:
        """Deliver ``mail`` or raise; callers send from a background task, so a slow server delays no response."""
        ...


class ConsoleMailer:
    """Prints each message on the console (stderr unless given a stream): a laptop install needs no mail server to
    sign up. The message goes straight to the stream, not through ``logging``: the log (and whatever collects it)
    gets one line naming the kind and recipient, never the code."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.sent: list[Mail] = []  # kept (bounded) for `studiolo` diagnostics and tests of the console adapter

    def send(self, mail: Mail) -> None:
        stream = self.stream or sys.stderr  # looked up per message: tests and the CLI may swap sys.stderr
        rule = "-" * 72
        stream.write(f"{rule}\nEmail to {mail.to}\nSubject: {mail.subject}\n\n{mail.text}\n{rule}\n")
        stream.flush()
        log.info("printed the %s email to %s on the console (STUDIOLO_MAILER=console)", mail.kind, mail.to)
        self.sent.append(mail)
        del self.sent[:-100]


class SmtpMailer:
    def __init__(self, settings: Settings):
        self.settings = settings

    def message(self, mail: Mail) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.settings.mail_from
        msg["To"] = mail.to
        msg["Subject"] = mail.subject
        msg["Message-ID"] = make_msgid(domain="studiolo")
        msg.set_content(mail.text)
        return msg

    def send(self, mail: Mail) -> None:
        s = self.settings
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if s.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds, context=context)
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
        with smtp:
            if s.smtp_security == "starttls":
                smtp.starttls(context=context)
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password)
            smtp.send_message(self.message(mail))


def build_mailer(settings: Settings) -> Mailer:
    if settings.mailer == "smtp":
        return SmtpMailer(settings)
    if settings.env == "production":
        log.warning("STUDIOLO_MAILER=console: sign-up and reset codes are printed on this server's console")
    return ConsoleMailer()


def _failure(exc: BaseException, mail: Mail) -> str:
    """``exc`` as one line for the log, with the message's code masked should an error ever quote it."""
    text = f"{type(exc).__name__}: {exc}"
    return text.replace(mail.secret, "[code]") if mail.secret else text


class MailOutbox:
    """One background thread for mail and for the account work whose cost depends on whether an address has an
    account (sign-up, resend, reset).

    The HTTP layer queues that work only once its answer is sent, so neither a slow SMTP server nor the work itself
    shows in the answer's time (tests/integration/test_auth.py, test_enumeration_*). It then starts after a random
    pause of up to ``spread_seconds``: run at once, it would slow whatever request came next (the thread competes for
    the interpreter and the database), and a probe followed at once by a second request could still time the first
    one's address (bench figures in docs/accounts.md). Holds at most ``limit`` such tasks; ``send`` (plain mail
    from signed-in actions) goes out without a pause."""

    def __init__(
        self,
        mailer: Mailer,
        limit: int = OUTBOX_LIMIT,
        spread_seconds: float = 1.0,
        pause: Callable[[], float] | None = None,
    ):
        self.mailer = mailer
        self.limit = limit
        self.spread_seconds = spread_seconds
        # The pause before each ``run`` task: uniform in [0, spread_seconds), from the OS's random source (an attacker
        # must not predict it); a test may fix it.
        self.pause = pause or (lambda: _RANDOM.uniform(0, self.spread_seconds))
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Callable[[], None]]] = []  # a heap of (when, sequence, job)
        self._seq = 0
        self._drain_to = -1  # jobs up to this sequence number run now, whatever their time (flush, close)
        self._unfinished: set[int] = set()
        self._waiting = 0  # tasks queued by ``run`` and not finished
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="studiolo-mail", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._due:
                        when, seq, job = self._due[0]
                        wait = when - time.monotonic()
                        if wait <= 0 or seq <= self._drain_to:
                            heapq.heappop(self._due)
                            break
                        self._cond.wait(wait)
                    elif self._closed:
                        return
                    else:
                        self._cond.wait()
            try:
                job()
            finally:
                with self._cond:
                    self._unfinished.discard(seq)
                    self._cond.notify_all()

    def _queue(self, job: Callable[[], None], delay: float) -> None:
        with self._cond:
            self._seq += 1
            self._unfinished.add(self._seq)
            heapq.heappush(self._due, (time.monotonic() + delay, self._seq, job))
            self._cond.notify_all()

    def _deliver(self, mail: Mail) -> None:
        try:
            self.mailer.send(mail)
        except Exception as exc:  # noqa: BLE001 - any failure is logged, as one masked line without the traceback
            # Kind and recipient only: the subject and body are the message's business (a code may be in the body).
            log.error("could not send the %s email to %s: %s", mail.kind, mail.to, _failure(exc, mail))

    def check_room(self) -> None:
        """Raise ServiceUnavailable (503 mail_queue_full) when ``limit`` tasks are waiting: called while accepting a
        request that will ``run`` one, since anyone may send those (unlike ``send``)."""
        with self._cond:
            full = self._waiting >= self.limit
        if full:
            raise ServiceUnavailable(
                "Too many messages are waiting to be sent; try again in a minute.", code="mail_queue_full"
            )

    def run(self, what: str, task: Callable[[], Mail | None]) -> None:
        """Run ``task`` on the outbox thread after a random pause (see the class), then send the message it returns
        (if any). Never raises: it is called after the answer was sent, when nobody could be told."""
        with self._cond:
            self._waiting += 1

        def job() -> None:
            try:
                mail = task()
                if mail is not None:
                    self._deliver(mail)
            except Exception:
                log.exception("%s failed in the background", what)
            finally:
                with self._cond:
                    self._waiting -= 1

        self._queue(job, self.pause())

    def send(self, mail: Mail) -> None:
        """Send ``mail`` from the outbox thread. Not bounded: only signed-in actions (a password change) send
        directly, and their notice must not be dropped."""
        self._queue(lambda: self._deliver(mail), 0.0)

    def flush(self) -> None:
        """Run everything queued so far now, without the pauses, and wait until it is done (tests, shutdown)."""
        with self._cond:
            target = self._seq
            self._drain_to = max(self._drain_to, target)
            self._cond.notify_all()
            while any(seq <= target for seq in self._unfinished):
                self._cond.wait()

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
