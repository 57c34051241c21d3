"""Logging for ``studiolo serve`` and ``studiolo worker``: text lines for people, or JSON lines for a log
pipeline (STUDIOLO_LOG_FORMAT=json), each carrying the request or job it belongs to.

The ids come from context variables: ``RequestId`` (app.py) sets the request id for everything that runs
while a request is handled (sync handlers too: the thread pool copies the context), and the JobRunner sets
the job and worker ids while a job runs. Fields given with ``extra={...}`` come through as they are.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

from studiolo.settings import Settings

request_id_var: ContextVar[str | None] = ContextVar("studiolo_request_id", default=None)
_job_var: ContextVar[tuple[str, str] | None] = ContextVar("studiolo_job", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Attributes every LogRecord has; anything else on a record was passed with ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def bind_job(job_id: str, worker_id: str) -> Token[tuple[str, str] | None]:
    """Tag this thread's log lines with the job it runs until ``unbind_job``."""
    return _job_var.set((job_id, worker_id))


def unbind_job(token: Token[tuple[str, str] | None]) -> None:
    _job_var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id / job_id / worker_id when known,
    ``extra`` fields, and the exception text."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
        job = _job_var.get()
        if job is not None:
            line["job_id"], line["worker_id"] = job
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            line["client"], line["method"], line["path"], _, line["status"] = record.args
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _StudioloHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler ``configure_logging`` installed, so a second call replaces it instead of doubling it."""


def configure_logging(settings: Settings) -> None:
    """Send every log line of the process (uvicorn's access log and Celery's included) to stderr in
    ``settings.log_format``, at ``settings.log_level``."""
    handler = _StudioloHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StudioloHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # uvicorn runs with log_config=None (cli.serve), so its loggers only need to reach the root handler, undoing
    # whatever an earlier uvicorn configuration in this process left on them.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
        logger.disabled = False
