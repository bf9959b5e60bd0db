"""Keep the broker's password and ACL files equal to HQ's credential registry.

:class:`BrokerSync` is told that the registry changed (:meth:`BrokerSync.request`, which
:class:`hq.credentials.CredentialRegistry` calls on every issue and revoke) and, after a
short debounce, renders the files once from a snapshot of the registry
(:class:`hq.broker_auth.BrokerAuthFiles`, atomic, 0600) and sends the broker SIGHUP when
HQ and the broker share a host. A burst of 1,000 enrolments therefore costs one rewrite
and one reload. Reading the registry, rendering and writing run in a worker thread,
never on the event loop. Mosquitto then kicks users that were removed (~0.1 s measured).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aislecast.kernel.counters import count
from aislecast.kernel.logs import get_logger
from hq.broker_auth import BrokerAuthFiles, reload_broker
from hq.credentials import CredentialRegistry

__all__ = ["DEBOUNCE_S", "MIN_INTERVAL_S", "BrokerSync", "SyncStats", "apply_registry", "pid_from_file"]

log = get_logger(__name__)

# Changes within this window share one rewrite and one SIGHUP. 50 ms keeps revoke ->
# kicked well under a second after a quiet spell.
DEBOUNCE_S: Final = 0.05
# ...and rewrites are at least this far apart: during a burst of enrolments (a render of
# 1,000 users takes ~40 ms here, fsyncs included) the files follow at most 4 times a second.
MIN_INTERVAL_S: Final = 0.25

_RETRY_S: Final = 1.0

PidSource = Callable[[], int | None]


@dataclass(slots=True)
class SyncStats:
    renders: int = count("broker password/ACL files rewritten from the registry")
    reloads: int = count("SIGHUPs sent to the broker")
    reload_failures: int = count("SIGHUPs that found no broker (pid file missing or stale)")
    render_failures: int = count("renders that failed to write the files (retried in a second)")
    users: int = count("active broker users in the last rendered files")


def pid_from_file(path: Path) -> PidSource:
    """A pid source reading Mosquitto's ``pid_file`` each time (None when absent)."""
    def read() -> int | None:
        try:
            return int(path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
    return read


def apply_registry(registry: CredentialRegistry, files: BrokerAuthFiles,
                   pid: PidSource | None = None) -> tuple[int, bool]:
    """Render ``files`` from ``registry`` now and SIGHUP the broker if ``pid`` finds one;
    returns (active users, reloaded). For the shell (``aislecast hq gateways``), where no
    :class:`BrokerSync` runs: blocking, call it off any event loop."""
    with files.render_lock():
        snap = registry.snapshot()
        files.write(snap.users, snap.rules)
    found = pid() if pid is not None else None
    if found is None:
        return len(snap.users), False
    try:
        reload_broker(found)
    except ProcessLookupError:
        return len(snap.users), False
    return len(snap.users), True


class BrokerSync:
    """``BrokerSync(registry, BrokerAuthFiles(dir), pid=...)``; run :meth:`run` as a task."""

    def __init__(self, registry: CredentialRegistry, files: BrokerAuthFiles, *,
                 pid: PidSource | None = None, debounce_s: float = DEBOUNCE_S,
                 min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.registry = registry
        self.files = files
        self.pid = pid
        self.debounce_s = debounce_s
        self.min_interval_s = min_interval_s
        self.stats = SyncStats()
        self.last_render_s = 0.0
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        registry.listeners.append(self.request)

    def request(self) -> None:
        """The registry changed: render and reload soon (many calls, one render)."""
        self._dirty.set()

    def _render(self) -> int:
        t0 = time.perf_counter()
        with self.files.render_lock():  # a shell command may render at the same time
            snap = self.registry.snapshot()
            self.files.write(snap.users, snap.rules)
        self.last_render_s = time.perf_counter() - t0
        return len(snap.users)

    async def flush(self) -> None:
        """Render now (off the loop) and SIGHUP the broker if there is one."""
        async with self._lock:
            self._dirty.clear()
            self.stats.users = await asyncio.to_thread(self._render)
            self.stats.renders += 1
            pid = self.pid() if self.pid is not None else None
            if self.pid is None:
                return
            if pid is None:
                self.stats.reload_failures += 1
                log.warning("broker files rewritten but no broker pid to reload")
                return
            try:
                reload_broker(pid)
            except ProcessLookupError:
                self.stats.reload_failures += 1
                log.warning("broker files rewritten but the broker is gone", pid=pid)
                return
            self.stats.reloads += 1

    async def run(self) -> None:
        """Render on every (debounced) change until cancelled."""
        loop = asyncio.get_running_loop()
        last = -self.min_interval_s
        while True:
            await self._dirty.wait()
            await asyncio.sleep(max(self.debounce_s, last + self.min_interval_s - loop.time()))
            last = loop.time()
            try:
                await self.flush()
            except Exception:  # a full disk must not end HQ: retry in a second
                self.stats.render_failures += 1
                log.exception("broker files not rewritten")
                await asyncio.sleep(_RETRY_S)
                self._dirty.set()
