"""Broker credentials from HQ's registry: Mosquitto password and ACL files, live reloads.

HQ's credential registry is the one source of truth. From it HQ renders Mosquitto's
``password_file`` (``user:$7$ITER$salt$hash``, PBKDF2-SHA512, the format
``mosquitto_passwd`` writes) and an ``acl_file`` whose ``pattern`` lines come from the
topic contract (:func:`aislecast.kernel.acl.acl_rules`), writes both atomically and
0600, and sends the broker SIGHUP. Measured on Mosquitto 2.0.11: 10,000 users reload in
~26 ms, and users removed or whose password changed are disconnected within ~0.1 s
while the others stay connected (docs/architecture.md#mosquitto-credentials-tls-and-limits;
``aislecast bench creds``). Not the
dynamic security plugin: it rewrites its whole JSON file in place on every change with
the broker frozen meanwhile, a crash mid-save locks everyone out, and its ACLs have no
``%u`` substitution.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import signal
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from aislecast.kernel.broker import AclRule, render_acl
from aislecast.kernel.errors import AislecastError
from aislecast.kernel.privatefile import write_private

__all__ = [
    "PASSWORD_ITERATIONS",
    "BrokerAuthFiles",
    "CredentialError",
    "check_username",
    "hash_password",
    "new_password",
    "parse_password_lines",
    "reload_broker",
    "try_login",
    "verify_password",
    "wait_for_login",
]

# PBKDF2 iterations: Mosquitto's own default (mosquitto_passwd, dynsec). Few on purpose:
# the broker runs the KDF on every login and HQ on every credential it issues. That is
# safe only because HQ's passwords are random with 192 bits of entropy (new_password):
# guessing one from a stolen password file costs ~2^191 hashes whatever the count. A
# human-chosen password would need a memory-hard KDF, which Mosquitto cannot check.
PASSWORD_ITERATIONS: Final = 101
_SALT_BYTES: Final = 12  # what mosquitto_passwd uses (16 base64 characters)
_HASH_BYTES: Final = 64  # SHA-512 output
_TOKEN_BYTES: Final = 24  # secrets.token_urlsafe(24): 192 bits, 32 characters

# Usernames end up inside ACL topics (%u): no MQTT wildcards or level separators, no ':'
# (the password file's separator), no whitespace; inbox pseudonyms (16 hex digits),
# gateways (gw.store.gateway) and HQ workers (hq.name) all fit.
_USERNAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ENCODED: Final = re.compile(r"\$7\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")


class CredentialError(AislecastError):
    """A username or stored password hash cannot be used: ``field`` says which."""

    def __init__(self, field: str, value: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field} {value!r}: {message}", hint=hint)
        self.field = field
        self.value = value


def check_username(username: str) -> str:
    """Return ``username`` if the broker files can hold it; else :class:`CredentialError`."""
    if not _USERNAME.fullmatch(username):
        raise CredentialError("username", username, "not a valid broker username",
                              hint="use 1-128 letters, digits, '.', '_' or '-' (no '/', '+', '#', ':')")
    return username


def new_password() -> str:
    """A random broker password with 192 bits of entropy (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, iterations: int = PASSWORD_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """Mosquitto's ``$7$`` encoding: ``$7$ITER$base64(salt)$base64(PBKDF2-SHA512)``."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash (ours or ``mosquitto_passwd``'s)."""
    m = _ENCODED.fullmatch(encoded)
    if m is None:
        raise CredentialError("hash", encoded[:12], "not a $7$ PBKDF2-SHA512 hash")
    iterations, salt, digest = int(m[1]), base64.b64decode(m[2]), base64.b64decode(m[3])
    mine = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(digest))
    return hmac.compare_digest(mine, digest)


def parse_password_lines(lines: Sequence[str]) -> dict[str, str]:
    """``user:$7$...`` lines (as HQ's registry route sends them) back to username -> hash,
    every name and hash checked: a line holding anything but a ``$7$`` hash (a plain
    password, say) is refused, never written to a broker's file."""
    users: dict[str, str] = {}
    for i, line in enumerate(lines):
        user, sep, encoded = line.rstrip("\n").partition(":")
        if not sep or not _ENCODED.fullmatch(encoded):
            raise CredentialError(f"passwords[{i}]", user[:32], "not a user:$7$ PBKDF2-SHA512 line")
        if user in users:
            raise CredentialError(f"passwords[{i}]", user, "username listed twice")
        users[check_username(user)] = encoded
    return users


