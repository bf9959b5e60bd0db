"""The rendered broker files for a broker on another host: ``GET /api/broker/registry``.

When the broker runs next to HQ, :class:`hq.broker_sync.BrokerSync` writes its password
and ACL files. When it runs elsewhere, ``aislecast broker sync`` runs next to it and
asks this route for the same two renderings of the credential registry: the password
file's ``user:$7$...`` lines (hashes only; HQ never holds a plain password) and the ACL
text, with a version that is a digest of both, sent as the ``ETag``.

A caller that already has a version sends it in ``If-None-Match`` and may add
``?wait=S`` (up to :data:`MAX_WAIT_S`): HQ holds the request until the registry
renders differently, or answers 304 when ``S`` runs out. A change made through this
HQ process wakes the waiters at once; one made elsewhere (another HQ worker, the
``aislecast hq gateways`` shell) is noticed within :data:`RECHECK_S` by a cheap
fingerprint query (row count, newest creation and revocation), so a revoke reaches a
remote broker in about a second either way. Rendering and the fingerprint run in a
worker thread on HQ's read connection (:meth:`hq.db.HqDb.offload`); concurrent callers
share one rendering.

Only the ``broker_sync`` service token (and admins) may read it (:data:`hq.authz.ROUTE_ROLES`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import APIRouter, Header, Query, Response

from aislecast.kernel.broker import render_acl
from aislecast.kernel.counters import count, gauge
from aislecast.kernel.registry_schema import RegistryRendering
from hq.broker_auth import BrokerAuthFiles
from hq.credentials import CredentialRegistry
from hq.db import HqDb
from hq.deps import json_answer

__all__ = ["MAX_WAIT_S", "RECHECK_S", "BrokerFeed", "FeedStats", "broker_feed_router"]

#: The longest a caller may hold a request open (a long poll); proxies often cut at 60 s.
MAX_WAIT_S: Final = 55.0
#: How often a waiting request looks for changes made outside this process.
RECHECK_S: Final = 1.0


@dataclass(slots=True)
class FeedStats:
    renders: int = count("renderings of the registry for remote brokers")
    served: int = count("registry renderings sent (200)")
    not_modified: int = count("registry requests answered 304 (no change)")
    waiting: int = gauge("long-poll requests held open now")


def _fingerprint(db: HqDb) -> tuple[object, ...]:
    row = db.one("SELECT COUNT(*), MAX(created_at), MAX(revoked_at), COUNT(revoked_at)"
                 " FROM broker_users")
    return tuple(row or ())


def _render(db: HqDb) -> tuple[RegistryRendering, tuple[object, ...]]:
    """The registry in ``db`` rendered, with its fingerprint (taken first: a change made
    in between shows as a new fingerprint and is rendered again)."""
    fp = _fingerprint(db)
    snap = CredentialRegistry(db).snapshot()
    passwords = BrokerAuthFiles.render_password_lines(snap.users)
    acl = render_acl(snap.rules)
    digest = hashlib.sha256("".join(passwords).encode() + b"\0" + acl.encode())
    return RegistryRendering(digest.hexdigest()[:32], passwords, acl, len(snap.users),
                             time.time()), fp


class BrokerFeed:
    """``BrokerFeed(registry)``: the current rendering, and waits for the next one."""

    def __init__(self, registry: CredentialRegistry, *, recheck_s: float = RECHECK_S) -> None:
        self.registry = registry
        self.recheck_s = recheck_s
        self.stats = FeedStats()
        self._current: RegistryRendering | None = None
        self._fingerprint: tuple[object, ...] | None = None
        self._checked = 0.0
        self._dirty = True
        self._closing = False
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        registry.listeners.append(self.request)

    def request(self) -> None:
        """The registry changed in this process: re-render at the next ask, wake waiters."""
        self._dirty = True
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        """HQ is stopping: answer every held request now (304), so none delays the exit."""
        self._closing = True
        self._changed.set()


    async def current(self) -> RegistryRendering:
        """The rendering of the registry as it is now (at most ``recheck_s`` old for
        changes made outside this process)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            stale = loop.time() - self._checked >= self.recheck_s
            if not self._dirty and self._current is not None and stale:
                fp = await self.registry.db.offload(_fingerprint)
                self._dirty = fp != self._fingerprint
                self._checked = loop.time()
            if self._current is not None and not self._dirty:
                return self._current
            self._dirty = False
            got, self._fingerprint = await self.registry.db.offload(_render)
            self._current, self._checked = got, loop.time()
            self.stats.renders += 1
            return got

    async def wait_past(self, version: str | None, wait_s: float) -> RegistryRendering | None:
        """A rendering whose version is not ``version``, waiting up to ``wait_s`` for one;
        None when the registry still renders as ``version`` at the end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        self.stats.waiting += 1
        try:
            while True:
                changed = self._changed  # taken before rendering: a change after wakes us
                cur = await self.current()
                left = deadline - loop.time()
                if cur.version != version:
                    return cur
                if left <= 0 or self._closing:
                    return None
                try:
                    async with asyncio.timeout(min(left, self.recheck_s)):
                        await changed.wait()
                except TimeoutError:
                    pass
        finally:
            self.stats.waiting -= 1


def _etag(version: str) -> str:
    return f'"{version}"'


def broker_feed_router(feed: BrokerFeed) -> APIRouter:
    router = APIRouter()

    @router.get("/api/broker/registry", responses={
        200: {"description": "the broker's password-file lines and ACL text; ETag is the version"},
        304: {"description": "unchanged since If-None-Match (after ?wait=S seconds at most)"}})
    async def registry(
            wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=(
                "seconds to hold the request until the registry changes"))] = 0.0,
            if_none_match: Annotated[str | None, Header(max_length=80)] = None) -> Response:
        have = None if if_none_match is None else if_none_match.strip().strip('"')
        got = await feed.wait_past(have, wait if have is not None else 0.0)
        if got is None:
            feed.stats.not_modified += 1
            return Response(status_code=304, headers={"ETag": _etag(have or "")})
        feed.stats.served += 1
        return json_answer(got, headers={"ETag": _etag(got.version), "Cache-Control": "no-store"})

    return router
