"""The marketers' web console: static pages under ``/console`` and the JSON they poll.

No build step and no CDN: ``hq/static`` holds plain HTML, CSS and JS shipped as
package data (vendored libraries in ``hq/static/vendor``, see its README). The page
fetches these, and ``GET /api/alerts`` (:mod:`hq.alerts`) for its alerts panel, when
it connects and whenever HQ pushes a change on ``GET /api/live`` (:mod:`hq.live`:
ingested batches, campaign saves, gateway state changes through :attr:`GatewayBoard.listeners`):

- ``GET /api/console/campaigns``: every campaign with its live funnel (impressions,
  deliveries, opens, clicks, CTR, redemptions, lift with its 95 % interval or "not
  enough data yet" with the counts, see :mod:`hq.lift`) and ``paused_by`` when one of
  its auto-pause rules paused it (:mod:`hq.autopause`);
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
from importlib.resources import files
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from aislecast.kernel.schema import Campaign, decode
from hq.analytics import campaign_stats
from hq.approval_api import live_save
from hq.board import GatewayBoard
from hq.db import HqDb
from hq.deps import PrincipalDep, ServiceDep, audit, json_answer, state_dep
from hq.login import session_of

__all__ = ["mount_console"]

_STATIC = files("hq") / "static"


def _campaign_rows(db: HqDb) -> list[dict[str, Any]]:
    """Runs in a worker thread (offload): campaigns joined with their live numbers."""
    stats = {s.campaign: s for s in campaign_stats(db)}
    rows = []
    for (body,) in db.query("SELECT body FROM campaigns ORDER BY id"):
        c = decode(body, Campaign)
        s = stats.get(c.id)
        row: dict[str, Any] = {"id": c.id, "name": c.name, "status": c.status,
                               "scenario": c.scenario, "stores": c.stores, "priority": c.priority,
                               "paused_by": msgspec.to_builtins(c.paused_by)}
        row |= msgspec.to_builtins(s) if s is not None else {}
        row.pop("campaign", None)
        rows.append(row)
    return rows


BoardDep = Annotated[GatewayBoard, Depends(state_dep("board", GatewayBoard))]


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
        return json_answer({"now": time.time(), "campaigns": rows})

    @router.get("/api/console/stores")
    async def stores(service: ServiceDep, board: BoardDep, p: PrincipalDep) -> Response:
        ids = sorted(s for s in set(service.store_ids()) | board.stores() if p.sees(s))
        out = []
        for sid in ids:
            row = service.db.one("SELECT name, tz FROM stores WHERE id = ?", (sid,))
            out.append({"id": sid, "name": row[0] if row else sid, "tz": row[1] if row else "",
                        "gateways": [msgspec.to_builtins(g) for g in board.gateways(sid)],
                        "registered": row is not None})  # else: only a gateway reported it
        return json_answer({"now": time.time(), "stores": out})

    @router.post("/api/campaigns/{cid}/resume")
    async def resume(cid: str, request: Request, service: ServiceDep, p: PrincipalDep) -> Response:
        before = service.get_campaign(cid)  # unchanged approved content resumes at once
        c = await live_save(request, service, p, msgspec.structs.replace(before, status="live"),
                            before)
        audit(request, "campaign.resume", f"campaign:{cid}", before=before, after=c)
        return json_answer(c)

    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=str(_STATIC)), name="console-static")
