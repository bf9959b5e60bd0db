"""Keep a remote broker's password and ACL files equal to HQ's registry over HTTPS.

``aislecast broker sync`` runs on the broker's host when HQ runs elsewhere.
:class:`RegistryFollower` asks HQ's ``GET /api/broker/registry`` (a ``broker_sync``
token) with the version it has in ``If-None-Match`` and ``?wait=`` (a long poll: HQ
answers as soon as the registry renders differently, 304 when nothing changed). A new
rendering is checked line by line (``user:$7$...`` hashes only, never anything else;
:func:`hq.broker_auth.parse_password_lines`), compared with the files on disk, and
only when it differs written atomically (0600, the ACL first) and followed by one
SIGHUP, so Mosquitto reloads and drops the sessions of users that were removed.

When HQ cannot be reached or refuses, the files on disk stay as they are (the broker
keeps serving the logins it has), one line is logged when the trouble starts and one
when it ends, and the follower retries after a jittered, growing delay (full jitter,
:data:`RETRY_MAX_S` at most), so a fleet of brokers does not knock on a restarting HQ
in step. Its counters go to a Prometheus text file after every attempt (the
node_exporter textfile collector reads it): alert on the age of
``aislecast_broker_sync_last_success_timestamp_seconds``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import msgspec
from prometheus_client import CollectorRegistry, write_to_textfile

from aislecast.kernel.counters import StatsCollector, count, gauge
from aislecast.kernel.errors import AislecastError
from aislecast.kernel.logs import get_logger
from aislecast.kernel.registry_schema import RegistryRendering
from hq.broker_auth import BrokerAuthFiles, CredentialError, parse_password_lines, reload_broker

__all__ = [
    "LONG_POLL_S",
    "RETRY_MAX_S",
    "RETRY_MIN_S",
    "FollowStats",
    "PidSource",
    "RegistryFollower",
    "RegistryRefused",
    "SyncFailed",
]

log = get_logger(__name__)

ROUTE: Final = "/api/broker/registry"
#: How long HQ may hold one request before answering 304 (HQ allows up to 55 s).
LONG_POLL_S: Final = 25.0
#: Retry delays after a failure: a random share of min(RETRY_MAX_S, RETRY_MIN_S * 2^n).
RETRY_MIN_S: Final = 0.5
RETRY_MAX_S: Final = 15.0
_SLACK_S: Final = 10.0  # the HTTP timeout beyond the long poll itself

PidSource = Callable[[], int | None]


class SyncFailed(AislecastError):
    """HQ could not be asked (unreachable, TLS, timeout) or answered with an error."""


class RegistryRefused(SyncFailed):
    """HQ answered, but with something this follower will not write (``field`` says what)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}",
                         hint="HQ and this host may run different versions; nothing was written")
        self.field = field


@dataclass(slots=True)
class FollowStats:
    fetches: int = count("registry requests to HQ answered")
    not_modified: int = count("answers 304: the registry did not change")
    changes: int = count("new renderings written to the broker's files")
    unchanged: int = count("renderings equal to the files already on disk (not rewritten)")
    reloads: int = count("SIGHUPs sent to the broker")
    reload_failures: int = count("renderings written with no broker pid to reload")
    failures: int = count("attempts that failed (HQ unreachable, refusing, or bad answers)")
    hq_up: float = gauge("1 while the last attempt reached HQ, else 0")
    users: float = gauge("broker users in the files")
    last_success_timestamp_seconds: float = gauge("when HQ last answered (Unix time)")
    last_change_timestamp_seconds: float = gauge("when the files last changed (Unix time)")


