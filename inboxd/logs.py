"""Structured JSON logs (structlog), with secrets redacted before anything is written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

SENSITIVE_KEY = re.compile(
    r"pass(word)?|secret|token|authori[sz]ation|api[_-]?key|cookie|credential|encryption_keys",
    re.IGNORECASE,
)
# API keys and password-ish assignments that slip into free text (exception messages, URLs).
SENSITIVE_TEXT = (
    (re.compile(r"inbx_[0-9a-f]{12}_[A-Za-z0-9_\-]+"), lambda m: m.group(0)[:17] + "***"),
    (
        re.compile(r"(?i)(password|passwd|pwd)(\s*[=:]\s*)\S+"),
        lambda m: m.group(1) + m.group(2) + "***",
    ),
    (
        re.compile(r"(postgres(?:ql)?(?:\+asyncpg)?://[^:/@\s]+:)[^@\s]+@"),
        lambda m: m.group(1) + "***@",
    ),
    # OAuth values in a URL's query (the callback's code and state, a token in a link), as
    # an access log or an HTTP client's log line would show them.
    (
        re.compile(
            r"(?i)([?&](?:code|state|access_token|refresh_token|id_token|client_secret|"
            r"code_verifier)=)[^&\s\"']+"
        ),
        lambda m: m.group(1) + "***",
    ),
)
REDACTED = "***"


# Substrings (lower case) without which no SENSITIVE_TEXT pattern can match: most log text
# skips the regexes.
_TEXT_MARKERS = ("inbx_", "pass", "pwd", "postgres", "code=", "state=", "token=", "secret=")


def redact_text(text: str) -> str:
    lowered = text.lower()
    if not any(marker in lowered for marker in _TEXT_MARKERS):
        return text
    for pattern, replace in SENSITIVE_TEXT:
        text = pattern.sub(replace, text)
    return text


def _redact(value: Any, key: str | None = None) -> Any:
    if key is not None and SENSITIVE_KEY.search(key) and value not in (None, "", False, True):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = _redact(event_dict[key], key if key != "event" else None)
    return event_dict


# The current level, read by ``_level_filter`` on every event: configure_logging may be called
# again (tests do) and loggers are cached on first use.
_LEVEL = [logging.INFO]
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40}


def _level_filter(
    _logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if _LEVELS.get(method, logging.CRITICAL) < _LEVEL[0]:
        raise structlog.DropEvent
    return event_dict


class _StderrLogger:
    """Writes each rendered event as one line to the current ``sys.stderr`` (looked up per
    line: tests swap it), with the name ``add_logger_name`` reports."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _named_write_logger(*args: Any) -> _StderrLogger:
    return _StderrLogger(str(args[0]) if args else "")


def _orjson(value: Any, **_kwargs: Any) -> str:
    return orjson.dumps(value, default=repr).decode()


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """inboxd's own events go straight from structlog to stderr (one JSON line each, no
    stdlib logging machinery: a line per request must be cheap); other libraries' logs go
    through stdlib logging and come out in the same shape."""
    _LEVEL[0] = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[_level_filter, *shared, renderer],
        logger_factory=_named_write_logger,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn narrates every websocket ("... [accepted]", "connection open/closed") at INFO:
    # three lines per subscriber is noise at 10,000 of them, and costs CPU at every connect.
    logging.getLogger("uvicorn.error").addFilter(_quiet_websocket_lifecycle)
    # Strawberry logs every client mistake (bad query, failed validation) as an ERROR with the
    # query text; unexpected errors are logged by inboxd's own masking, with the request id.
    logging.getLogger("strawberry.execution").setLevel(logging.CRITICAL)
    # pgserver narrates every start of the embedded database at INFO.
    logging.getLogger("pgserver").setLevel(max(root.level, logging.WARNING))


def _quiet_websocket_lifecycle(record: logging.LogRecord) -> bool:
    if record.levelno > logging.INFO:
        return True
    message = str(record.msg)
    return not (
        message in ("connection open", "connection closed")
        or '"WebSocket %s" [accepted]' in message
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
