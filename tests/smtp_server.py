"""A real SMTP server for the tests (aiosmtpd, in a thread of the test process) and what it received.

Used by the SMTP mail adapter's contract tests (tests/contract/test_mailer.py) and by the web studio's
browser test, which reads sign-up codes from the mail a ``studiolo serve`` subprocess sent here.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool


@dataclass
class Handler:
    """Collects what the server accepts; ``refuse_rcpt``/``refuse_data`` make it say no."""

    received: list[Received] = field(default_factory=list)
    refuse_rcpt: str = ""
    refuse_data: str = ""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_data:
            return self.refuse_data
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), message, session.ssl is not None)
        )
        return "250 Message accepted for delivery"

    def wait_for_code(self, to: str, *, after: int = 0, timeout: float = 30.0) -> str:
        """The 6-digit code in the first message to ``to`` among those received after the first ``after``."""
        deadline = time.monotonic() + timeout
        while True:
            for got in self.received[after:]:
                if to in got.rcpt_tos:
                    match = re.search(r"\b(\d{6})\b", body_of(got.message))
                    assert match, body_of(got.message)
                    return match.group(1)
            if time.monotonic() > deadline:
                raise AssertionError(f"no mail to {to} within {timeout} s (got {len(self.received)} messages)")
            time.sleep(0.05)


def body_of(message: EmailMessage) -> str:
    """The text body with SMTP's CRLF line ends turned back into newlines."""
    content = message.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n").strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def smtp_server(handler: Handler, **kwargs: Any) -> Iterator[int]:
    """Serve SMTP on a free port of 127.0.0.1 until the block ends; yields the port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
