"""The Mailer port and its adapters: ``console`` (the default on a local install: messages, codes included,
go to the server log) and ``smtp`` (any SMTP server; STARTTLS, implicit TLS or plain for a local relay)."""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol

from studiolo.settings import Settings

log = logging.getLogger("studiolo.mail")


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str


class Mailer(Protocol):
    def send(self, mail: Mail) -> None:
        """Deliver ``mail`` or raise; callers send from a background task, so a slow server delays no response."""
        ...


class ConsoleMailer:
    """Writes each message to the log: a laptop install needs no mail server to sign up."""

    def __init__(self) -> None:
        self.sent: list[Mail] = []  # kept (bounded) for `studiolo` diagnostics and tests of the console adapter

    def send(self, mail: Mail) -> None:
        log.warning("email to %s: %s\n%s", mail.to, mail.subject, mail.text)
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
    return SmtpMailer(settings) if settings.mailer == "smtp" else ConsoleMailer()
