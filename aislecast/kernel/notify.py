"""systemd's service notification protocol (sd_notify(3)), spoken directly on asyncio.

Under a ``Type=notify`` unit systemd sets ``NOTIFY_SOCKET``: an ``AF_UNIX`` datagram
socket, a file path or (a leading ``@``) a name in the abstract namespace. Each
message is one datagram of ``KEY=VALUE`` lines. The ones used here:

- ``READY=1``: start-up is done (systemctl start returns, dependants start);
- ``WATCHDOG=1``: still alive; with ``WatchdogSec=`` systemd sets ``WATCHDOG_USEC``
  (and ``WATCHDOG_PID``) and kills and restarts a service silent for that long;
- ``STOPPING=1``: the stop has begun (on SIGTERM);
- ``STATUS=...``: one line shown by ``systemctl status``.

:class:`Notifier` is an async context manager that owns the socket. Without
``NOTIFY_SOCKET`` (a terminal, a test, the demo) every call is a no-op. The watchdog
is fed by :meth:`Notifier.watchdog`, a task run on the program's own event loop: a
blocked loop cannot ping, so systemd sees a hang as a hang; the task also withholds
pings while the program's own health check says it is broken, and says why in
``STATUS``. It pings at half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from aislecast.kernel.logs import get_logger

__all__ = ["HealthCheck", "Notifier", "NotifyStats"]

log = get_logger(__name__)

#: None when healthy, else the reason (shown in ``STATUS=`` while pings are withheld).
HealthCheck = Callable[[], str | None]

_PING_SHARE: Final = 0.5  # ping at this share of WATCHDOG_USEC (sd_watchdog_enabled(3))
# A datagram socket whose reader stopped reading fills up and asyncio then waits for it
# to drain; a message never holds up a stop longer than this (systemd reads at once).
_SEND_TIMEOUT_S: Final = 1.0


@dataclass(slots=True)
class NotifyStats:
    sent: int = 0  # datagrams systemd's socket accepted
    failed: int = 0  # datagrams it did not (socket gone, buffer full): never fatal
    watchdog_pings: int = 0
    watchdog_withheld: int = 0  # ticks the health check said no


def _address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):  # the abstract namespace: a leading NUL byte
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # sd_notify(3) accepts only these two (vsock addresses are not used here)


def _watchdog_s(env: Mapping[str, str]) -> float | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid is not None and pid.strip() != str(os.getpid())):
        return None  # no watchdog, or it is meant for another process (our parent)
    return usec / 1e6


class Notifier:
    """``async with Notifier() as n: await n.ready()``; a no-op outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        #: systemd's watchdog timeout in seconds, or None when there is none for us
        self.watchdog_s = _watchdog_s(env) if self.address is not None else None
        self.stats = NotifyStats()
        self._sock: socket.socket | None = None
        self._status = ""

    @property
    def enabled(self) -> bool:
        return self.address is not None

    async def __aenter__(self) -> Self:
        if self.address is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            self._sock = sock
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def send(self, **fields: str | int) -> bool:
        """One datagram of ``KEY=VALUE`` lines; False if not sent (never raises)."""
        if self._sock is None or self.address is None:
            return False
        text = "\n".join(f"{k}={v}" for k, v in fields.items())
        try:
            async with asyncio.timeout(_SEND_TIMEOUT_S):
                await asyncio.get_running_loop().sock_sendto(self._sock, text.encode(), self.address)
        except (OSError, TimeoutError) as exc:
            self.stats.failed += 1
            if self.stats.failed == 1:  # once: a missing socket stays missing
                log.warning("systemd notify failed", socket=self.address.replace("\0", "@"),
                            error=str(exc) or "the socket is not read")
            return False
        self.stats.sent += 1
        return True

    async def ready(self, status: str) -> None:
        self._status = status
        await self.send(READY=1, STATUS=status)

    async def status(self, status: str) -> None:
        """``STATUS=status``, sent only when it changed."""
        if status != self._status:
            self._status = status
            await self.send(STATUS=status)

    async def stopping(self, status: str = "stopping") -> None:
        self._status = status
        await self.send(STOPPING=1, STATUS=status)

    async def watchdog(self, check: HealthCheck, *, healthy_status: Callable[[], str]) -> None:
        """Run until cancelled: ``WATCHDOG=1`` every half timeout while ``check()`` is
        None; otherwise no ping and its reason as the status (``healthy_status()``
        again once it recovers). Returns at once when systemd set no watchdog."""
        if self.watchdog_s is None or self._sock is None:
            return
        every = self.watchdog_s * _PING_SHARE
        withheld = False
        while True:
            problem = check()
            if problem is None:
                if withheld:
                    log.info("systemd watchdog resumed")
                withheld = False
                await self.status(healthy_status())
                if await self.send(WATCHDOG=1):
                    self.stats.watchdog_pings += 1
            else:
                if not withheld:  # once per episode: the reason's numbers change every tick
                    log.warning("systemd watchdog withheld", reason=problem,
                                watchdog_s=self.watchdog_s)
                withheld = True
                self.stats.watchdog_withheld += 1
                await self.status(problem)
            await asyncio.sleep(every)
