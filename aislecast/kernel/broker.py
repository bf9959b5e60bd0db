"""A private Mosquitto broker: config generation and a supervised foreground process.

The same generator serves tests, the demo and production (docs/architecture.md#broker). The process is
an async context manager; leaving it sends SIGTERM (Mosquitto then saves its session
database) and waits, killing only if the broker does not stop in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import ipaddress
import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from aislecast.kernel.const import BROKER_MAX_QUEUED_MESSAGES, BROKER_READY_TIMEOUT_S
from aislecast.kernel.errors import BrokerError, ConfigError
from aislecast.kernel.privatefile import write_private

__all__ = [
    "MAX_PACKET_SIZE",
    "MAX_QUEUED_BYTES",
    "AclRule",
    "BrokerConfig",
    "MosquittoProcess",
    "ServerTls",
    "free_port",
    "free_ports",
    "mosquitto_binary",
    "render_acl",
]


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ACL line: ``pattern`` rules apply to every user with ``%u`` substituted."""

    access: str  # "read", "write" or "readwrite"
    topic: str
    user: str | None = None  # None: a ``pattern`` line


# The largest legitimate packet is a store's signed bundle: ~405 B per opted-in shopper
# (measured: 408 kB for 1,000 shoppers, 2.9 kB with none), so 8 MiB carries ~20,000
# shoppers' token tables; offers, feedback and reports are well under 2 kB. Mosquitto
# 2.0.11 has one global limit, advertised in CONNACK and enforced with DISCONNECT 0x95
# (tests/test_broker_tls.py: a 10 MiB publish is refused, an offer passes). Not
# message_size_limit: its PUBACK 0x95 makes paho drop the connection
# (docs/architecture.md#mosquitto-credentials-tls-and-limits).
MAX_PACKET_SIZE: Final = 8 * 1024 * 1024
# Per client, beyond what is in flight: what an offline persistent session may pile up.
# Two full-size bundles (older bundles are worthless anyway: the latest is retained and
# re-sent on subscribe), ~40,000 offers of ~400 B for a phone (offers expire within
# minutes), or about a minute of a 200 offers/s store's events for an HQ restarting
# (gateways keep every event in their outbox until HQ's end-to-end ack, and resend).
# It bounds what one phone can queue for an offline gateway (100 MiB unbounded before).
MAX_QUEUED_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The broker's TLS identity (made by ``hq.pki``): CA, certificate, key, and the CRL
    of revoked client certificates that the gateways' listener checks (re-read on SIGHUP)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    crlfile: Path | None = None


