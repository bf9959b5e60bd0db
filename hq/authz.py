"""Who may call which HQ route: the one table, and the checks built on it.

:data:`ROUTE_ROLES` names every ``/api`` route (method and path template, as FastAPI
has them) with the roles and service-token kinds allowed. :class:`hq.auth.AuthMiddleware`
refuses a route that HQ serves but is missing from it (403, deny by default, logged as
an error), another method of a listed path (405 with ``Allow``: :func:`methods_of`) and
an unknown path (404); and
tests/test_authz.py walks ``app.routes`` and fails for any ``/api`` route without an
entry, so a new route can never be left open by accident. docs/architecture.md's table
is :func:`markdown_table` (a test keeps them equal).

Outside ``/api``: ``/health`` (load balancers), ``/metrics`` (Prometheus scrapers; it
holds only counters per route template and status, no ids, no campaign or shopper data)
and ``/s/{code}`` (short links on printed labels) are public; the console's pages
redirect to ``/console/login`` without a session.

Store staff and tills see only their stores: list endpoints are filtered, and another
store's object is 404 with the same body as one that does not exist (a 403 would
confirm that it exists). A wrong role is 403.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import msgspec

from aislecast.kernel.schema import Campaign
from hq.accounts import Principal

__all__ = [
    "COUPON_READERS",
    "LIVE_MAKERS",
    "PUBLIC_PATHS",
    "ROUTE_ROLES",
    "allowed",
    "campaigns_for",
    "markdown_table",
    "methods_of",
    "redact_coupons",
    "route_of",
    "visible_campaign",
]

_ALL_PEOPLE: Final = frozenset({"admin", "marketer", "approver", "store_staff", "analyst"})
_EDITORS: Final = frozenset({"admin", "marketer", "approver"})
_READERS: Final = _ALL_PEOPLE
_ANALYSTS: Final = frozenset({"admin", "marketer", "approver", "analyst"})
_ADMIN: Final = frozenset({"admin"})
_FOR_SHOPPER: Final = frozenset({"admin", "wallet", "shopper"})
_KEEPERS: Final = frozenset({"admin", "store_staff"})  # a store's zones, beacons, tags

#: Roles that may make a campaign live (create or edit it with status live or
#: scheduled, resume it, flash): a marketer's campaign waits for an approver.
LIVE_MAKERS: Final = frozenset({"admin", "approver"})
#: Roles that see coupon codes: those who write and approve them. Staff and analysts
#: see ``"coupon_code": "[hidden]"``; shoppers get theirs in the offer itself.
COUPON_READERS: Final = _EDITORS

#: Paths outside ``/api`` that need no credential (exact paths and prefixes ending "/").
PUBLIC_PATHS: Final = ("/health", "/metrics", "/s/", "/console/login", "/console/static/")

#: (method, route path) -> who may call it. Store-scoped roles are filtered per store.
ROUTE_ROLES: Final[dict[tuple[str, str], frozenset[str]]] = {
    ("GET", "/api/keys/bundle"): _ALL_PEOPLE | {"gateway_provisioning", "till", "wallet"},
    ("GET", "/api/me"): _ALL_PEOPLE | {"gateway_provisioning", "till", "wallet", "broker_sync"},
    # the broker's password-file lines (hashes) and ACL, for `aislecast broker sync`
    ("GET", "/api/broker/registry"): frozenset({"admin", "broker_sync"}),
    ("POST", "/api/stores"): _ADMIN,
    ("POST", "/api/stores/{store_id}/zones"): _ADMIN,
    ("POST", "/api/stores/{store_id}/beacons"): _ADMIN,
    ("POST", "/api/stores/{store_id}/publish"): _EDITORS,
    # the registry (hq.registry_api): staff read and change only their stores
    ("GET", "/api/stores"): _READERS,
    ("GET", "/api/stores/{store_id}"): _READERS,
    ("PUT", "/api/stores/{store_id}"): _ADMIN,
    ("DELETE", "/api/stores/{store_id}"): _ADMIN,
    ("GET", "/api/stores/{store_id}/zones"): _READERS,
    ("GET", "/api/stores/{store_id}/zones/{zone_id}"): _READERS,
    ("PUT", "/api/stores/{store_id}/zones/{zone_id}"): _KEEPERS,
    ("DELETE", "/api/stores/{store_id}/zones/{zone_id}"): _KEEPERS,
    ("GET", "/api/stores/{store_id}/beacons"): _READERS,
    ("GET", "/api/stores/{store_id}/beacons/{beacon_id}"): _READERS,
    ("PUT", "/api/stores/{store_id}/beacons/{beacon_id}"): _KEEPERS,
    ("DELETE", "/api/stores/{store_id}/beacons/{beacon_id}"): _KEEPERS,
    ("GET", "/api/stores/{store_id}/tags"): _READERS,
    ("GET", "/api/stores/{store_id}/tags/{tag_id}"): _READERS,
    ("PUT", "/api/stores/{store_id}/tags/{tag_id}"): _KEEPERS,
    ("DELETE", "/api/stores/{store_id}/tags/{tag_id}"): _KEEPERS,
    ("GET", "/api/stores/{store_id}/gateways"): _READERS,
    ("GET", "/api/stores/{store_id}/gateways/{gateway_id}"): _READERS,
    ("DELETE", "/api/stores/{store_id}/gateways/{gateway_id}"): _ADMIN,
    ("GET", "/api/stores/{store_id}/health"): _READERS,  # hq.fleet_health
    ("GET", "/api/campaigns"): _READERS,
    ("POST", "/api/campaigns"): _EDITORS,
    ("GET", "/api/campaigns/{cid}"): _READERS,
    ("PUT", "/api/campaigns/{cid}"): _EDITORS,
    ("POST", "/api/campaigns/{cid}/pause"): _EDITORS,
    ("POST", "/api/campaigns/{cid}/resume"): LIVE_MAKERS,
    ("POST", "/api/flash"): LIVE_MAKERS,
    # approval (hq.approvals): editors submit, approvers decide; the queue for editors
    ("POST", "/api/campaigns/{cid}/submit"): _EDITORS,
    ("POST", "/api/campaigns/{cid}/approve"): LIVE_MAKERS,
    ("POST", "/api/campaigns/{cid}/reject"): LIVE_MAKERS,
    ("GET", "/api/approvals"): _EDITORS,
    # social posts and mentions for flash proposals (hq.feeds): a social_feed token
    ("POST", "/api/feeds/social"): frozenset({"admin", "social_feed"}),
    # the rules that turn feed items into flash proposals (hq.feeds_api): editors read
    # them, approvers and admins (who approve what they propose) write them
    ("GET", "/api/feeds/rules"): _EDITORS,
    ("GET", "/api/feeds/rules/{name}"): _EDITORS,
    ("PUT", "/api/feeds/rules/{name}"): LIVE_MAKERS,
    ("DELETE", "/api/feeds/rules/{name}"): LIVE_MAKERS,
    ("POST", "/api/shoppers"): frozenset({"admin", "wallet"}),
    ("POST", "/api/shoppers/{inbox}/opt-out"): frozenset({"admin", "wallet"}),
    ("POST", "/api/enroll"): frozenset({"admin", "wallet"}),  # the same as POST /api/shoppers
    # hq.rights: a shopper's own token (kind "shopper") acts for that inbox only
    ("POST", "/api/shoppers/{inbox}/consent"): _FOR_SHOPPER,
    ("GET", "/api/shoppers/{inbox}/consent"): _FOR_SHOPPER,
    ("GET", "/api/shoppers/{inbox}/export"): _FOR_SHOPPER,
    ("DELETE", "/api/shoppers/{inbox}"): _FOR_SHOPPER,
    ("GET", "/api/shoppers/{inbox}/pass.pkpass"): _FOR_SHOPPER,  # hq.passes_api
    ("GET", "/api/shoppers/{inbox}/pass/google"): _FOR_SHOPPER,
    ("GET", "/api/analytics/campaigns"): _ANALYSTS,
    ("GET", "/api/campaigns/{cid}/leads"): frozenset({"admin", "marketer"}),  # hq.leads_api
    ("GET", "/api/analytics/campaigns/{cid}"): _ANALYSTS,
    ("GET", "/api/analytics/funnel"): _ANALYSTS | {"store_staff"},  # staff: their stores' rows
    ("GET", "/api/console/campaigns"): _READERS,
    ("GET", "/api/console/stores"): _READERS,
    ("GET", "/api/alerts"): _READERS,  # store staff: their stores' gateways' only
    ("GET", "/api/live"): _READERS,  # console push (hq.live); store staff: their stores'
    ("GET", "/api/metrics"): frozenset({"admin", "analyst"}),
    ("POST", "/api/shortlinks"): frozenset({"admin", "marketer", "approver", "store_staff"}),
    ("GET", "/api/shortlinks/{code}"): _READERS,
    # a till token redeems codes and feeds purchases for its store (hq.till)
    ("POST", "/api/till/redeem"): frozenset({"till"}),
    ("POST", "/api/till/purchases"): frozenset({"till"}),
    ("POST", "/api/shoppers/{inbox}/member"): _FOR_SHOPPER,  # a shopper: its own inbox only
    ("POST", "/api/shoppers/{inbox}/loyalty"): frozenset({"admin", "wallet"}),
    ("DELETE", "/api/shoppers/{inbox}/loyalty"): frozenset({"admin", "wallet"}),
    # before/after hold coupon codes and account changes: admins only
    ("GET", "/api/audit"): _ADMIN,
}


def allowed(method: str, path: str) -> frozenset[str] | None:
    """Who may call ``method path`` (a route template); None: the route is not listed."""
    return ROUTE_ROLES.get((method, path))


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)))


_PATTERNS: Final = [(m, t, _pattern(t)) for m, t in ROUTE_ROLES]


def route_of(method: str, path: str) -> tuple[str | None, frozenset[str] | None]:
    """The template of the table that ``path`` (a request's) fits, with its roles; a
    template matches one path segment per ``{name}``. ``(None, None)``: not listed."""
    for m, template, pattern in _PATTERNS:
        if m == method and pattern.fullmatch(path):
            return template, ROUTE_ROLES[(m, template)]
    return None, None


def methods_of(path: str) -> list[str]:
    """The methods the table lists for ``path`` (a request's), sorted: a 405's ``Allow``."""
    return sorted({m for m, _, pattern in _PATTERNS if pattern.fullmatch(path)})


def visible_campaign(p: Principal, c: Campaign) -> bool:
    return p.stores is None or any(s in p.stores for s in c.stores)


def redact_coupons(p: Principal, c: Campaign) -> Campaign:
    if p.role in COUPON_READERS or not any(cr.coupon_code for cr in c.creatives):
        return c
    hidden = [msgspec.structs.replace(cr, coupon_code="[hidden]") if cr.coupon_code else cr
              for cr in c.creatives]
    return msgspec.structs.replace(c, creatives=hidden)


def campaigns_for(p: Principal, campaigns: Iterable[Campaign]) -> list[Campaign]:
    """The campaigns ``p`` may see, coupon codes hidden where its role does not need them."""
    return [redact_coupons(p, c) for c in campaigns if visible_campaign(p, c)]


def markdown_table() -> str:
    """:data:`ROUTE_ROLES` as the Markdown table in docs/architecture.md."""
    lines = ["| Method | Route | Allowed |", "|---|---|---|"]
    for (method, path), roles in sorted(ROUTE_ROLES.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lines.append(f"| {method} | `{path}` | {', '.join(sorted(roles))} |")
    return "\n".join(lines) + "\n"
