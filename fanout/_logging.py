"""Where ``fanout run``'s log records go: stderr, as text or as one JSON object per line.

Only the ``fanout.*`` loggers are turned on (WARNING by default, INFO with ``-v``, DEBUG with
``-vv``); botocore's and aiohttp's stay at their defaults, because their DEBUG records carry
signed headers and bodies. fanout's own records never carry a payload, a result, credentials or
a signed header: they name requests by ``id`` and ``inference_id``, and errors by their class and
message (``tests/integration/test_logs.py`` checks a verbose run for all of these).

The handler looks ``sys.stderr`` up at each record, so that while the progress bar is drawn
(rich redirects stderr then) a record is printed above the bar instead of through it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO, TypeAlias

__all__ = ["LogFormat", "configure_logging", "current_logging"]

LogFormat: TypeAlias = Literal["text", "json"]

_LEVELS: Final = (logging.WARNING, logging.INFO, logging.DEBUG)
_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
"""Attributes every record has; anything else on a record came through ``extra=``."""


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler on whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the ``extra``
    fields, and the exception (class and message, then the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(
            (name, value)
            for name, value in record.__dict__.items()
            if name not in _STANDARD and not name.startswith("_")
        )
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            document["error"] = f"{type(error).__name__}: {error}"
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def current_logging() -> tuple[int, LogFormat] | None:
    """The verbosity and format ``configure_logging`` set in this process, if it did: worker
    processes log the way their client does."""
    logger = logging.getLogger("fanout")
    for handler in logger.handlers:
        if isinstance(handler, _Stderr):
            verbosity = _LEVELS.index(logger.level) if logger.level in _LEVELS else 0
            return verbosity, "json" if isinstance(handler.formatter, JsonFormatter) else "text"
    return None


def configure_logging(verbosity: int, log_format: LogFormat = "text") -> None:
    """Send the ``fanout`` loggers' records to stderr, at WARNING, INFO (1) or DEBUG (2 or more)."""
    handler = _Stderr()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("fanout")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(_LEVELS[min(max(verbosity, 0), len(_LEVELS) - 1)])
    logger.propagate = False
