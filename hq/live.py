"""Live updates for the console: ``GET /api/live``, a server-sent event stream.

Ingest (an :class:`~hq.ingest.Ingest` listener, after each stored batch), campaign
saves (:attr:`hq.service.HqService.campaign_listeners`), approval rounds (submitted,
approved, rejected: :attr:`hq.approvals.Approvals.listeners`) and gateway state changes
(:attr:`hq.board.GatewayBoard.listeners`) tell the :class:`LiveHub` which
stores and campaigns changed; the hub tells every connected console that may see one
of those stores (store staff: theirs only), and the page fetches the numbers it shows.
A notification carries ids, never shopper data::

    event: ingest
    data: {"stores": ["s1"], "campaigns": ["produce-deal"], "events": 3, "at": 1767...}

Memory is bounded whatever the clients do: at most ``max_clients`` streams (one more
is refused with 503 and ``Retry-After``), and a client's pending notifications are
*coalesced*, not queued: a slow reader holds one set of changed ids per kind, at most
``max_ids`` long (beyond that it is told ``{"all": true}``: refetch everything).
A comment line every ``heartbeat_s`` keeps proxies from closing an idle stream and
lets HQ notice a client that went away. ``retry: 2000`` tells the browser's
EventSource to reconnect two seconds after a drop. A stream ends after ``max_age_s``
(five minutes) and the browser reconnects, so a session that expired or was ended
(logout, a disabled user) stops receiving within that time: the reconnect is
authenticated afresh. Each stream starts with ``event: hello``, on which the console
refetches what it shows (it may have missed changes while disconnected). Notifications may come from worker
threads (PostgreSQL ingest): they are handed to the event loop thread-safely.

Each HQ worker's hub hears its own ingest only: with several workers behind a load
balancer a console sees the batches that its worker stored (and every campaign save
made through it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Final

import msgspec
from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from aislecast.kernel.counters import by, count, gauge
from aislecast.kernel.schema import Campaign, Event
from hq.approvals import Approval
from hq.deps import PrincipalDep
from hq.refusals import Refused

__all__ = ["LIVE_PATH", "LiveHub", "LiveStats", "live_router"]

LIVE_PATH: Final = "/api/live"
_RETRY_MS: Final = 2000


@dataclass(slots=True)
class LiveStats:
    clients: int = gauge("console live streams open now")
    connects: int = count("console live streams opened")
    refused: int = count("console live streams refused: the hub was full")
    notifications: dict[str, int] = by("kind", "notifications sent to consoles, per kind")
    coalesced: int = count("changes merged into a notification a client had not yet read")
    overflowed: int = count("pending notifications cut to 'refetch all' (a slow client)")


@dataclass(slots=True, eq=False)  # hashed by identity: a set of clients
class _Client:
    stores: frozenset[str] | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # kind -> (stores, campaigns, events) not yet sent; None: too many, refetch all
    pending: dict[str, tuple[set[str], set[str], int] | None] = field(default_factory=dict)


class LiveHub:
    def __init__(self, *, max_clients: int = 64, max_ids: int = 256,
                 heartbeat_s: float = 15.0, max_age_s: float = 300.0) -> None:
        self.max_clients, self.max_ids, self.heartbeat_s = max_clients, max_ids, heartbeat_s
        self.max_age_s = max_age_s
        self.stats = LiveStats()
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # ---- producers (any thread) ---------------------------------------------------------
    def on_events(self, events: list[Event]) -> None:
        """An ingest listener: the stores and campaigns of a freshly stored batch."""
        self._notify("ingest", {e.store for e in events},
                     {e.campaign for e in events if e.campaign}, len(events))

    def on_campaign(self, c: Campaign) -> None:
        """A campaign was saved (created, edited, paused, resumed)."""
        self._notify("campaign", set(c.stores), {c.id}, 0)

    def on_approval(self, a: Approval, c: Campaign) -> None:
        """An approval round of ``c`` changed (submitted, approved, rejected, restored)."""
        self._notify("approval", set(c.stores), {a.campaign}, 0)

    def on_gateway(self, store: str) -> None:
        """A gateway of ``store`` changed state (online, offline, a health problem)."""
        self._notify("gateway", {store}, set(), 0)

    def _notify(self, kind: str, stores: set[str], campaigns: set[str], n: int) -> None:
        loop = self._loop
        if loop is None or not self._clients or loop.is_closed():
            return  # nobody listens (and nothing is kept for later)
        loop.call_soon_threadsafe(self._fan, kind, stores, campaigns, n)

    def _fan(self, kind: str, stores: set[str], campaigns: set[str], n: int) -> None:
        for c in self._clients:
            seen = stores if c.stores is None else stores & c.stores
            if not seen:
                continue
            if kind in c.pending:
                self.stats.coalesced += 1
            old = c.pending.get(kind, (set(), set(), 0))
            if old is not None:
                ss, cs = old[0] | seen, old[1] | campaigns
                if len(ss) + len(cs) > self.max_ids:
                    self.stats.overflowed += 1
                    c.pending[kind] = None
                else:
                    c.pending[kind] = (ss, cs, old[2] + n)
            c.wake.set()

    # ---- consumers ----------------------------------------------------------------------
    def open(self, stores: frozenset[str] | None) -> _Client:
        if self._closed or len(self._clients) >= self.max_clients:
            self.stats.refused += 1
            raise Refused(503, "live_full", f"{len(self._clients)} live streams are open, "
                          "the most this HQ serves; the console retries",
                          headers=[("Retry-After", "5")])
        self._loop = asyncio.get_running_loop()
        c = _Client(stores)
        self._clients.add(c)
        self.stats.connects += 1
        self.stats.clients = len(self._clients)
        return c

    def _drop(self, c: _Client) -> None:
        self._clients.discard(c)
        self.stats.clients = len(self._clients)

    async def stream(self, c: _Client) -> AsyncIterator[bytes]:
        """The SSE bytes for ``c`` until HQ closes the hub or the client goes away."""
        try:
            yield f"retry: {_RETRY_MS}\nevent: hello\ndata: {{\"at\": {time.time():.3f}}}\n\n".encode()
            end = time.monotonic() + self.max_age_s
            while not self._closed and time.monotonic() < end:
                try:
                    await asyncio.wait_for(c.wake.wait(), self.heartbeat_s)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                c.wake.clear()
                pending, c.pending = c.pending, {}
                for kind, got in pending.items():
                    self.stats.notifications[kind] = self.stats.notifications.get(kind, 0) + 1
                    yield _frame(kind, got)
        finally:
            self._drop(c)

    def close(self) -> None:
        """HQ is stopping: end every stream now, so none holds up the exit."""
        self._closed = True
        for c in self._clients:
            c.wake.set()

    def __len__(self) -> int:
        return len(self._clients)


def _frame(kind: str, got: tuple[Iterable[str], Iterable[str], int] | None) -> bytes:
    body: dict[str, object] = {"at": round(time.time(), 3)}
    if got is None:
        body["all"] = True
    else:
        body |= {"stores": sorted(got[0]), "campaigns": sorted(got[1]), "events": got[2]}
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(body) + b"\n\n"


def live_router(hub: LiveHub) -> APIRouter:
    router = APIRouter()

    # in the OpenAPI as a text/event-stream answer (hq.api_schemas); the schema fuzzer
    # (scripts/fuzz_http.py) leaves it out: an endless stream would hold it to its timeout
    @router.get(LIVE_PATH)
    async def live(p: PrincipalDep) -> Response:
        client = hub.open(p.stores)
        return StreamingResponse(hub.stream(client), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return router