class RegistryFollower:
    """``RegistryFollower(hq_url, token, BrokerAuthFiles(dir), pid=...)``; :meth:`run` or
    :meth:`sync_once`. ``client`` is an ``httpx.AsyncClient`` (a test's, or one with a
    private CA); without one the follower makes its own per call of :meth:`run`."""

    def __init__(self, hq_url: str, token: str, files: BrokerAuthFiles, *,
                 pid: PidSource | None = None, metrics_file: Path | None = None,
                 long_poll_s: float = LONG_POLL_S, verify: str | bool = True,
                 rng: random.Random | None = None) -> None:
        self.hq_url = hq_url.rstrip("/")
        self.files = files
        self.pid = pid
        self.metrics_file = metrics_file
        self.long_poll_s = long_poll_s
        self.verify = verify
        self.stats = FollowStats()
        self.version: str | None = None  # what the files on disk hold, as HQ named it
        self._headers = {"Authorization": f"Bearer {token}"}
        self._rng = rng or random.Random()
        self._registry = CollectorRegistry(auto_describe=True)
        self._registry.register(StatsCollector("aislecast_broker", {"sync": self.stats}))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.hq_url, headers=self._headers, verify=self.verify,
                                 timeout=httpx.Timeout(self.long_poll_s + _SLACK_S, connect=5.0))

    async def _fetch(self, http: httpx.AsyncClient, wait_s: float) -> RegistryRendering | None:
        headers = {} if self.version is None else {"If-None-Match": f'"{self.version}"'}
        params = {"wait": f"{wait_s:g}"} if self.version is not None and wait_s > 0 else {}
        try:
            r = await http.get(ROUTE, headers=headers, params=params)
        except httpx.HTTPError as exc:
            raise SyncFailed(f"HQ at {self.hq_url} not reached: {exc.__class__.__name__}: {exc}") from None
        if r.status_code == 304:
            return None
        if r.status_code != 200:
            detail = r.text[:200].replace("\n", " ")
            hint = ("the token needs kind broker_sync: aislecast hq tokens issue --kind broker_sync"
                    if r.status_code in {401, 403} else None)
            raise SyncFailed(f"HQ answered {r.status_code}: {detail}", hint=hint)
        try:
            return msgspec.json.decode(r.content, type=RegistryRendering)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise RegistryRefused("body", f"not a registry rendering ({exc})") from None

    def _apply(self, got: RegistryRendering) -> bool:
        """Write ``got`` if it differs from the disk (blocking: call it in a thread)."""
        try:
            users = parse_password_lines(got.passwords)
        except CredentialError as exc:
            raise RegistryRefused(exc.field, str(exc)) from None
        passwords = self.files.render_passwords(users)
        if self.files.read_rendered() == (passwords, got.acl):
            return False
        self.files.write_rendered(passwords, got.acl)
        return True

    def _reload(self) -> None:
        """SIGHUP the broker (blocking: the pid source may read a file)."""
        found = self.pid() if self.pid is not None else None
        if self.pid is None:
            return
        if found is not None:
            try:
                reload_broker(found)
            except ProcessLookupError:
                found = None
        if found is None:
            self.stats.reload_failures += 1
            log.warning("broker files rewritten but no broker to reload (pid file missing or stale)")
            return
        self.stats.reloads += 1

    async def sync_once(self, http: httpx.AsyncClient, wait_s: float = 0.0) -> bool:
        """One request (a long poll of ``wait_s`` once a version is known); True when the
        files changed. Raises :class:`SyncFailed` with the files untouched."""
        got = await self._fetch(http, wait_s)
        self.stats.fetches += 1
        self.stats.hq_up = 1
        self.stats.last_success_timestamp_seconds = time.time()
        if got is None:
            self.stats.not_modified += 1
            return False
        changed = await asyncio.to_thread(self._apply, got)
        self.version = got.version
        self.stats.users = got.users
        if not changed:
            self.stats.unchanged += 1
            return False
        self.stats.changes += 1
        self.stats.last_change_timestamp_seconds = time.time()
        log.info("broker files updated from HQ", version=got.version, users=got.users)
        await asyncio.to_thread(self._reload)  # a pid file is read: off the loop
        return True

    def retry_delay(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max, min * 2^(failures-1))], never below 50 ms."""
        cap = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** min(failures - 1, 16))
        return max(0.05, self._rng.uniform(0, cap))

    def write_metrics(self) -> None:
        if self.metrics_file is not None:
            write_to_textfile(str(self.metrics_file), self._registry)

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Follow HQ until cancelled (or ``stop`` is set)."""
        failing = 0
        down_since = 0.0
        async with self.client() as http:
            while stop is None or not stop.is_set():
                try:
                    await self.sync_once(http, self.long_poll_s)
                except SyncFailed as exc:
                    failing += 1
                    self.stats.failures += 1
                    self.stats.hq_up = 0
                    if failing == 1:
                        down_since = time.monotonic()
                        log.warning("broker sync failing; keeping the files on disk", error=str(exc))
                    await asyncio.to_thread(self.write_metrics)
                    await asyncio.sleep(self.retry_delay(failing))
                    continue
                if failing:
                    log.info("broker sync recovered", failed_attempts=failing,
                             down_s=round(time.monotonic() - down_since, 1))
                    failing = 0
                await asyncio.to_thread(self.write_metrics)
