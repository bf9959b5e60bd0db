"""A private Mosquitto broker: config generation and a supervised foreground process.

The same generator serves tests, the demo and production (docs/architecture.md#broker). The process is
an async context manager; leaving it sends SIGTERM (Mosquitto then saves its session
database) and waits, killing only if the broker does not stop in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from aislecast.kernel.const import BROKER_MAX_QUEUED_MESSAGES, BROKER_READY_TIMEOUT_S
from aislecast.kernel.errors import BrokerError

__all__ = ["AclRule", "BrokerConfig", "MosquittoProcess", "free_port", "mosquitto_binary"]


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ACL line: ``pattern`` rules apply to every user with ``%u`` substituted."""

    access: str  # "read", "write" or "readwrite"
    topic: str
    user: str | None = None  # None: a ``pattern`` line


@dataclass(slots=True)
class BrokerConfig:
    """Everything that goes into ``mosquitto.conf`` for one private broker."""

    directory: Path
    port: int
    host: str = "127.0.0.1"
    websockets_port: int | None = None
    passwords: dict[str, str] = field(default_factory=dict)
    acl: list[AclRule] = field(default_factory=list)
    max_queued_messages: int = BROKER_MAX_QUEUED_MESSAGES
    persistence: bool = True

    def render(self) -> str:
        """Return the config file text; writes password and ACL files alongside it."""
        d = self.directory
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous " + ("false" if self.passwords else "true"),
            f"max_queued_messages {self.max_queued_messages}",
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
        if self.acl:
            acl = d / "acl"
            acl.write_text(self.render_acl())
            lines.append(f"acl_file {acl}")
        if self.websockets_port is not None:
            lines += [f"listener {self.websockets_port} {self.host}", "protocol websockets"]
        return "\n".join(lines) + "\n"

    def render_acl(self) -> str:
        """ACL text: ``pattern`` lines first, then per-user blocks (Mosquitto requires it)."""
        out = [f"pattern {r.access} {r.topic}" for r in self.acl if r.user is None]
        users: dict[str, list[AclRule]] = {}
        for r in self.acl:
            if r.user is not None:
                users.setdefault(r.user, []).append(r)
        for user, rules in users.items():
            out.append(f"user {user}")
            out += [f"topic {r.access} {r.topic}" for r in rules]
        return "\n".join(out) + "\n"

    def _write_passwords(self, path: Path) -> None:
        path.write_text("".join(f"{u}:{p}\n" for u, p in self.passwords.items()))
        path.chmod(0o600)
        binary = shutil.which("mosquitto_passwd")
        if binary is None:
            raise BrokerError("mosquitto_passwd not found", hint="apt-get install -y mosquitto")
        import subprocess  # noqa: PLC0415 - only needed with passwords

        subprocess.run([binary, "-U", str(path)], check=True, capture_output=True)  # noqa: S603


def _die_with_parent() -> None:
    """In the forked child: SIGTERM when the parent dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG). The broker runs in its own session so a terminal's Ctrl-C reaches
    only us, and we stop it in order; this covers the parent that never gets to."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
            preexec_fn=_die_with_parent,
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
