"""Structured logging for every aislecast process: one line per record, fields rendered.

Call sites pass data as keyword fields, not inside the message::

    log = get_logger(__name__)            # -> "aislecast.hq.ingest" for hq/ingest.py
    log.info("batch stored", gateway=gw, events=n)

On a terminal that renders as ``12:00:01 info    aislecast.hq.ingest: batch stored
gateway=gw-1 events=10``; with ``--log-json`` (``setup_logging(json_lines=True)``) as one
JSON object per line with the fields as keys. structlog is only the call interface:
every record travels through the standard :mod:`logging` machinery, so the classic
``logging.getLogger(name).info("%s", x)`` style (and ``extra=``) keeps working and gets
the same rendering, and any stdlib handler (journald, pytest's caplog) sees the plain
message with the fields as record attributes.

Logger names follow one scheme, ``aislecast.<package>.<module>`` (:func:`logger_name`).
Fields whose name says they hold a credential (password, token, secret, authorization,
private or identity keys) are replaced by ``"[redacted]"`` before anything renders them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

import structlog

__all__ = ["REDACTED", "get_logger", "logger_name", "redact", "setup_logging"]

REDACTED: Final = "[redacted]"

# Field names that carry credentials: matched as a whole word of a snake/kebab name, so
# ``admin_token`` and ``mqtt_password`` are redacted while ``tokens_resolved`` is not.
_SECRET_NAME: Final = re.compile(
    r"(?:^|[_-])(password|passwd|pwd|token|secret|authorization|auth|cookie|credentials?"
    r"|api_key|private_key|identity_key|signing_key)$",
    re.IGNORECASE,
)

# Attributes every LogRecord has: anything else on a record is a field (``extra=``).
_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)

# What structlog hands to ``Logger.log`` as keyword arguments rather than fields.
_LOG_KWARGS: Final = frozenset({"event", "exc_info", "stack_info", "stacklevel"})

# Roots of our own code: their modules' loggers are named ``aislecast.<module path>``.
_OWN_ROOTS: Final = ("edge", "gateway", "hq", "firmware_config", "benchmarks")


def logger_name(module: str) -> str:
    """The logger name of a module: ``hq.ingest`` -> ``aislecast.hq.ingest``;
    ``aislecast.kernel.mqtt`` stays as it is; anything else is left alone."""
    if module == "aislecast" or module.startswith("aislecast."):
        return module
    if module.split(".", 1)[0] in _OWN_ROOTS:
        return f"aislecast.{module}"
    return module


def _is_secret(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def redact(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with every credential-named value replaced by :data:`REDACTED`."""
    return {k: REDACTED if _is_secret(k) and v is not None else v for k, v in fields.items()}


def _redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in [k for k in event_dict if _is_secret(k)]:
        if event_dict[key] is not None:
            event_dict[key] = REDACTED
    return event_dict


def _no_record_clash(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A field named like a LogRecord attribute (``name``, ``module``...) would make the
    stdlib refuse the record: it travels as ``name_`` instead."""
    for key in [k for k in event_dict if k in _RECORD_ATTRS and k not in _LOG_KWARGS]:
        event_dict[f"{key}_"] = event_dict.pop(key)
    return event_dict


def _configure_structlog() -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            _redact_processor,
            _no_record_clash,
            structlog.stdlib.render_to_log_kwargs,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(module: str) -> structlog.stdlib.BoundLogger:
    """The structured logger of ``module`` (pass ``__name__``), named by :func:`logger_name`."""
    if not structlog.is_configured():
        _configure_structlog()
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(logger_name(module))
    return logger


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return redact({k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS})


def _kv(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c.isspace() or c in "\"=" for c in text):
        return json.dumps(text)
    return text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _KvFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{t} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_kv(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info", *, json_lines: bool = False) -> None:
    """Send every record to stderr: ``key=value`` lines, or JSON lines with ``json_lines``."""
    if not structlog.is_configured():
        _configure_structlog()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_lines else _KvFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiomqtt").setLevel(logging.WARNING)
    logging.getLogger("mqtt").setLevel(logging.WARNING)
