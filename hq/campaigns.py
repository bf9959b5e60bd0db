"""HQ's campaign desk: validate, save, edit live, flash, and allocate budget grants.

HQ refuses an invalid campaign naming every problem (the API answers 422 with the list):
the shared rule book :func:`~aislecast.kernel.campaign.check_campaign` plus what only HQ knows
(stores exist, zones exist in each targeted store, the store's time zone is real).
Saving a campaign that is live in stores with gateways publishes a signed delta, so a
pause or an edit reaches the gateways within seconds.

Budgets are shared between the gateways of a store by **cumulative grants**: HQ hands
each known gateway an allowance it may ever spend, and the sum of all allowances never
exceeds the budget (plus, for redemption budgets, the offers that expired unredeemed
and so can no longer be redeemed). Grants only grow, so a gateway that is offline or
slow to report can never cause an overspend; the price is at most one chunk of budget
stranded at an idle gateway. A campaign with no grants yet (HQ has not heard from any
gateway of its stores) lets a gateway spend up to the total: right for the usual one
gateway per store, and replaced by explicit grants as soon as HQ hears a gateway.
"""

from __future__ import annotations

import time
import uuid

import msgspec

from aislecast.kernel.campaign import (
    CAMPAIGN_ENGINE,
    Budget,
    Campaign,
    Creative,
    Trigger,
    check_campaign,
    check_hq_settings,
)
from aislecast.kernel.logs import get_logger
from hq.service import HqService, NotFound, check_id, check_text, check_tz

__all__ = ["CampaignInvalid", "FlashRequest", "allocate_budgets", "flash", "flash_campaign",
           "save_campaign", "top_up", "validate"]

log = get_logger(__name__)


class CampaignInvalid(ValueError):
    def __init__(self, campaign: str, problems: list[str]) -> None:
        super().__init__(f"campaign {campaign!r} is invalid: " + "; ".join(problems))
        self.campaign = campaign
        self.problems = problems


class FlashRequest(msgspec.Struct, frozen=True):
    """``POST /api/flash``: a breaking-news offer to everyone present, now."""

    title: str
    stores: list[str]
    body: str = ""
    format: str = "banner"
    coupon_code: str | None = None
    url: str | None = None
    validity_s: float = 600.0
    zones: list[str] = msgspec.field(default_factory=list)
    priority: int = 100
    holdout_pct: float = 0.0
    id: str | None = None


def _shape(c: Campaign) -> list[str]:
    """What HQ checks before anything else reads the campaign: ids usable as topic levels
    and keys, a time zone from zoneinfo's list (a long one used to reach the file system
    and answer 500), every string bounded."""
    problems = check_id("id", c.id) + check_text("", c)
    if len(c.stores) > 1_000:
        problems.append(f"stores: {len(c.stores)} stores, at most 1000 (split the campaign)")
    problems += [p for i, s in enumerate(c.stores[:1_000]) for p in check_id(f"stores[{i}]", s)]
    problems += [p for i, cr in enumerate(c.creatives) for p in check_id(f"creatives[{i}].id", cr.id)]
    for i, t in enumerate(c.all_triggers()):
        problems += [p for j, z in enumerate(t.zones) for p in check_id(f"trigger[{i}].zones[{j}]", z)]
    if c.schedule.tz is not None:
        problems += check_tz("schedule.tz", c.schedule.tz)
    return problems


def validate(service: HqService, c: Campaign) -> list[str]:
    problems = _shape(c)
    if problems:
        return problems
    zones: set[str] = set()
    for s in c.stores:
        try:
            store = service.get_store(s)
        except NotFound:
            problems.append(f"stores: unknown store {s!r}")
            continue
        if check_tz("tz", store.tz):
            problems.append(f"stores: store {s!r} has an unknown time zone {store.tz!r}")
        zones |= {z.id for z in service.zones(s)}
    problems += check_campaign(c, zones) + check_hq_settings(c)
    return problems


