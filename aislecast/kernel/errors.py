"""The few exception classes of aislecast; each carries data and a hint for the user."""

from __future__ import annotations

import errno
import os
import socket

__all__ = [
    "AislecastError",
    "BrokerError",
    "BundleError",
    "ConfigError",
    "ListenError",
    "PublishDenied",
    "SchemaVersionError",
]


class AislecastError(Exception):
    """Base class: ``hint`` tells the user what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"


class BrokerError(AislecastError):
    """The MQTT broker could not be started, reached or used."""


class ConfigError(AislecastError):
    """A configuration value is wrong: ``file`` (if any) and ``field`` (dotted, ``""`` for
    the file as a whole) say where, ``problem`` what is wrong and ``fix`` (= ``hint``) what
    to do about it; ``str()`` is one line: ``gw.toml: broker.port: 70000 is out of range
    (use an integer from 1 to 65535)``."""

    def __init__(self, field: str, message: str, *, hint: str | None = None,
                 file: str | None = None) -> None:
        where = ": ".join(part for part in (file, field) if part)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.file = file
        self.field = field
        self.problem = message
        self.fix = hint


class ListenError(AislecastError):
    """A server socket could not be bound: ``host``:``port`` and the OS's ``reason``."""

    def __init__(self, host: str, port: int, reason: str, *, hint: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}", hint=hint)
        self.host = host
        self.port = port
        self.reason = reason

    @classmethod
    def of(cls, host: str, port: int, exc: OSError, *, flag: str) -> ListenError:
        """From the bind's ``OSError``; ``flag`` is the setting that names the port."""
        # asyncio's and socket.create_server's strerror carry a second copy of the address
        plain = (exc.strerror if isinstance(exc, socket.gaierror) or not exc.errno
                 else os.strerror(exc.errno))
        busy = exc.errno == errno.EADDRINUSE
        hint = (f"another process listens there (`ss -ltnp sport = :{port}`): stop it, or "
                f"pick another {flag}" if busy
                else f"pick an address of this host, and a port you may bind, for {flag}")
        return cls(host, port, (plain or str(exc)).lower(), hint=hint)


class BundleError(AislecastError):
    """A bundle or delta was refused: ``reason`` is one of forged, unknown_key,
    stale, expired, malformed."""

    def __init__(self, reason: str, message: str, *, version: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.version = version


class PublishDenied(AislecastError):
    """The broker refused a publish (PUBACK reason code >= 0x80, e.g. 0x87 not authorized)."""

    def __init__(self, topic: str, reason_code: int, reason: str) -> None:
        super().__init__(
            f"broker refused publish to {topic}: {reason} (0x{reason_code:02x})",
            hint="check this client's credentials and the broker ACL",
        )
        self.topic = topic
        self.reason_code = reason_code


class SchemaVersionError(AislecastError):
    """A database written by a newer aislecast: its schema version ``found`` is above the
    ``known`` one of this code. It is refused untouched, never used half-understood."""

    def __init__(self, path: str, found: int, known: int) -> None:
        super().__init__(
            f"database {path} has schema version {found}, this aislecast knows versions up to {known}",
            hint="a newer aislecast wrote it: upgrade this installation, or point it at another "
                 "database; the file was left unchanged",
        )
        self.path = path
        self.found = found
        self.known = known