@dataclass(slots=True)
class BrokerConfig:
    """Everything that goes into ``mosquitto.conf`` for one private broker.

    Plain listeners (``port``, ``websockets_port``) bind to ``host``, which must be a
    loopback address. With ``tls`` set, ``gateway_tls_port`` is mutual TLS (the client
    certificate's CN is the username and client id), ``phone_tls_port`` is TLS with
    username/password and ``wss_port`` is secure WebSockets, all on ``tls_host``.
    Credentials come either from ``passwords`` (plain text, hashed by ``mosquitto_passwd``;
    tests) or from ``password_file``/``acl_file`` written by ``hq.broker_auth`` (HQ's
    registry, reloaded with SIGHUP). Anonymous access is off as soon as any credential
    source or TLS listener is configured, unless ``allow_anonymous`` says otherwise, and
    then every listener forces the client id to the username (no session takeover).
    """

    directory: Path
    port: int
    host: str = "127.0.0.1"
    websockets_port: int | None = None
    passwords: dict[str, str] = field(default_factory=dict)
    acl: list[AclRule] = field(default_factory=list)
    max_queued_messages: int = BROKER_MAX_QUEUED_MESSAGES
    persistence: bool = True
    tls: ServerTls | None = None
    tls_host: str = "127.0.0.1"
    gateway_tls_port: int | None = None
    phone_tls_port: int | None = None
    wss_port: int | None = None
    password_file: Path | None = None
    acl_file: Path | None = None
    allow_anonymous: bool | None = None
    max_packet_size: int = MAX_PACKET_SIZE
    max_queued_bytes: int = MAX_QUEUED_BYTES

    @property
    def authenticated(self) -> bool:
        """True when clients must present a credential (no anonymous access)."""
        if self.allow_anonymous is not None:
            return not self.allow_anonymous
        return bool(self.passwords or self.password_file or self._tls_ports())

    def _tls_ports(self) -> list[int]:
        return [p for p in (self.gateway_tls_port, self.phone_tls_port, self.wss_port) if p is not None]

    def _check(self) -> None:
        if not ipaddress.ip_address(self.host).is_loopback:
            raise ConfigError("broker.host", f"plain listeners must stay on loopback, not {self.host}",
                              hint="use 127.0.0.1 and give remote clients a TLS listener")
        if self._tls_ports() and self.tls is None:
            raise ConfigError("broker.tls", "TLS listeners need the broker's certificate files",
                              hint="set tls=ServerTls(cafile, certfile, keyfile) (hq.pki makes them)")
        if self.passwords and self.password_file is not None:
            raise ConfigError("broker.password_file", "give passwords or password_file, not both",
                              hint="HQ's registry writes password_file; passwords is for tests")
        if self.acl and self.acl_file is not None:
            raise ConfigError("broker.acl_file", "give acl or acl_file, not both",
                              hint="HQ's registry writes acl_file; acl is for tests")
        if self.max_packet_size < 1024:
            raise ConfigError("broker.max_packet_size", f"{self.max_packet_size} bytes is too small "
                              "for an offer", hint=f"the default is {MAX_PACKET_SIZE}")

    def render(self) -> str:
        """Return the config file text; writes password and ACL files alongside it."""
        self._check()
        d = self.directory
        lines = [
            "allow_anonymous " + ("false" if self.authenticated else "true"),
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_packet_size {self.max_packet_size}",
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "persistent_client_expiration 1d",
            # Nagle on broker->client sockets meets delayed ACKs: ~40 ms stalls on small
            # messages (measured in benchmarks/bench_e2e.py: p99 41 ms -> see README)
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto otherwise drops to user ``mosquitto`` and then cannot
            # read a 0700 temp dir (docs/architecture.md#mosquitto).
            lines.insert(0, "user root")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {d}/"]
        if self.passwords:
            pw = d / "passwords"
            self._write_passwords(pw)
            lines.append(f"password_file {pw}")
        elif self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl:
            acl = d / "acl"
            write_private(acl, self.render_acl())
            lines.append(f"acl_file {acl}")
        elif self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        # Mosquitto opens listeners in file order, loading certificates on the way, and
        # MosquittoProcess waits for the plain port: so it comes last, when all are open
        lines += self._tls_listeners()
        if self.websockets_port is not None:
            lines += self._listener(self.websockets_port, self.host, websockets=True)
        lines += self._listener(self.port, self.host)
        return "\n".join(lines) + "\n"

    def _listener(self, port: int, host: str, *, websockets: bool = False) -> list[str]:
        """A ``listener`` block; listener options apply to the block they follow."""
        out = [f"listener {port} {host}"]
        if websockets:
            out.append("protocol websockets")
            if ipaddress.ip_address(host).version == 4:
                # without it a websockets listener binds every address, IPv6 too
                # (docs/architecture.md#mosquitto-credentials-tls-and-limits)
                out.append("socket_domain ipv4")
        if self.authenticated:
            # set per listener: a listener without it lets one credential take over
            # another's client id and persistent session
            # (docs/architecture.md#mosquitto-credentials-tls-and-limits)
            out.append("use_username_as_clientid true")
        return out

    def _tls_listeners(self) -> list[str]:
        tls = self.tls
        if tls is None:
            return []
        files = [f"cafile {tls.cafile}", f"certfile {tls.certfile}", f"keyfile {tls.keyfile}"]
        out: list[str] = []
        if self.gateway_tls_port is not None:
            out += self._listener(self.gateway_tls_port, self.tls_host) + files + [
                "require_certificate true",
                "use_identity_as_username true",  # the certificate's CN is the username
            ]
            if tls.crlfile is not None:
                out.append(f"crlfile {tls.crlfile}")
        if self.phone_tls_port is not None:
            out += self._listener(self.phone_tls_port, self.tls_host) + files
        if self.wss_port is not None:
            # (Mosquitto cannot ask for client certificates on websockets listeners)
            out += self._listener(self.wss_port, self.tls_host, websockets=True) + files
        return out

    def render_acl(self) -> str:
        """ACL text: ``pattern`` lines first, then per-user blocks (Mosquitto requires it)."""
        return render_acl(self.acl)

    def _write_passwords(self, path: Path) -> None:
        write_private(path, "".join(f"{u}:{p}\n" for u, p in self.passwords.items()))
        binary = shutil.which("mosquitto_passwd")
        if binary is None:
            raise BrokerError("mosquitto_passwd not found", hint="apt-get install -y mosquitto")
        import subprocess  # noqa: PLC0415 - only needed with passwords

        subprocess.run([binary, "-U", str(path)], check=True, capture_output=True)  # noqa: S603


def render_acl(rules: Sequence[AclRule]) -> str:
    """Mosquitto ``acl_file`` text: ``pattern`` lines first, then per-user blocks (the
    broker ignores patterns after the first ``user`` line)."""
    out = [f"pattern {r.access} {r.topic}" for r in rules if r.user is None]
    users: dict[str, list[AclRule]] = {}
    for r in rules:
        if r.user is not None:
            users.setdefault(r.user, []).append(r)
    for user, user_rules in users.items():
        out.append(f"user {user}")
        out += [f"topic {r.access} {r.topic}" for r in user_rules]
    return "\n".join(out) + "\n"


def _die_with_parent(parent: int) -> None:
    """In the forked child: SIGTERM when the parent dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG). The broker runs in its own session so a terminal's Ctrl-C reaches
    only us, and we stop it in order; this covers the parent that never gets to.

    ``parent`` is the forking process's pid, read before the fork: a parent that died
    between fork and prctl sends no signal, and the child, already adopted by another
    process, would outlive it. ``getppid()`` after prctl tells (the prctl(2) idiom)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)  # before exec: Python's own SIGTERM handlers are still installed


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` different TCP ports that are free right now: each socket is held until all
    are bound, so the OS cannot hand a port it just gave back out again (one broker's
    listeners asked for one at a time could get the same port twice, and the broker
    would exit with "address already in use")."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(n)]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


def mosquitto_binary() -> str:
    """Path of the ``mosquitto`` binary, or a :class:`BrokerError` saying how to get it."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise BrokerError(
        "the mosquitto broker is not installed",
        hint="install it with `sudo apt-get install -y mosquitto` (Debian, Ubuntu, Raspberry Pi OS)",
    )


