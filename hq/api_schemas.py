"""What each HQ route answers, as msgspec types, for the OpenAPI document.

HQ's handlers encode their answers themselves (``msgspec.json.encode`` into a plain
``Response``), so FastAPI cannot see their shape. :data:`ANSWERS` names the type of
every 2xx answer of every route (method, path template); :func:`hq.openapi.secured_openapi`
turns each into a JSON schema with :func:`msgspec.json.schema_components`, the same
machinery that documents request bodies, so the schema is generated from the code and
not written by hand. The structs below describe the answers that are built as dicts
(health, ``/api/me``, the console's pages); each is the exact key set the handler
writes. A route's own ``openapi_extra`` (e.g. :mod:`hq.registry_api`) wins.

``None`` for a status with no JSON body (a redirect, 204, PEM text): :data:`TEXT` names
those with their media type. tests/test_openapi_schemas.py fails for a route missing here.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from aislecast.kernel.registry_schema import RegistryRendering
from aislecast.kernel.schema import Beacon, Campaign, Store, Zone
from hq.analytics import CampaignStats
from hq.approvals import Approval
from hq.audit import AuditEntry
from hq.board import GatewayView
from hq.consent import ConsentChange
from hq.fleet_schema import StoreHealth
from hq.funnel_api import FunnelAnswer
from hq.leads_api import LeadsAnswer
from hq.service import Enrollment
from hq.till import Redeemed

__all__ = ["ANSWERS", "TEXT", "Approved", "ConsentChanged", "Consents", "ConsoleCampaigns",
           "ConsoleStore", "ConsoleStores", "Erased", "Health", "LoyaltyLinked",
           "Me", "MemberId", "OptedOut", "PostResult", "PostResults", "Published",
           "PurchasesStored", "ShardDown", "ShortLinkClicks", "ShortLinkUrls"]


class ShardDown(msgspec.Struct, frozen=True):
    shard: str
    stores: list[str]


class Health(msgspec.Struct, frozen=True):
    """``GET /health``: 200 ok, 503 degraded (a broker is down)."""

    status: str
    mqtt: bool
    version: str
    shards_down: list[ShardDown] | None = None  # only with several brokers
    role: str | None = None  # leader / follower


class Me(msgspec.Struct, frozen=True):
    actor: str
    role: str
    stores: list[str] | None
    via: str


class Published(msgspec.Struct, frozen=True):
    store: str
    version: int


class OptedOut(msgspec.Struct, frozen=True):
    inbox: str
    opted_out: bool


class ShortLinkUrls(msgspec.Struct, frozen=True):
    """A short link and the three URLs to print or write (``short``, ``qr``, ``nfc``)."""

    code: str
    url: str
    tag: str | None
    store: str | None
    campaign: str | None
    short: str
    qr: str
    nfc: str


class ShortLinkClicks(ShortLinkUrls, frozen=True):
    clicks: dict[str, int]  # per source: qr, nfc, other


class ConsoleCampaigns(msgspec.Struct, frozen=True):
    """``campaigns``: id, name, status, scenario, stores, priority and the live funnel."""

    now: float
    campaigns: list[dict[str, Any]]


class ConsoleStore(msgspec.Struct, frozen=True):
    id: str
    name: str
    tz: str
    gateways: list[GatewayView]
    registered: bool = True  # False: known only because a gateway of it reported in


class ConsoleStores(msgspec.Struct, frozen=True):
    now: float
    stores: list[ConsoleStore]


class Consents(msgspec.Struct, frozen=True):
    """``GET /api/shoppers/{inbox}/consent``: the purposes granted now, and every change."""

    inbox: str
    consents: list[str]
    history: list[ConsentChange]


class ConsentChanged(msgspec.Struct, frozen=True):
    inbox: str
    consents: list[str]
    changed: bool
    unpublished_stores: list[str]  # stores whose gateways did not get the delta now


class Erased(msgspec.Struct, frozen=True):
    erasure: str  # the anonymous tombstone's id
    consent_changes: int
    events_anonymised: int
    unpublished_stores: list[str]


class PurchasesStored(msgspec.Struct, frozen=True):
    txn: str
    store: str
    lines: int
    stored: int  # 0 for a resent transaction
    member: str  # known, unknown (kept as anonymous sales) or none


class MemberId(msgspec.Struct, frozen=True):
    inbox: str
    member: str


class LoyaltyLinked(msgspec.Struct, frozen=True):
    inbox: str
    linked: bool


class Approved(msgspec.Struct, frozen=True):
    approval: Approval
    campaign: Campaign


class PostResult(msgspec.Struct, frozen=True):
    id: str
    result: str  # proposed, duplicate, no_match or skipped
    reason: str | None = None
    campaign: str | None = None


class PostResults(msgspec.Struct, frozen=True):
    posts: list[PostResult]


#: (method, path template) -> {status: type of its JSON body, or None: see TEXT}
ANSWERS: Final[dict[tuple[str, str], dict[int, Any]]] = {
    ("GET", "/health"): {200: Health},
    ("GET", "/s/{code}"): {302: None},
    ("GET", "/api/me"): {200: Me},
    ("GET", "/api/stores/{store_id}/health"): {200: StoreHealth},
    ("GET", "/api/keys/bundle"): {200: None},
    ("GET", "/api/metrics"): {200: dict[str, Any]},
    ("GET", "/api/audit"): {200: list[AuditEntry]},
    ("GET", "/api/broker/registry"): {200: RegistryRendering, 304: None},
    ("POST", "/api/stores"): {201: Store},
    ("POST", "/api/stores/{store_id}/zones"): {201: Zone},
    ("POST", "/api/stores/{store_id}/beacons"): {201: Beacon},
    ("POST", "/api/stores/{store_id}/publish"): {200: Published},
    ("GET", "/api/campaigns"): {200: list[Campaign]},
    ("POST", "/api/campaigns"): {201: Campaign},
    ("GET", "/api/campaigns/{cid}"): {200: Campaign},
    ("PUT", "/api/campaigns/{cid}"): {200: Campaign},
    ("POST", "/api/campaigns/{cid}/pause"): {200: Campaign},
    ("POST", "/api/campaigns/{cid}/resume"): {200: Campaign},
    ("POST", "/api/flash"): {201: Campaign},
    ("POST", "/api/shoppers"): {201: Enrollment},
    ("POST", "/api/shoppers/{inbox}/opt-out"): {200: OptedOut},
    ("GET", "/api/analytics/campaigns"): {200: list[CampaignStats]},
    ("GET", "/api/analytics/campaigns/{cid}"): {200: CampaignStats},
    ("GET", "/api/console/campaigns"): {200: ConsoleCampaigns},
    ("GET", "/api/console/stores"): {200: ConsoleStores},
    ("POST", "/api/shortlinks"): {200: ShortLinkUrls, 201: ShortLinkUrls},
    ("GET", "/api/shortlinks/{code}"): {200: ShortLinkClicks},
    ("POST", "/api/enroll"): {201: Enrollment},
    ("GET", "/api/shoppers/{inbox}/consent"): {200: Consents},
    ("POST", "/api/shoppers/{inbox}/consent"): {200: ConsentChanged},
    ("GET", "/api/shoppers/{inbox}/export"): {200: dict[str, Any]},
    ("DELETE", "/api/shoppers/{inbox}"): {200: Erased},
    ("GET", "/api/shoppers/{inbox}/pass.pkpass"): {200: None},  # a zip (hq.passes)
    ("GET", "/api/shoppers/{inbox}/pass/google"): {200: dict[str, Any]},  # loyaltyObject
    ("POST", "/api/till/redeem"): {200: Redeemed},
    ("POST", "/api/till/purchases"): {200: PurchasesStored},
    ("POST", "/api/shoppers/{inbox}/member"): {200: MemberId},
    ("POST", "/api/shoppers/{inbox}/loyalty"): {200: LoyaltyLinked, 201: LoyaltyLinked},
    ("DELETE", "/api/shoppers/{inbox}/loyalty"): {204: None},  # unlinked, no body
    ("POST", "/api/campaigns/{cid}/submit"): {200: Approval},
    ("POST", "/api/campaigns/{cid}/approve"): {200: Approved},
    ("POST", "/api/campaigns/{cid}/reject"): {200: Approval},
    ("GET", "/api/approvals"): {200: list[Approved]},
    ("POST", "/api/feeds/social"): {200: PostResults},
    ("GET", "/api/analytics/funnel"): {200: FunnelAnswer},
    ("GET", "/api/campaigns/{cid}/leads"): {200: LeadsAnswer},
    ("GET", "/api/live"): {200: None},
}

#: Answers that are not JSON: (method, path) -> media type (a redirect has none).
TEXT: Final[dict[tuple[str, str], str]] = {
    ("GET", "/api/keys/bundle"): "application/x-pem-file",
    ("GET", "/api/live"): "text/event-stream",  # server-sent events (hq.live)
    ("GET", "/api/shoppers/{inbox}/pass.pkpass"): "application/vnd.apple.pkpass",
}
