"""HQ's HTTP API (FastAPI). Bodies are decoded with the shared msgspec schema, so HTTP
and MQTT accept exactly the same shapes; a bad body gets 422 naming the field.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from fastapi import FastAPI, HTTPException, Request, Response

from aislecast import __version__
from aislecast.kernel.schema import Beacon, Campaign, Store, Zone
from aislecast.kernel.signing import public_key_pem
from hq.analytics import campaign_stats
from hq.campaigns import CampaignInvalid, FlashRequest, flash, save_campaign
from hq.console import GatewayBoard, mount_console
from hq.ingest import Ingest
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


def create_app(service: HqService, ingest: Ingest, board: GatewayBoard | None = None) -> FastAPI:
    app = FastAPI(title="aislecast HQ", version=__version__)
    mount_console(app, service, ingest, board)  # /console and the JSON it polls

    @app.exception_handler(CampaignInvalid)
    async def _invalid(_: Request, exc: CampaignInvalid) -> Response:
        return _json({"detail": exc.problems, "campaign": exc.campaign}, 422)

    @app.exception_handler(InvalidInput)
    async def _invalid_input(_: Request, exc: InvalidInput) -> Response:
        return _json({"detail": exc.problems}, 422)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> Response:
        return _json({"detail": str(exc)}, 404)

    @app.get("/health")
    async def health() -> Response:
        link = service.link
        ok = link is not None and link.connected.is_set()
        return _json({"status": "ok" if ok else "degraded", "mqtt": ok, "version": __version__},
                     200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        s = ingest.stats
        return _json({
            "events_ingested": s.events_ingested, "duplicates": s.duplicates,
            "batches": s.batches, "feedback": s.feedback, "bad_payloads": s.bad_payloads,
            "by_kind": s.by_kind, "bundles_published": service.bundles_published,
            "deltas_published": service.deltas_published,
        })

    @app.get("/api/keys/bundle")
    async def bundle_key() -> Response:
        return Response(public_key_pem(service.signer.public_key), media_type="application/x-pem-file")

    @app.post("/api/stores", status_code=201)
    async def put_store(request: Request) -> Response:
        store = await _body(request, Store)
        service.upsert_store(store)
        return _json(store, 201)

    @app.post("/api/stores/{store_id}/zones", status_code=201)
    async def put_zone(store_id: str, request: Request) -> Response:
        zone = await _body(request, Zone)
        service.upsert_zone(store_id, zone)
        return _json(zone, 201)

    @app.post("/api/stores/{store_id}/beacons", status_code=201)
    async def put_beacon(store_id: str, request: Request) -> Response:
        beacon = await _body(request, Beacon)
        service.upsert_beacon(store_id, beacon)
        return _json(beacon, 201)

    @app.post("/api/stores/{store_id}/publish")
    async def publish(store_id: str) -> Response:
        b = await service.publish_bundle(store_id)
        return _json({"store": store_id, "version": b.version})

    @app.post("/api/campaigns", status_code=201)
    async def put_campaign(request: Request) -> Response:
        c = await save_campaign(service, await _body(request, Campaign))
        return _json(c, 201)

    @app.put("/api/campaigns/{cid}")
    async def edit_campaign(cid: str, request: Request) -> Response:
        c = await _body(request, Campaign)
        if c.id != cid:
            raise HTTPException(422, detail=[f"id: body id {c.id!r} is not {cid!r}"])
        service.get_campaign(cid)
        return _json(await save_campaign(service, c))

    @app.get("/api/campaigns/{cid}")
    async def get_campaign(cid: str) -> Response:
        return _json(service.get_campaign(cid))

    @app.post("/api/flash", status_code=201)
    async def post_flash(request: Request) -> Response:
        return _json(await flash(service, await _body(request, FlashRequest)), 201)

    @app.get("/api/campaigns")
    async def list_campaigns() -> Response:
        return _json(service.campaigns())

    @app.post("/api/campaigns/{cid}/pause")
    async def pause(cid: str) -> Response:
        return _json(await service.pause_campaign(cid))

    @app.post("/api/shoppers", status_code=201)
    async def enroll(request: Request) -> Response:
        req = await _body(request, EnrollRequest)
        return _json(service.enroll(req.consents), 201)

    @app.post("/api/shoppers/{inbox}/opt-out")
    async def opt_out(inbox: str) -> Response:
        await service.opt_out(inbox)
        return _json({"inbox": inbox, "opted_out": True})

    @app.get("/api/analytics/campaigns")
    async def analytics() -> Response:
        return _json(await service.db.offload(campaign_stats))  # scans events: off the loop

    @app.get("/api/analytics/campaigns/{cid}")
    async def analytics_one(cid: str) -> Response:
        stats = await service.db.offload(campaign_stats, cid)
        if not stats:
            raise NotFound("campaign analytics", cid)
        return _json(stats[0])

    return app
