"""HTTP routes of a shopper's rights (hq.rights): enrol, consent, export, erase.

``POST /api/shoppers`` (and its alias ``POST /api/enroll``) enrols; the answer carries the
shopper's own ``api_token``, with which the shopper (their wallet) calls the routes on
``/api/shoppers/{inbox}/...`` for themselves; the wallet's service token and admins may
call them for anyone. An inbox that is not the caller's, or does not exist, is one 404.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Final, TypeVar

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response

from aislecast.kernel.schema import decode
from hq.audit import AuditLog
from hq.consent import MAX_HOME_STORES, PURPOSES, consent_history, current_consents
from hq.deps import AccountsDep, PrincipalDep, ServiceDep, audit, json_answer, state_of
from hq.openapi import json_body
from hq.rights import ERASED, ShopperRights, source_of
from hq.service import Enrollment

__all__ = ["ConsentRequest", "EnrollRequest", "rights_router"]

_LIST_MAX: Final = 4 * len(PURPOSES)
T = TypeVar("T")


class EnrollRequest(msgspec.Struct):  # unknown fields ignored, as before
    consents: Annotated[list[str], msgspec.Meta(max_length=_LIST_MAX)] = msgspec.field(
        default_factory=lambda: ["offers"])
    home_stores: Annotated[list[str], msgspec.Meta(max_length=MAX_HOME_STORES)] = msgspec.field(
        default_factory=list)


class ConsentRequest(msgspec.Struct, forbid_unknown_fields=True):
    purpose: Annotated[str, msgspec.Meta(max_length=64)]
    granted: bool


async def _body(request: Request, cls: type[T]) -> T:
    try:
        return decode(await request.body(), cls)
    except msgspec.ValidationError as exc:
        raise HTTPException(422, detail=f"invalid {cls.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise HTTPException(400, detail=f"body is not valid JSON: {exc}") from exc


def rights_router() -> APIRouter:
    router = APIRouter()

    async def enroll(request: Request, service: ServiceDep, accounts: AccountsDep,
                     p: PrincipalDep) -> Response:
        req = await _body(request, EnrollRequest)
        rights = ShopperRights(service, accounts)

        def audited(e: Enrollment) -> None:
            # the identity key, broker password and API token are the shopper's: never audited
            audit(request, "shopper.enroll", f"shopper:{e.inbox}",
                  after={"consents": e.consents, "home_stores": e.home_stores})

        e = await rights.enroll_admitted(req.consents, req.home_stores, source=source_of(p),
                                         audited=audited)
        return json_answer(e, 201)

    router.add_api_route("/api/shoppers", enroll, methods=["POST"], status_code=201,
                         openapi_extra=json_body(EnrollRequest))
    router.add_api_route("/api/enroll", enroll, methods=["POST"], status_code=201,
                         openapi_extra=json_body(EnrollRequest))

    @router.post("/api/shoppers/{inbox}/consent", openapi_extra=json_body(ConsentRequest))
    async def change_consent(inbox: str, request: Request, service: ServiceDep,
                             accounts: AccountsDep, p: PrincipalDep) -> Response:
        rights = ShopperRights(service, accounts)
        rights.check_access(p, inbox)
        req = await _body(request, ConsentRequest)
        out = await rights.change(inbox, req.purpose, req.granted, source=source_of(p))
        audit(request, "shopper.consent", f"shopper:{inbox}",
              after={"purpose": req.purpose, "granted": req.granted})
        return json_answer(out)

    @router.get("/api/shoppers/{inbox}/consent")
    async def get_consent(inbox: str, service: ServiceDep, accounts: AccountsDep,
                          p: PrincipalDep) -> Response:
        ShopperRights(service, accounts).check_access(p, inbox)
        return json_answer({"inbox": inbox, "consents": current_consents(service.db, inbox),
                      "history": consent_history(service.db, inbox)})

    @router.get("/api/shoppers/{inbox}/export")
    async def export(inbox: str, service: ServiceDep, accounts: AccountsDep,
                     p: PrincipalDep) -> Response:
        rights = ShopperRights(service, accounts)
        rights.check_access(p, inbox)
        body = await asyncio.to_thread(rights.export, inbox)
        return json_answer(body, headers={
            "Content-Disposition": 'attachment; filename="aislecast-export.json"',
            "Cache-Control": "no-store"})

    @router.delete("/api/shoppers/{inbox}")
    async def erase(inbox: str, request: Request, service: ServiceDep, accounts: AccountsDep,
                    p: PrincipalDep) -> Response:
        rights = ShopperRights(service, accounts)
        rights.check_access(p, inbox)
        out = await rights.erase(inbox)
        if p.role == "shopper":  # their own request: the entry must not name them either
            state_of(request, "audit", AuditLog).record(ERASED, "shopper.erase", ERASED,
                                                        after={"erasure": out["erasure"]})
            request.state.audited = True
        else:
            audit(request, "shopper.erase", ERASED, after={"erasure": out["erasure"]})
        return json_answer(out)

    return router
