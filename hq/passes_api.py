"""HTTP routes of wallet passes (:mod:`hq.passes`), for the shopper themselves.

``GET /api/shoppers/{inbox}/pass.pkpass`` answers the signed Apple Wallet pass and
``GET /api/shoppers/{inbox}/pass/google`` the Google Wallet loyalty object, to the
shopper's own token (kind ``shopper``), the wallet's service token or an admin; another
shopper's inbox is the same 404 as an unknown one (:meth:`hq.rights.ShopperRights.
check_access`). Passes not configured in ``[passes]``: 409 ``passes_not_configured``.
"""

from __future__ import annotations

import asyncio
from typing import Final

from fastapi import APIRouter, Request, Response

from hq.consent import home_stores_of
from hq.deps import AccountsDep, PrincipalDep, ServiceDep, json_answer, state_of
from hq.passes import (
    PKPASS_TYPE,
    ApplePassSigner,
    PassSettings,
    PassSubject,
    build_pkpass,
    google_loyalty_object,
)
from hq.refusals import Refused
from hq.rights import ShopperRights
from hq.service import HqService
from hq.till import member_of

__all__ = ["PassDesk", "passes_router"]

_NOT_CONFIGURED: Final = "passes_not_configured"


class PassDesk:
    """The ``[passes]`` settings and, when Apple's are complete, the loaded signer."""

    def __init__(self, settings: PassSettings | None = None) -> None:
        self.settings = settings or PassSettings()
        self.apple = None if self.settings.apple_missing() else ApplePassSigner.load(
            self.settings)

    def signer(self) -> ApplePassSigner:
        if self.apple is None:
            raise Refused(409, _NOT_CONFIGURED, "Apple Wallet passes are not configured on "
                          f"this HQ (set {', '.join(self.settings.apple_missing())} in "
                          "hq.toml [passes])")
        return self.apple

    def google_issuer(self) -> None:
        if self.settings.google_issuer_id is None:
            raise Refused(409, _NOT_CONFIGURED, "Google Wallet passes are not configured on "
                          "this HQ (set passes.google_issuer_id in hq.toml [passes])")


def _subject(service: HqService, inbox: str) -> PassSubject:
    """The member id (issued on first use) and the shopper's stores with their beacons."""
    member = member_of(service.db, inbox)
    known = set(service.store_ids())
    stores = [s for s in home_stores_of(service.db, inbox) if s in known] or sorted(known)
    return PassSubject(member, [(service.get_store(s), service.beacons(s)) for s in stores])


def passes_router() -> APIRouter:
    router = APIRouter()

    @router.get("/api/shoppers/{inbox}/pass.pkpass")
    async def apple_pass(inbox: str, request: Request, service: ServiceDep,
                         accounts: AccountsDep, p: PrincipalDep) -> Response:
        ShopperRights(service, accounts).check_access(p, inbox)
        desk = state_of(request, "passes", PassDesk)
        signer = desk.signer()
        subject = await asyncio.to_thread(_subject, service, inbox)
        body = await asyncio.to_thread(build_pkpass, desk.settings, signer, subject)
        return Response(body, media_type=PKPASS_TYPE, headers={
            "Content-Disposition": 'attachment; filename="aislecast.pkpass"',
            "Cache-Control": "no-store"})

    @router.get("/api/shoppers/{inbox}/pass/google")
    async def google_pass(inbox: str, request: Request, service: ServiceDep,
                          accounts: AccountsDep, p: PrincipalDep) -> Response:
        ShopperRights(service, accounts).check_access(p, inbox)
        desk = state_of(request, "passes", PassDesk)
        desk.google_issuer()
        subject = await asyncio.to_thread(_subject, service, inbox)
        return json_answer(google_loyalty_object(desk.settings, subject),
                           headers={"Cache-Control": "no-store"})

    return router