class MosquittoProcess:
    """Run Mosquitto in the foreground with a generated config until the context exits."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._proc: asyncio.subprocess.Process | None = None
        self._entered = False

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("MosquittoProcess is not reentrant")
        self._entered = True
        binary = mosquitto_binary()
        self.config.directory.mkdir(parents=True, exist_ok=True)
        conf = self.config.directory / "mosquitto.conf"
        conf.write_text(self.config.render())
        log = (self.config.directory / "mosquitto.log").open("ab")
        self._proc = await asyncio.create_subprocess_exec(
            binary, "-c", str(conf), stdout=log, stderr=log, start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        log.close()
        try:
            await self._wait_ready()
        except BaseException:
            # __aexit__ does not run when __aenter__ fails, and the broker has a session
            # of its own: an interrupt (Ctrl-C) during startup would leave it running
            await self._stop()
            raise
        return self

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BROKER_READY_TIMEOUT_S
        assert self._proc is not None
        while True:
            if self._proc.returncode is not None:
                log = (self.config.directory / "mosquitto.log").read_text(errors="replace")
                raise BrokerError(
                    f"mosquitto exited with code {self._proc.returncode}",
                    hint=f"port {self.port} may be in use; broker log: {log.strip()[-400:]}",
                )
            try:
                _, w = await asyncio.open_connection(self.config.host, self.port)
            except OSError:
                if loop.time() > deadline:
                    raise BrokerError(
                        f"mosquitto did not accept connections on port {self.port}",
                        hint="see mosquitto.log in the broker directory",
                    ) from None
                await asyncio.sleep(0.02)
                continue
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            return

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