async def save_campaign(service: HqService, c: Campaign, *, push: bool = True) -> Campaign:
    """Validate, store, and (when live somewhere) push the change to gateways as a delta."""
    c = msgspec.structs.replace(c, engine=CAMPAIGN_ENGINE)
    problems = validate(service, c)
    if problems:
        service.stats.refused["campaign"] = service.stats.refused.get("campaign", 0) + 1
        log.warning("invalid campaign refused", campaign=c.id[:64], problems=problems[:5])
        raise CampaignInvalid(c.id[:64], problems)
    try:
        old: Campaign | None = service.get_campaign(c.id)
    except NotFound:
        old = None
    # paused_by is HQ's own record of an auto-pause (hq.autopause): never taken from the
    # body, kept while the campaign stays paused, gone once it is resumed or edited live
    c = msgspec.structs.replace(c, paused_by=old.paused_by if old is not None
                                and c.status == "paused" else None)
    if old is not None and old.budget.grants and c.budget.kind == old.budget.kind:
        c = msgspec.structs.replace(c, budget=msgspec.structs.replace(
            c.budget, grants=old.budget.grants))  # grants only grow: never reset by an edit
    widens = service.widens_targeting(c)
    service.upsert_campaign(c)
    if push and service.link is not None:
        for store in c.stores:
            if c.status in {"live", "scheduled"}:
                await service.publish_delta(store, campaigns=[c])
            else:
                await service.publish_delta(store, paused=[c.id])
        if widens and c.status in {"live", "scheduled"}:
            # the bundles' profiles lack the segments/tiers it targets (hq.store_model)
            await service.republish_all(c.stores)
    return c


def flash_campaign(req: FlashRequest, *, status: str = "live") -> Campaign:
    """The campaign a flash request describes (not yet validated or saved)."""
    creative = Creative(id="flash", title=req.title, body=req.body, format=req.format,
                        coupon_code=req.coupon_code, url=req.url)
    return Campaign(id=req.id or f"flash-{uuid.uuid4().hex[:8]}", name=req.title,
                    stores=req.stores, creatives=[creative], scenario="flash", status=status,
                    trigger=Trigger(kind="flash", zones=req.zones), validity_s=req.validity_s,
                    priority=req.priority, holdout_pct=req.holdout_pct, countdown=True)


async def flash(service: HqService, req: FlashRequest) -> Campaign:
    return await save_campaign(service, flash_campaign(req))


def _spent(service: HqService, c: Campaign, now: float) -> tuple[dict[str, int], int]:
    """Offers issued per gateway, and units returned (offers expired unredeemed)."""
    rows = service.db.query(
        "SELECT gateway, count(*) FROM events WHERE campaign = ? AND kind = 'decision'"
        " AND reason = 'offer' GROUP BY gateway", (c.id,))
    spent = {str(g): int(n) for g, n in rows if g}
    returned = 0
    if c.budget.kind == "redemptions":
        row = service.db.one(
            "SELECT count(*) FROM events d WHERE d.campaign = ? AND d.kind = 'decision'"
            " AND d.reason = 'offer' AND d.ts + ? < ? AND NOT EXISTS (SELECT 1 FROM events r"
            " WHERE r.offer = d.offer AND r.kind = 'offer_redeemed')",
            (c.id, c.validity_s, now))
        returned = int(row[0]) if row else 0
    return spent, returned


def top_up(b: Budget, spent: dict[str, int], gateways: set[str], *, returned: int = 0,
           low_water: float = 0.5) -> dict[str, int]:
    """New cumulative grants: each gateway that used ``low_water`` of its grant (or has
    none) gets another chunk from the pool, ``pool = total + returned - granted``; no
    grant ever shrinks and ``*`` (unknown gateways) gets nothing."""
    grants = {g: n for g, n in b.grants.items() if g != "*"}
    pool = b.total + returned - sum(grants.values())
    chunk = max(1, pool // (2 * len(gateways))) if pool > 0 and gateways else 0
    new = dict(grants)
    for g in sorted(gateways):
        if pool <= 0:
            break
        have = grants.get(g, 0)
        if g not in grants or spent.get(g, 0) >= low_water * have:
            step = min(chunk, pool)
            new[g] = have + step
            pool -= step
    new["*"] = 0
    return new


def allocate_budgets(service: HqService, *, now: float | None = None,
                     low_water: float = 0.5) -> int:
    """Top up the grants of gateways that spent more than ``low_water`` of their last
    chunk, from what is left; returns how many campaigns changed. Never lowers a grant."""
    now = time.time() if now is None else now
    changed = 0
    for c in service.campaigns():
        b = c.budget
        if b.kind == "none" or c.status not in {"live", "scheduled"}:
            continue
        gws = {str(r[0]) for s in c.stores for r in service.db.query(
            "SELECT DISTINCT gateway FROM events WHERE store = ? AND gateway IS NOT NULL", (s,))}
        if not gws:
            continue
        spent, returned = _spent(service, c, now)
        new = top_up(b, spent, gws, returned=returned, low_water=low_water)
        if new != b.grants:
            service.upsert_campaign(msgspec.structs.replace(
                c, budget=Budget(b.kind, b.total, new)))
            changed += 1
    return changed
