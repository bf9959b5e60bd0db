"""The marketers' web console: static pages under ``/console`` and the JSON they poll.

No build step and no CDN: ``hq/static`` holds plain HTML, CSS and JS shipped as
package data. The page polls these every two seconds, and ``GET /api/alerts``
(:mod:`hq.alerts`) for its alerts panel:

- ``GET /api/console/campaigns``: every campaign with its live funnel (impressions,
  deliveries, opens, clicks, CTR, redemptions, lift with its 95 % interval);
- ``GET /api/console/stores``: stores and their gateways, online or offline from the
  gateways' retained state topic (their MQTT will says ``offline`` when the link
  dies), with the time of the last state message and of the last event ingested.

The analytics aggregate scans the event log, so it runs off the event loop
(:meth:`hq.db.HqDb.offload`). ``POST /api/campaigns/{id}/resume`` completes the
pause button (pause itself is ``POST /api/campaigns/{id}/pause``).

``/console`` without a live session redirects to ``/console/login`` (:mod:`hq.login`);
store staff see only their stores' campaigns and gateways.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Annotated, Any

import aiomqtt
import msgspec
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from aislecast.kernel import topics
from aislecast.kernel.counters import count
from aislecast.kernel.schema import Campaign, Event, GatewayState, decode
from hq.analytics import campaign_stats
from hq.campaigns import save_campaign
from hq.db import HqDb
from hq.deps import PrincipalDep, ServiceDep, audit
from hq.login import session_of

__all__ = ["STATE_FILTER", "BoardStats", "GatewayBoard", "GatewayView", "mount_console"]

# Every HQ worker subscribes (not shared): each one serves a console.
STATE_FILTER = topics.gateway_state("+", "+")
_STATIC = files("hq") / "static"


@dataclass(slots=True)
class GatewayView:
    store: str
    gateway: str
    status: str = "unknown"  # online / offline from the retained state; unknown if none yet
    version: str = ""
    bundle_version: int = 0
    state_at: float | None = None  # when HQ last received its state message
    last_event_at: float | None = None  # ts of the newest event ingested from it
    shoppers_present: int = 0
    outbox_rows: int = 0
    problem: str | None = None  # the gateway's own health judgement (gateway.health)
    warning: str | None = None


@dataclass(slots=True)
class BoardStats:
    states: int = count("gateway state messages applied")
    cleared: int = count("gateways cleared by an empty retained state")
    bad_states: int = count("gateway state messages dropped as undecodable")


class GatewayBoard:
    """Gateways as HQ sees them, from retained state messages and ingested events."""

    def __init__(self) -> None:
        self._gws: dict[tuple[str, str], GatewayView] = {}
        self.stats = BoardStats()

    def _view(self, store: str, gateway: str) -> GatewayView:
        return self._gws.setdefault((store, gateway), GatewayView(store, gateway))

    def on_state(self, store: str, gateway: str, payload: bytes) -> None:
        if not payload:  # an empty retained message clears a decommissioned gateway
            self._gws.pop((store, gateway), None)
            self.stats.cleared += 1
            return
        try:
            st = decode(payload, GatewayState)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.stats.bad_states += 1
            return
        self.stats.states += 1
        v = self._view(store, gateway)
        v.status, v.version, v.bundle_version = st.status, st.version, st.bundle_version
        v.state_at = time.time()
        v.shoppers_present = int(st.metrics.get("shoppers_present", 0))
        v.outbox_rows = int(st.metrics.get("outbox_rows", 0))
        v.problem, v.warning = st.problem, st.warning

    def on_events(self, events: list[Event]) -> None:
        """An :class:`~hq.ingest.Ingest` listener."""
        for e in events:
            if e.gateway is not None:
                v = self._view(e.store, e.gateway)
                v.last_event_at = max(v.last_event_at or e.ts, e.ts)

    async def on_state_message(self, msg: aiomqtt.Message) -> None:
        """HQ's router hands it the messages of :data:`STATE_FILTER`."""
        m = topics.parse(msg.topic.value)
        if m is not None and m.kind is topics.Kind.GATEWAY_STATE:
            assert m.store is not None and m.gateway is not None
            payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
            self.on_state(m.store, m.gateway, bytes(payload))
        else:
            self.stats.bad_states += 1

    def gateways(self, store: str) -> list[GatewayView]:
        return sorted((v for (s, _), v in self._gws.items() if s == store), key=lambda v: v.gateway)

    def views(self) -> list[GatewayView]:
        return list(self._gws.values())

    def stores(self) -> set[str]:
        return {s for s, _ in self._gws}


def _json(obj: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")


def _campaign_rows(db: HqDb) -> list[dict[str, Any]]:
    """Runs in a worker thread (offload): campaigns joined with their live numbers."""
    stats = {s.campaign: s for s in campaign_stats(db)}
    rows = []
    for (body,) in db.query("SELECT body FROM campaigns ORDER BY id"):
        c = decode(body, Campaign)
        s = stats.get(c.id)
        row: dict[str, Any] = {"id": c.id, "name": c.name, "status": c.status,
                               "scenario": c.scenario, "stores": c.stores, "priority": c.priority}
        row |= msgspec.to_builtins(s) if s is not None else {}
        row.pop("campaign", None)
        rows.append(row)
    return rows


async def _board_of(request: Request) -> GatewayBoard:
    board = request.app.state.board
    assert isinstance(board, GatewayBoard), "create_app() sets app.state.board"
    return board


BoardDep = Annotated[GatewayBoard, Depends(_board_of)]


def mount_console(app: FastAPI) -> None:
    """Add the console's pages and JSON to ``app`` (services from ``app.state``)."""
    index = (_STATIC / "index.html").read_text(encoding="utf-8")
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/console")

    @router.get("/console", include_in_schema=False)
    async def console(request: Request) -> Response:
        if session_of(request) is None:
            return RedirectResponse("/console/login", status_code=303)
        return HTMLResponse(index)

    @router.get("/api/console/campaigns")
    async def campaigns(service: ServiceDep, p: PrincipalDep) -> Response:
        rows = await service.db.offload(_campaign_rows)
        if p.stores is not None:  # store staff: their stores' campaigns only
            rows = [r for r in rows if any(s in p.stores for s in r["stores"])]
        return _json({"now": time.time(), "campaigns": rows})

    @router.get("/api/console/stores")
    async def stores(service: ServiceDep, board: BoardDep, p: PrincipalDep) -> Response:
        ids = sorted(s for s in set(service.store_ids()) | board.stores() if p.sees(s))
        out = []
        for sid in ids:
            row = service.db.one("SELECT name, tz FROM stores WHERE id = ?", (sid,))
            out.append({"id": sid, "name": row[0] if row else sid, "tz": row[1] if row else "",
                        "gateways": [msgspec.to_builtins(g) for g in board.gateways(sid)],
                        "registered": row is not None})  # else: only a gateway reported it
        return _json({"now": time.time(), "stores": out})

    @router.post("/api/campaigns/{cid}/resume")
    async def resume(cid: str, request: Request, service: ServiceDep) -> Response:
        before = service.get_campaign(cid)
        c = await save_campaign(service, msgspec.structs.replace(before, status="live"))
        audit(request, "campaign.resume", f"campaign:{cid}", before=before, after=c)
        return _json(c)

    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=str(_STATIC)), name="console-static")
