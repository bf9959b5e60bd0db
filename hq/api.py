"""HQ's HTTP API (FastAPI). Bodies are decoded with the shared msgspec schema, so HTTP
and MQTT accept exactly the same shapes; a bad body gets 422 naming the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final, TypeVar

import msgspec
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from aislecast import __version__
from aislecast.kernel.schema import Beacon, Campaign, Store, Zone, decode
from aislecast.kernel.signing import public_key_pem
from hq.accounts import Accounts, Principal
from hq.alerts import AlertWatch, alerts_router
from hq.analytics import campaign_stats
from hq.audit import AuditLog, audit_router
from hq.auth import AuthMiddleware, BodyLimitMiddleware
from hq.authz import LIVE_MAKERS, campaigns_for, redact_coupons, visible_campaign
from hq.broker_feed import BrokerFeed, broker_feed_router
from hq.campaigns import CampaignInvalid, FlashRequest, flash, save_campaign
from hq.console import GatewayBoard, mount_console
from hq.deps import PrincipalDep, ServiceDep, audit
from hq.ingest import Ingest
from hq.login import login_router
from hq.login_limits import LoginLimiter
from hq.metrics import HqMetrics, HttpMetricsMiddleware, HttpStats, metrics_router
from hq.openapi import json_body, secured_openapi
from hq.refusals import AuthStats, Refused, parameter_refusal, refusal_response, router_refusal
from hq.service import Enrollment, HqService, InvalidInput, NotFound
from hq.shards import DEFAULT_SHARD
from hq.wallet import mount_wallet
from hq.wallet_api import WalletSettings

__all__ = ["MAX_BODY_BYTES", "create_app"]

# The largest body HQ reads. The biggest legitimate one is a campaign with its
# creatives, a few KiB; a store's beacon list is far smaller. 1 MiB leaves two orders of
# magnitude for growth and still stops a client from making HQ buffer 100 MiB.
MAX_BODY_BYTES: Final = 1 << 20

T = TypeVar("T")


class EnrollRequest(msgspec.Struct):
    consents: list[str] = msgspec.field(default_factory=lambda: ["offers"])


def _json(obj: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")


async def _body(request: Request, cls: type[T]) -> T:
    raw = await request.body()
    try:
        return decode(raw, cls)  # deep nesting too is a DecodeError (400)
    except msgspec.ValidationError as exc:
        raise HTTPException(422, detail=f"invalid {cls.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise HTTPException(400, detail=f"body is not valid JSON: {exc}") from exc


def _may_make_live(p: Principal, c: Campaign, before: Campaign | None) -> None:
    """A marketer writes drafts: a campaign goes (or stays) live only through an approver."""
    live = {"live", "scheduled"}
    if p.role not in LIVE_MAKERS and (c.status in live or (before and before.status in live)):
        raise Refused(403, "needs_approver",
                      f"status {c.status!r}: a {p.role} saves campaigns as draft or paused and "
                      "an approver makes them live; save it with \"status\": \"draft\"")


def _existing(service: HqService, cid: str) -> Campaign | None:
    try:
        return service.get_campaign(cid)
    except NotFound:
        return None


def _visible(p: Principal, c: Campaign) -> Campaign:
    if not visible_campaign(p, c):
        raise NotFound("campaign", c.id)  # the same answer as for no such campaign
    return redact_coupons(p, c)


def _api_router() -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health(request: Request, service: ServiceDep) -> Response:
        shards = service.link
        down = [DEFAULT_SHARD] if shards is None else shards.down()
        ok = not down
        # "mqtt": the default broker ([broker]); any broker down makes HQ degraded (503)
        body: dict[str, object] = {"status": "ok" if ok else "degraded",
                                   "mqtt": DEFAULT_SHARD not in down, "version": __version__}
        if shards is not None and len(shards.links) > 1:  # which broker, and whose stores
            body["shards_down"] = [{"shard": name, "stores": shards.stores_of(name)}
                                   for name in down]
        role = getattr(request.app.state, "role", None)  # set by hq.server: leader/follower
        if callable(role):
            body["role"] = role()
        return _json(body, 200 if ok else 503)

    @router.get("/api/me")
    async def me(p: PrincipalDep) -> Response:
        stores = None if p.stores is None else sorted(p.stores)
        return _json({"actor": p.actor, "role": p.role, "stores": stores, "via": p.via})

    @router.get("/api/keys/bundle")
    async def bundle_key(service: ServiceDep) -> Response:
        return Response(public_key_pem(service.signer.public_key), media_type="application/x-pem-file")

    @router.post("/api/stores", status_code=201, openapi_extra=json_body(Store))
    async def put_store(request: Request, service: ServiceDep) -> Response:
        store = await _body(request, Store)
        before = service.get_store(store.id) if store.id in service.store_ids() else None
        service.upsert_store(store)
        audit(request, "store.upsert", f"store:{store.id}", before=before, after=store)
        return _json(store, 201)

    @router.post("/api/stores/{store_id}/zones", status_code=201, openapi_extra=json_body(Zone))
    async def put_zone(store_id: str, request: Request, service: ServiceDep) -> Response:
        zone = await _body(request, Zone)
        before = next((z for z in service.zones(store_id) if z.id == zone.id), None)
        service.upsert_zone(store_id, zone)
        audit(request, "zone.upsert", f"zone:{store_id}/{zone.id}", before=before, after=zone)
        return _json(zone, 201)

    @router.post("/api/stores/{store_id}/beacons", status_code=201, openapi_extra=json_body(Beacon))
    async def put_beacon(store_id: str, request: Request, service: ServiceDep) -> Response:
        beacon = await _body(request, Beacon)
        before = next((b for b in service.beacons(store_id) if b.id == beacon.id), None)
        service.upsert_beacon(store_id, beacon)
        audit(request, "beacon.upsert", f"beacon:{store_id}/{beacon.id}", before=before,
              after=beacon)
        return _json(beacon, 201)

    @router.post("/api/stores/{store_id}/publish")
    async def publish(store_id: str, request: Request, service: ServiceDep) -> Response:
        b = await service.publish_bundle(store_id)
        audit(request, "bundle.publish", f"store:{store_id}", after={"version": b.version})
        return _json({"store": store_id, "version": b.version})

    return router


def _campaign_router() -> APIRouter:
    """Campaigns, flashes and their analytics."""
    router = APIRouter()

    @router.post("/api/campaigns", status_code=201, openapi_extra=json_body(Campaign))
    async def put_campaign(request: Request, service: ServiceDep, p: PrincipalDep) -> Response:
        c = await _body(request, Campaign)
        before = _existing(service, c.id)
        _may_make_live(p, c, before)
        c = await save_campaign(service, c)
        audit(request, "campaign.save", f"campaign:{c.id}", before=before, after=c)
        return _json(c, 201)

    @router.put("/api/campaigns/{cid}", openapi_extra=json_body(Campaign))
    async def edit_campaign(cid: str, request: Request, service: ServiceDep,
                            p: PrincipalDep) -> Response:
        c = await _body(request, Campaign)
        if c.id != cid:
            raise HTTPException(422, detail=[f"id: body id {c.id!r} is not {cid!r}"])
        before = _visible(p, service.get_campaign(cid))
        _may_make_live(p, c, before)
        c = await save_campaign(service, c)
        audit(request, "campaign.update", f"campaign:{cid}", before=before, after=c)
        return _json(c)

    @router.get("/api/campaigns/{cid}")
    async def get_campaign(cid: str, service: ServiceDep, p: PrincipalDep) -> Response:
        return _json(_visible(p, service.get_campaign(cid)))

    @router.post("/api/flash", status_code=201, openapi_extra=json_body(FlashRequest))
    async def post_flash(request: Request, service: ServiceDep) -> Response:
        c = await flash(service, await _body(request, FlashRequest))
        audit(request, "campaign.flash", f"campaign:{c.id}", after=c)
        return _json(c, 201)

    @router.get("/api/campaigns")
    async def list_campaigns(service: ServiceDep, p: PrincipalDep) -> Response:
        return _json(campaigns_for(p, service.campaigns()))

    @router.post("/api/campaigns/{cid}/pause")
    async def pause(cid: str, request: Request, service: ServiceDep) -> Response:
        before = service.get_campaign(cid)
        c = await service.pause_campaign(cid)
        audit(request, "campaign.pause", f"campaign:{cid}", before=before, after=c)
        return _json(c)

    return router


def _shopper_router() -> APIRouter:
    """Enrolment and opt-out (the wallet's service token), and campaign analytics."""
    router = APIRouter()

    @router.post("/api/shoppers", status_code=201, openapi_extra=json_body(EnrollRequest))
    async def enroll(request: Request, service: ServiceDep) -> Response:
        req = await _body(request, EnrollRequest)

        def enroll_audited() -> Enrollment:
            e = service.enroll(req.consents)
            # the identity key and broker password are the shopper's secrets: never audited
            audit(request, "shopper.enroll", f"shopper:{e.inbox}", after={"consents": req.consents})
            return e

        # hashing the broker password and the three writes: one hop off the loop, and
        # the audit entry is committed before the answer, as for every other change
        return _json(await asyncio.to_thread(enroll_audited), 201)

    @router.post("/api/shoppers/{inbox}/opt-out")
    async def opt_out(inbox: str, request: Request, service: ServiceDep) -> Response:
        await service.opt_out(inbox)
        audit(request, "shopper.opt_out", f"shopper:{inbox}", after={"opted_out": True})
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
               stats: Mapping[str, object] | None = None,
               max_body_bytes: int = MAX_BODY_BYTES,
               login_limiter: LoginLimiter | None = None,
               alerts: AlertWatch | None = None,
               wallet: WalletSettings | None = None) -> FastAPI:
    """HQ's API on ``service`` and ``ingest`` (kept in ``app.state``, read by the routes
    through :mod:`hq.deps`); ``stats`` adds components' counters to ``/metrics``.
    Accounts and the audit log live in ``service.db``; bodies over ``max_body_bytes``
    are refused with 413; failed console logins are limited by ``login_limiter``
    (default :class:`hq.login_limits.LoginLimiter` on the monotonic clock); ``alerts``
    serves ``GET /api/alerts`` (default: the gateways' alerts from ``board``)."""
    app = FastAPI(title="aislecast HQ", version=__version__)
    board = board or GatewayBoard()
    http, auth = HttpStats(), AuthStats()
    accounts, audit_log = Accounts(service.db), AuditLog(service.db)
    app.state.service, app.state.ingest, app.state.board = service, ingest, board
    app.state.accounts, app.state.audit, app.state.auth_stats = accounts, audit_log, auth
    feed = BrokerFeed(service.credentials)  # GET /api/broker/registry, for remote brokers
    app.state.broker_feed = feed  # HqServer closes it first on the way out (held requests)
    app.state.login_limiter = login_limiter or LoginLimiter()
    app.state.alerts = alerts = alerts or AlertWatch(board)
    app.state.metrics = HqMetrics({"service": service.stats, "ingest": ingest.stats,
                                   "console": board.stats, "http": http, "auth": auth,
                                   "broker_feed": feed.stats, "alerts": alerts.stats,
                                   **(stats or {})})
    ingest.listeners.append(board.on_events)  # the console's "last event" per gateway
    # the last added runs first: count everything, then identify, then limit the body
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, stats=auth)
    app.add_middleware(AuthMiddleware, accounts=accounts, audit=audit_log, stats=auth)
    app.add_middleware(HttpMetricsMiddleware, stats=http)
    app.openapi = secured_openapi(app)  # type: ignore[method-assign]
    app.include_router(metrics_router())
    app.include_router(login_router())  # /console/login, /console/logout
    app.include_router(audit_router(audit_log))
    mount_console(app)  # /console and the JSON it polls
    app.include_router(alerts_router())  # GET /api/alerts
    mount_wallet(app, wallet)  # /wallet: the shoppers' web wallet (hq.wallet)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return refusal_response(request, auth, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        why = router_refusal(request, exc)
        return (refusal_response(request, auth, why) if why is not None
                else await http_exception_handler(request, exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        return refusal_response(request, auth, parameter_refusal(exc))

    @app.exception_handler(CampaignInvalid)
    async def _invalid(_: Request, exc: CampaignInvalid) -> Response:
        return _json({"detail": exc.problems, "campaign": exc.campaign}, 422)

    @app.exception_handler(InvalidInput)
    async def _invalid_input(_: Request, exc: InvalidInput) -> Response:
        return _json({"detail": exc.problems}, 422)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> Response:
        return _json({"detail": str(exc)}, 404)

    for router in (_api_router(), _campaign_router(), _shopper_router(), broker_feed_router(feed)):
        app.include_router(router)
    return app