@dataclass(frozen=True, slots=True)
class BrokerAuthFiles:
    """The broker's ``password_file``, ``acl_file`` and ``crlfile`` in ``directory``.

    Pass :attr:`password_path`, :attr:`acl_path` (and :attr:`crl_path` as the mutual-TLS
    listener's ``crlfile``) to
    :class:`aislecast.kernel.broker.BrokerConfig`; after each :meth:`write`, call
    :func:`reload_broker` with the broker's pid.
    """

    directory: Path

    @property
    def password_path(self) -> Path:
        return self.directory / "passwords"

    @property
    def acl_path(self) -> Path:
        return self.directory / "acl"

    @property
    def crl_path(self) -> Path:
        """The CRL of revoked gateway certificates (``hq.gateway_certs`` writes it)."""
        return self.directory / "gateways.crl"

    @staticmethod
    def render_password_lines(users: Mapping[str, str]) -> list[str]:
        """``user:hash`` lines (newline-terminated), sorted; every name and hash checked first."""
        lines = []
        for user in sorted(users):
            check_username(user)
            encoded = users[user]
            if not _ENCODED.fullmatch(encoded):
                raise CredentialError("hash", user, "not a $7$ PBKDF2-SHA512 hash",
                                      hint="store hash_password(password), never the password")
            lines.append(f"{user}:{encoded}\n")
        return lines

    def render_passwords(self, users: Mapping[str, str]) -> str:
        """The password file's text: :meth:`render_password_lines` joined."""
        return "".join(self.render_password_lines(users))

    @contextlib.contextmanager
    def render_lock(self) -> Iterator[None]:
        """Hold an exclusive lock on :attr:`directory` (``flock`` on the folder itself)
        across "read the registry, write the files": HQ and a shell command
        (``aislecast hq gateways add``) rendering at once would otherwise let the one
        with the older snapshot write last and drop the other's new login until the next
        render. Blocking: call it off the event loop."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def write(self, users: Mapping[str, str], acl_rules: Sequence[AclRule]) -> None:
        """Replace both files atomically (0600): ``users`` maps username -> ``$7$`` hash."""
        for rule in acl_rules:
            if rule.user is not None:
                check_username(rule.user)
        passwords = self.render_passwords(users)  # validate everything before writing
        self.write_rendered(passwords, render_acl(acl_rules))

    def write_rendered(self, passwords: str, acl: str) -> None:
        """Replace both files with already rendered text, atomically and 0600.

        The ACL goes first: a reload between the two writes then sees the new rules
        with the old users, never a new user without its rules (ACLs deny by default).
        """
        write_private(self.acl_path, acl)
        write_private(self.password_path, passwords)

    def read_rendered(self) -> tuple[str, str] | None:
        """``(passwords, acl)`` as they are on disk; None while either is missing."""
        try:
            return (self.password_path.read_text(encoding="utf-8"),
                    self.acl_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, UnicodeDecodeError):
            return None


def reload_broker(pid: int) -> None:
    """Ask Mosquitto to re-read its password, ACL and CRL files (SIGHUP).

    The reload happens asynchronously in the broker's loop, a few tens of ms later;
    whoever needs to know it is done polls a login (``benchmarks/bench_creds.py``).
    """
    os.kill(pid, signal.SIGHUP)


# CONNACK "Not authorized" (v5 135) and "Bad user name or password" (v5 134)
_REFUSED: Final = frozenset({134, 135})


async def try_login(host: str, port: int, username: str, password: str, *,
                    tls_context: ssl.SSLContext | None = None, timeout: float = 5.0) -> bool:
    """Connect once: True if the broker accepts ``username``, False if it refuses it.

    Any other failure (unreachable, TLS) raises :class:`aiomqtt.MqttError`. With
    ``use_username_as_clientid`` the probe takes the user's client id and so kicks that
    user's live session: probe with a user that is not connected (a new one, or a
    dedicated probe account).
    """
    client = aiomqtt.Client(host, port, username=username, password=password,
                            identifier=username, protocol=aiomqtt.ProtocolVersion.V5,
                            tls_context=tls_context, timeout=timeout,
                            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    try:
        async with client:
            return True
    except aiomqtt.MqttCodeError as exc:
        code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
        if code in _REFUSED:
            return False
        raise


async def wait_for_login(host: str, port: int, username: str, password: str, *,
                         tls_context: ssl.SSLContext | None = None, timeout: float = 5.0,
                         step: float = 0.005) -> float:
    """Poll :func:`try_login` until accepted (a reload has taken effect); return the
    seconds it took, or raise TimeoutError after ``timeout``.

    A refused login is "not yet", and so is a failed connection: a broker whose process
    is up may not have bound its listener yet (connection refused) or may drop a
    connection while it starts (reset). CI saw both. The last such error is chained to
    the TimeoutError, so a broker that never accepts (a TLS mistake, say) names why."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    last: aiomqtt.MqttError | None = None
    try:
        async with asyncio.timeout(timeout):
            while True:  # the broker signals nothing when a reload is done: only a login tells
                try:
                    if await try_login(host, port, username, password, tls_context=tls_context,
                                       timeout=timeout):
                        return loop.time() - t0
                except aiomqtt.MqttCodeError:
                    raise  # the broker answered, and not with a refusal: not worth a retry
                except aiomqtt.MqttError as exc:
                    last = exc
                await asyncio.sleep(step)
    except TimeoutError as exc:
        why = f"; last connection error: {last}" if last is not None else ""
        raise TimeoutError(f"{username} not accepted on {host}:{port} within {timeout} s{why}") \
            from (last or exc)
