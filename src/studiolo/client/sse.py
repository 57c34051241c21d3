"""A Server-Sent Events decoder that follows the WHATWG rules: ``event:``, ``data:`` (several lines join with
newlines), ``id:``, ``retry:`` (digits only), ``:`` comments, and CRLF, LF or lone CR line ends, fed in chunks that
may split a line (or a CRLF) anywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(r"[\r\n]")


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event; ``event`` is "message" when the frame named none."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed text as it arrives; each call returns the events whose frames ended in it."""

    def __init__(self) -> None:
        self._pending = ""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_event_id: str | None = None
        self.retry: int | None = None  # the latest reconnection time the server asked for, in milliseconds

    def feed(self, text: str) -> list[ServerSentEvent]:
        buf = self._pending + text
        events: list[ServerSentEvent] = []
        start = 0
        while (found := _LINE_END.search(buf, start)) is not None:
            i = found.start()
            if buf[i] == "\r" and i + 1 == len(buf):
                break  # a CR at the end of a chunk: the LF of a CRLF may open the next one
            event = self._line(buf[start:i])
            start = i + 2 if buf.startswith("\r\n", i) else i + 1
            if event is not None:
                events.append(event)
        self._pending = buf[start:]
        return events

    def close(self) -> list[ServerSentEvent]:
        """The stream ended. A line ended by a last CR still counts; an unfinished line or frame is dropped, as the
        standard says."""
        rest, self._pending = self._pending, ""
        if rest.endswith("\r"):
            event = self._line(rest[:-1])
            return [event] if event is not None else []
        return []

    def _line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if self._id is not None:
            self.last_event_id = self._id
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data), self.last_event_id, self.retry)
        self._event, self._data = "", []
        return event
