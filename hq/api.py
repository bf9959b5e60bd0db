"""HQ's HTTP API (FastAPI). Bodies are decoded with the shared msgspec schema, so HTTP
and MQTT take the same shapes; a bad body gets 422 naming the field, and over HTTP so
does a field the type does not have (:mod:`hq.strict`; MQTT stays tolerant).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from aislecast import __version__
from aislecast.kernel.schema import Beacon, Campaign, Store, Zone
from aislecast.kernel.signing import public_key_pem
from hq.accounts import Accounts, Principal
from hq.alerts import AlertWatch, alerts_router
from hq.analytics import campaign_stats
from hq.approval_api import approval_router, flash_route, live_save
from hq.approvals import ApprovalPolicy, Approvals
from hq.audit import AuditLog, audit_router
from hq.auth import AuthMiddleware, BodyLimitMiddleware
from hq.authz import campaigns_for, redact_coupons, visible_campaign
from hq.board import GatewayBoard
from hq.broker_feed import BrokerFeed, broker_feed_router
from hq.campaigns import CampaignInvalid, FlashRequest
from hq.console import mount_console
from hq.deps import PrincipalDep, ServiceDep, audit, json_answer
from hq.docs_page import mount_docs
from hq.feed_rules import FeedSettings
from hq.feeds import FeedWatcher
from hq.feeds_api import feeds_router
from hq.fleet_health import FleetRules, fleet_router
from hq.funnel_api import funnel_router
from hq.ingest import Ingest
from hq.leads_api import leads_router
from hq.live import LiveHub, live_router
from hq.login import login_router
from hq.login_limits import LoginLimiter
from hq.metrics import HqMetrics, HttpMetricsMiddleware, HttpStats, metrics_router
from hq.openapi import json_body, secured_openapi
from hq.passes_api import PassDesk, passes_router
from hq.refusals import AuthStats, Refused, parameter_refusal, refusal_response, router_refusal
from hq.registry_api import mount_registry
from hq.rights import source_of
from hq.rights_api import rights_router
from hq.service import HqService, InvalidInput, NotFound
from hq.shards import DEFAULT_SHARD
from hq.strict import body_of
from hq.till import TillDesk
from hq.till_routes import till_router
from hq.wallet import mount_wallet
from hq.wallet_api import WalletSettings

__all__ = ["MAX_BODY_BYTES", "create_app"]

# The largest body HQ reads. The biggest legitimate one is a campaign with its
# creatives, a few KiB; a store's beacon list is far smaller. 1 MiB leaves two orders of
# magnitude for growth and still stops a client from making HQ buffer 100 MiB.
MAX_BODY_BYTES: Final = 1 << 20


_body = body_of  # unknown fields refused by name (hq.strict); MQTT decoding stays tolerant


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
        return json_answer(body, 200 if ok else 503)

    @router.get("/api/me")
    async def me(p: PrincipalDep) -> Response:
        stores = None if p.stores is None else sorted(p.stores)
        return json_answer({"actor": p.actor, "role": p.role, "stores": stores, "via": p.via})

    @router.get("/api/keys/bundle")
    async def bundle_key(service: ServiceDep) -> Response:
        return Response(public_key_pem(service.signer.public_key), media_type="application/x-pem-file")

    @router.post("/api/stores", status_code=201, openapi_extra=json_body(Store))
    async def put_store(request: Request, service: ServiceDep) -> Response:
        store = await _body(request, Store)
        before = service.get_store(store.id) if store.id in service.store_ids() else None
        service.upsert_store(store)
        audit(request, "store.upsert", f"store:{store.id}", before=before, after=store)
        return json_answer(store, 201)

    @router.post("/api/stores/{store_id}/zones", status_code=201, openapi_extra=json_body(Zone))
    async def put_zone(store_id: str, request: Request, service: ServiceDep) -> Response:
        zone = await _body(request, Zone)
        before = next((z for z in service.zones(store_id) if z.id == zone.id), None)
        service.upsert_zone(store_id, zone)
        audit(request, "zone.upsert", f"zone:{store_id}/{zone.id}", before=before, after=zone)
        return json_answer(zone, 201)

    @router.post("/api/stores/{store_id}/beacons", status_code=201, openapi_extra=json_body(Beacon))
    async def put_beacon(store_id: str, request: Request, service: ServiceDep) -> Response:
        beacon = await _body(request, Beacon)
        before = next((b for b in service.beacons(store_id) if b.id == beacon.id), None)
        service.upsert_beacon(store_id, beacon)
        audit(request, "beacon.upsert", f"beacon:{store_id}/{beacon.id}", before=before,
              after=beacon)
        return json_answer(beacon, 201)

    @router.post("/api/stores/{store_id}/publish")
    async def publish(store_id: str, request: Request, service: ServiceDep) -> Response:
        b = await service.publish_bundle(store_id)
        audit(request, "bundle.publish", f"store:{store_id}", after={"version": b.version})
        return json_answer({"store": store_id, "version": b.version})

    return router


def _campaign_router() -> APIRouter:
    """Campaigns, flashes and their analytics."""
    router = APIRouter()

    @router.post("/api/campaigns", status_code=201, openapi_extra=json_body(Campaign))
    async def put_campaign(request: Request, service: ServiceDep, p: PrincipalDep) -> Response:
        c = await _body(request, Campaign)
        before = _existing(service, c.id)
        c = await live_save(request, service, p, c, before)  # the approval policy decides
        audit(request, "campaign.save", f"campaign:{c.id}", before=before, after=c)
        return json_answer(c, 201)

    @router.put("/api/campaigns/{cid}", openapi_extra=json_body(Campaign))
    async def edit_campaign(cid: str, request: Request, service: ServiceDep,
                            p: PrincipalDep) -> Response:
        c = await _body(request, Campaign)
        if c.id != cid:
            raise HTTPException(422, detail=[f"id: body id {c.id!r} is not {cid!r}"])
        before = _visible(p, service.get_campaign(cid))
        c = await live_save(request, service, p, c, service.get_campaign(cid))
        audit(request, "campaign.update", f"campaign:{cid}", before=before, after=c)
        return json_answer(c)

    @router.get("/api/campaigns/{cid}")
    async def get_campaign(cid: str, service: ServiceDep, p: PrincipalDep) -> Response:
        return json_answer(_visible(p, service.get_campaign(cid)))

    @router.post("/api/flash", status_code=201, openapi_extra=json_body(FlashRequest))
    async def post_flash(request: Request, service: ServiceDep, p: PrincipalDep) -> Response:
        return await flash_route(request, service, p, await _body(request, FlashRequest))

    @router.get("/api/campaigns")
    async def list_campaigns(service: ServiceDep, p: PrincipalDep) -> Response:
        return json_answer(campaigns_for(p, service.campaigns()))

    @router.post("/api/campaigns/{cid}/pause")
    async def pause(cid: str, request: Request, service: ServiceDep) -> Response:
        before = service.get_campaign(cid)
        c = await service.pause_campaign(cid)
        audit(request, "campaign.pause", f"campaign:{cid}", before=before, after=c)
        return json_answer(c)

    return router


def _shopper_router() -> APIRouter:
    """Enrolment and opt-out (the wallet's service token), and campaign analytics."""
    router = APIRouter()

    # enrolment (POST /api/shoppers, /api/enroll), consent, export, erase: hq.rights_api
    @router.post("/api/shoppers/{inbox}/opt-out")
    async def opt_out(inbox: str, request: Request, service: ServiceDep, p: PrincipalDep) -> Response:
        await service.opt_out(inbox, source=source_of(p))  # withdraws "offers" (hq.consent)
        audit(request, "shopper.opt_out", f"shopper:{inbox}", after={"opted_out": True})
        return json_answer({"inbox": inbox, "opted_out": True})

    @router.get("/api/analytics/campaigns")
    async def analytics(service: ServiceDep) -> Response:
        return json_answer(await service.db.offload(campaign_stats))  # scans events: off the loop

    @router.get("/api/analytics/campaigns/{cid}")
    async def analytics_one(cid: str, service: ServiceDep) -> Response:
        rows = await service.db.offload(campaign_stats, cid)  # a saved one's zeros before any event
        if not rows:
            raise NotFound("campaign", cid)
        return json_answer(rows[0])

    return router


def create_app(service: HqService, ingest: Ingest, board: GatewayBoard | None = None, *,
               stats: Mapping[str, object] | None = None,
               max_body_bytes: int = MAX_BODY_BYTES,
               login_limiter: LoginLimiter | None = None,
               alerts: AlertWatch | None = None,
               approval: ApprovalPolicy | None = None,
               feeds: FeedWatcher | None = None,
               wallet: WalletSettings | None = None,
               passes: PassDesk | None = None) -> FastAPI:
    """HQ's API on ``service`` and ``ingest`` (kept in ``app.state``, read by the routes
    through :mod:`hq.deps`); ``stats`` adds components' counters to ``/metrics``.
    Accounts and the audit log live in ``service.db``; bodies over ``max_body_bytes``
    are refused with 413; failed console logins are limited by ``login_limiter``
    (default :class:`hq.login_limits.LoginLimiter` on the monotonic clock); ``alerts``
    serves ``GET /api/alerts`` (default: the gateways' alerts from ``board``); ``approval``
    is the chain's approval policy (:mod:`hq.approvals`; default: its defaults) and
    ``feeds`` takes ``POST /api/feeds/social`` (:mod:`hq.feeds`; default: no rules)."""
    # FastAPI's /docs and /redoc load from a CDN: HQ serves its own (hq.docs_page)
    app = FastAPI(title="aislecast HQ", version=__version__, docs_url=None, redoc_url=None)
    board = board or GatewayBoard()
    http, auth = HttpStats(), AuthStats()
    accounts, audit_log = Accounts(service.db), AuditLog(service.db)
    app.state.service, app.state.ingest, app.state.board = service, ingest, board
    app.state.accounts, app.state.audit, app.state.auth_stats = accounts, audit_log, auth
    feed = BrokerFeed(service.credentials)  # GET /api/broker/registry, for remote brokers
    app.state.broker_feed = feed  # HqServer closes it first on the way out (held requests)
    app.state.login_limiter = login_limiter or LoginLimiter()
    app.state.approvals = approvals = Approvals(service.db, approval)  # hq.approval_api
    app.state.feeds = feeds = feeds or FeedWatcher(service, FeedSettings(), approvals)
    app.state.alerts = alerts = alerts or AlertWatch(board)
    alerts.sources.append(FleetRules(service, board).conditions)  # beacons, bundle lag
    app.state.live = live = LiveHub()  # GET /api/live (hq.live); HqServer closes it on exit
    app.state.passes = passes or PassDesk()  # /api/shoppers/{inbox}/pass* (hq.passes_api)
    app.state.till = till = TillDesk(service.db, lambda: service.redeem)  # /api/till/*
    ingest.listeners.append(till.on_events)  # binds redemptions that beat their batch
    app.state.metrics = HqMetrics({"service": service.stats, "ingest": ingest.stats,
                                   "console": board.stats, "http": http, "auth": auth,
                                   "broker_feed": feed.stats, "alerts": alerts.stats,
                                   "live": live.stats, "till": till.stats, "feeds": feeds.stats,
                                   **(stats or {})})
    ingest.listeners.append(board.on_events)  # the console's "last event" per gateway
    ingest.listeners.append(live.on_events)  # and its pushed updates
    service.campaign_listeners.append(live.on_campaign)
    for each in {id(a): a for a in (approvals, feeds.approvals)}.values():  # the feeds' own too
        each.listeners.append(live.on_approval)
    board.listeners.append(live.on_gateway)
    # the last added runs first: count everything, then identify, then limit the body
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, stats=auth)
    app.add_middleware(AuthMiddleware, accounts=accounts, audit=audit_log, stats=auth)
    app.add_middleware(HttpMetricsMiddleware, stats=http)
    app.openapi = secured_openapi(app)  # type: ignore[method-assign]
    app.include_router(metrics_router())
    app.include_router(login_router())  # /console/login, /console/logout
    app.include_router(audit_router(audit_log))
    mount_console(app)  # /console and the JSON it polls
    mount_docs(app)  # /docs: Swagger UI from HQ's own files
    app.include_router(alerts_router())  # GET /api/alerts
    app.include_router(fleet_router())  # GET /api/stores/{store_id}/health
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
        return json_answer({"detail": exc.problems, "campaign": exc.campaign}, 422)

    @app.exception_handler(InvalidInput)
    async def _invalid_input(_: Request, exc: InvalidInput) -> Response:
        return json_answer({"detail": exc.problems}, 422)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> Response:
        return json_answer({"detail": str(exc)}, 404)

    for router in (_api_router(), _campaign_router(), _shopper_router(), broker_feed_router(feed),
                   live_router(live), rights_router(), till_router(till), approval_router(),
                   feeds_router(), funnel_router(), passes_router(), leads_router()):
        app.include_router(router)
    mount_registry(app)  # list, read, replace, delete: stores, zones, beacons, tags, gateways
    return app
