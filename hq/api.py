"""HQ's HTTP API (FastAPI). Bodies are decoded with the shared msgspec schema, so HTTP
and MQTT accept exactly the same shapes; a bad body gets 422 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response

from aislecast import __version__
from aislecast.kernel.schema import Beacon, Campaign, Store, Zone
from aislecast.kernel.signing import public_key_pem
from hq.analytics import campaign_stats
from hq.campaigns import CampaignInvalid, FlashRequest, flash, save_campaign
from hq.console import GatewayBoard, mount_console
from hq.deps import ServiceDep
from hq.ingest import Ingest
from hq.metrics import HqMetrics, HttpMetricsMiddleware, HttpStats, metrics_router
from hq.service import HqService, InvalidInput, NotFound

__all__ = ["create_app"]

T = TypeVar("T")


class EnrollRequest(msgspec.Struct):
    consents: list[str] = msgspec.field(default_factory=lambda: ["offers"])


def _json(obj: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")


async def _body(request: Request, cls: type[T]) -> T:
    raw = await request.body()
    try:
        return msgspec.json.decode(raw, type=cls)
    except msgspec.ValidationError as exc:
        raise HTTPException(422, detail=f"invalid {cls.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise HTTPException(400, detail=f"body is not valid JSON: {exc}") from exc


def _api_router() -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health(service: ServiceDep) -> Response:
        link = service.link
        ok = link is not None and link.connected.is_set()
        return _json({"status": "ok" if ok else "degraded", "mqtt": ok, "version": __version__},
                     200 if ok else 503)

    @router.get("/api/keys/bundle")
    async def bundle_key(service: ServiceDep) -> Response:
        return Response(public_key_pem(service.signer.public_key), media_type="application/x-pem-file")

    @router.post("/api/stores", status_code=201)
    async def put_store(request: Request, service: ServiceDep) -> Response:
        store = await _body(request, Store)
        service.upsert_store(store)
        return _json(store, 201)

    @router.post("/api/stores/{store_id}/zones", status_code=201)
    async def put_zone(store_id: str, request: Request, service: ServiceDep) -> Response:
        zone = await _body(request, Zone)
        service.upsert_zone(store_id, zone)
        return _json(zone, 201)

    @router.post("/api/stores/{store_id}/beacons", status_code=201)
    async def put_beacon(store_id: str, request: Request, service: ServiceDep) -> Response:
        beacon = await _body(request, Beacon)
        service.upsert_beacon(store_id, beacon)
        return _json(beacon, 201)

    @router.post("/api/stores/{store_id}/publish")
    async def publish(store_id: str, service: ServiceDep) -> Response:
        b = await service.publish_bundle(store_id)
        return _json({"store": store_id, "version": b.version})

    @router.post("/api/campaigns", status_code=201)
    async def put_campaign(request: Request, service: ServiceDep) -> Response:
        c = await save_campaign(service, await _body(request, Campaign))
        return _json(c, 201)

    @router.put("/api/campaigns/{cid}")
    async def edit_campaign(cid: str, request: Request, service: ServiceDep) -> Response:
        c = await _body(request, Campaign)
        if c.id != cid:
            raise HTTPException(422, detail=[f"id: body id {c.id!r} is not {cid!r}"])
        service.get_campaign(cid)
        return _json(await save_campaign(service, c))

    @router.get("/api/campaigns/{cid}")
    async def get_campaign(cid: str, service: ServiceDep) -> Response:
        return _json(service.get_campaign(cid))

    @router.post("/api/flash", status_code=201)
    async def post_flash(request: Request, service: ServiceDep) -> Response:
        return _json(await flash(service, await _body(request, FlashRequest)), 201)

    @router.get("/api/campaigns")
    async def list_campaigns(service: ServiceDep) -> Response:
        return _json(service.campaigns())

    @router.post("/api/campaigns/{cid}/pause")
    async def pause(cid: str, service: ServiceDep) -> Response:
        return _json(await service.pause_campaign(cid))

    @router.post("/api/shoppers", status_code=201)
    async def enroll(request: Request, service: ServiceDep) -> Response:
        req = await _body(request, EnrollRequest)
        return _json(service.enroll(req.consents), 201)

    @router.post("/api/shoppers/{inbox}/opt-out")
    async def opt_out(inbox: str, service: ServiceDep) -> Response:
        await service.opt_out(inbox)
        return _json({"inbox": inbox, "opted_out": True})

    @router.get("/api/analytics/campaigns")
    async def analytics(service: ServiceDep) -> Response:
        return _json(await service.db.offload(campaign_stats))  # scans events: off the loop

    @router.get("/api/analytics/campaigns/{cid}")
    async def analytics_one(cid: str, service: ServiceDep) -> Response:
        rows = await service.db.offload(campaign_stats, cid)
        if not rows:
            raise NotFound("campaign analytics", cid)
        return _json(rows[0])

    return router


def create_app(service: HqService, ingest: Ingest, board: GatewayBoard | None = None, *,
               stats: Mapping[str, object] | None = None) -> FastAPI:
    """HQ's API on ``service`` and ``ingest`` (kept in ``app.state``, read by the routes
    through :mod:`hq.deps`); ``stats`` adds components' counters to ``/metrics``."""
    app = FastAPI(title="aislecast HQ", version=__version__)
    board = board or GatewayBoard()
    http = HttpStats()
    app.state.service, app.state.ingest, app.state.board = service, ingest, board
    app.state.metrics = HqMetrics({"service": service.stats, "ingest": ingest.stats,
                                   "console": board.stats, "http": http, **(stats or {})})
    ingest.listeners.append(board.on_events)  # the console's "last event" per gateway
    app.add_middleware(HttpMetricsMiddleware, stats=http)
    app.include_router(metrics_router())
    mount_console(app)  # /console and the JSON it polls

    @app.exception_handler(CampaignInvalid)
    async def _invalid(_: Request, exc: CampaignInvalid) -> Response:
        return _json({"detail": exc.problems, "campaign": exc.campaign}, 422)

    @app.exception_handler(InvalidInput)
    async def _invalid_input(_: Request, exc: InvalidInput) -> Response:
        return _json({"detail": exc.problems}, 422)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> Response:
        return _json({"detail": str(exc)}, 404)

    app.include_router(_api_router())
    return app
