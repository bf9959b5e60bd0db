"""HTTP routes of the till desk (:mod:`hq.till`), for till tokens and the wallet.

- ``POST /api/till/redeem`` ``{"code", "txn"}``: 200 with the redemption (also for the
  same till transaction replayed), else ``{"detail", "reason"}`` with ``forged`` 422,
  ``expired`` 410, ``used`` 409, ``foreign_store`` or ``unknown_till`` 403;
- ``POST /api/till/purchases`` ``{"txn", "member"?, "ts"?, "lines": [...]}``: 200 with
  how many lines were stored; more than :data:`hq.till.MAX_LINES` lines is 413
  (``too_many_lines``), a bad line 422;
- ``POST /api/shoppers/{inbox}/member``: the shopper's member id for the wallet's
  member QR (wallet token or admin; a shopper's own token for its inbox only, another
  inbox the same 404 as a missing one);
- ``POST /api/shoppers/{inbox}/loyalty`` ``{"loyalty"}``: link a retailer's loyalty card
  number to the shopper (201; 200 if it was theirs already; 409 ``loyalty_taken``), so a
  till that only knows the card sends it as ``member``;
- ``DELETE /api/shoppers/{inbox}/loyalty`` ``{"loyalty"}`` (the link's body): unlink that
  number (204, no body). The number is in the body, as for the link, so it is in no URL
  and no log line (HQ logs a refusal's path);
  404 ``not_linked`` when it is not linked to this shopper, whether it is linked to no
  one or to someone else (the answer does not tell which). The same callers as the link
  (wallet token or admin). A till line carrying it afterwards is an anonymous sale;
  lines stored before keep their shopper.

A till token names its store: one store, or the request's ``store`` among its stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, TypeVar

import msgspec
from fastapi import APIRouter, Request, Response

from aislecast.kernel.schema import Event, decode
from hq.accounts import Principal
from hq.db import HqDb
from hq.deps import IngestDep, PrincipalDep, ServiceDep, audit, json_answer
from hq.openapi import json_body
from hq.refusals import Refused
from hq.service import HqService, NotFound, check_id
from hq.till import (
    MAX_LINES,
    LoyaltyTaken,
    PurchaseFeed,
    Redeemed,
    RedeemRequest,
    TillDesk,
    TillRefused,
    link_loyalty,
    member_of,
    unlink_loyalty,
)

__all__ = ["till_router"]

_MAX_TILL_BODY = 256 * 1024  # 500 lines of ~200 bytes, with room
T = TypeVar("T")
R = TypeVar("R")


async def _decoded(request: Request, cls: type[T]) -> T:
    raw = await request.body()
    if len(raw) > _MAX_TILL_BODY:
        raise Refused(413, "body_too_large", f"a till call is at most {_MAX_TILL_BODY} bytes; "
                      "send a long basket in several calls with the same txn and more lines")
    try:
        return decode(raw, cls)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Refused(422, "invalid_body", f"invalid {cls.__name__}: {exc}") from None


async def _run(db: HqDb, fn: Callable[[], R]) -> R:
    """``fn()`` on the loop for SQLite (local, ~1 ms: a thread hop costs more than it
    saves), in a worker thread for PostgreSQL (network round trips), as ingest does."""
    return await asyncio.to_thread(fn) if db.dialect == "postgresql" else fn()


def _store(desk: TillDesk, p: Principal, asked: str | None, known: list[str]) -> str:
    """The store a till token acts for, or ``unknown_till``."""
    stores = sorted(p.stores or ())
    store = asked if asked is not None else (stores[0] if len(stores) == 1 else None)
    if store is None or store not in stores or store not in known:
        why = ("name the store: this till token serves several" if store is None
               else f"this till token does not serve store {store!r}")
        raise desk.refuse("unknown_till", why, till=p.actor, code="")
    return store


class LoyaltyLink(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    loyalty: Annotated[str, msgspec.Meta(min_length=1, max_length=64,
                                         pattern=r"^[A-Za-z0-9._:-]+$")]


def _shopper(service: HqService, inbox: str) -> None:
    """404 (saying nothing more) unless ``inbox`` is an opted-in shopper."""
    if check_id("inbox", inbox) or service.db.one(
            "SELECT 1 FROM shoppers WHERE inbox = ? AND opted_out = 0", (inbox,)) is None:
        raise NotFound("shopper", inbox[:64])


def till_router(desk: TillDesk) -> APIRouter:
    router = APIRouter()

    @router.post("/api/till/redeem", openapi_extra=json_body(RedeemRequest))
    async def redeem(request: Request, p: PrincipalDep, service: ServiceDep,
                     ingest: IngestDep) -> Response:
        req = await _decoded(request, RedeemRequest)

        def redeem_audited(store: str) -> tuple[Redeemed, Event]:
            done, event = desk.redeem(req.code, store=store, till=p.actor, txn=req.txn)
            audit(request, "till.redeem", f"code:{done.code}",
                  after={"campaign": done.campaign, "txn": done.txn, "replay": done.replay})
            return done, event

        try:
            store = _store(desk, p, req.store, service.store_ids())
            done, event = await _run(desk.db, lambda: redeem_audited(store))
        except TillRefused as exc:
            return json_answer({"detail": exc.detail, "reason": exc.reason}, exc.status)
        await ingest.astore_events([event])  # the analytics' redemption: once, by its id
        return json_answer(done)

    @router.post("/api/till/purchases", openapi_extra=json_body(PurchaseFeed))
    async def purchases(request: Request, p: PrincipalDep, service: ServiceDep) -> Response:
        feed = await _decoded(request, PurchaseFeed)
        if len(feed.lines) > MAX_LINES:
            raise Refused(413, "too_many_lines", f"lines: {len(feed.lines)}, at most "
                          f"{MAX_LINES}; send the rest in another call")
        if not feed.lines:
            raise Refused(422, "invalid_body", "lines: a purchase needs at least one line")
        if any(ln.product is None and ln.category is None for ln in feed.lines):
            raise Refused(422, "invalid_body", "lines: each line needs a product or a category")
        try:
            store = _store(desk, p, feed.store, service.store_ids())
        except TillRefused as exc:
            return json_answer({"detail": exc.detail, "reason": exc.reason}, exc.status)

        def purchases_audited() -> dict[str, object]:
            got = desk.purchases(feed, store=store, till=p.actor)
            audit(request, "till.purchase", f"txn:{store}/{feed.txn}", after=got)
            return got

        return json_answer(await _run(desk.db, purchases_audited))

    _shopper_ids(router)
    return router


def _shopper_ids(router: APIRouter) -> None:
    """The ids a till knows a shopper by: the member QR's, and loyalty cards linked."""

    @router.post("/api/shoppers/{inbox}/member")
    async def member(inbox: str, request: Request, service: ServiceDep,
                     p: PrincipalDep) -> Response:
        if p.role == "shopper" and p.actor != f"shopper:{inbox}":  # not theirs: as if missing
            raise NotFound("shopper", inbox[:64])
        _shopper(service, inbox)

        def member_audited() -> str:
            member = member_of(service.db, inbox)
            audit(request, "shopper.member", f"shopper:{inbox}")  # the id is not audited
            return member

        return json_answer({"inbox": inbox, "member": await asyncio.to_thread(member_audited)})

    @router.post("/api/shoppers/{inbox}/loyalty", openapi_extra=json_body(LoyaltyLink))
    async def loyalty(inbox: str, request: Request, service: ServiceDep) -> Response:
        link = await _decoded(request, LoyaltyLink)
        _shopper(service, inbox)

        def link_audited() -> bool:
            fresh = link_loyalty(service.db, inbox, link.loyalty)
            # the card number is the shopper's: it is not audited
            audit(request, "shopper.loyalty", f"shopper:{inbox}", after={"new": fresh})
            return fresh

        try:
            fresh = await asyncio.to_thread(link_audited)
        except LoyaltyTaken:
            raise Refused(409, "loyalty_taken", "loyalty: this loyalty id is linked to another "
                          "shopper; unlink it there first (DELETE /api/shoppers/{inbox}/"
                          "loyalty with the same body)") from None
        return json_answer({"inbox": inbox, "linked": True}, 201 if fresh else 200)

    @router.delete("/api/shoppers/{inbox}/loyalty", status_code=204,
                   openapi_extra=json_body(LoyaltyLink))
    async def unlink(inbox: str, request: Request, service: ServiceDep) -> Response:
        link = await _decoded(request, LoyaltyLink)
        if check_id("inbox", inbox):
            raise NotFound("shopper", inbox[:64])

        def unlink_audited() -> bool:
            gone = unlink_loyalty(service.db, inbox, link.loyalty)
            if gone:  # the card number is the shopper's: it is not audited
                audit(request, "shopper.loyalty_unlink", f"shopper:{inbox}")
            return gone

        if not await asyncio.to_thread(unlink_audited):
            raise Refused(404, "not_linked", "loyalty: this loyalty id is not linked to this "
                          "shopper; GET /api/shoppers/{inbox}/export lists the ones that are")
        return Response(status_code=204)
