"""The web wallet's own HTTP routes at HQ (docs/architecture.md#wallet), outside ``/api``.

A browser cannot hold the ``wallet`` service token that ``POST /api/shoppers`` needs
(anyone could read it from the page), so the wallet enrols at ``POST /wallet/enroll``:
public, like a sign-up form, and limited per client address
(:class:`hq.login_limits.LoginLimiter` with every enrolment counted, 429 past the
bound). It enrols through :meth:`hq.rights.ShopperRights.enroll_admitted`, the path
``POST /api/shoppers`` takes (consent history per purpose, home stores, the admitting
delta), so its answer carries the shopper's own ``api_token``; with it the page calls
the shopper's routes on ``/api/shoppers/{inbox}/...`` (consent, export, erase, member
id) like any other client. Opting out is withdrawing ``offers`` there.

``GET /wallet/stores`` lists store ids and names only (home-store choice);
``GET /wallet/config`` tells the page where the broker's secure WebSockets are.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response

from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import decode
from hq.audit import AuditLog
from hq.deps import AccountsDep, ServiceDep, json_answer, state_of
from hq.login_limits import LoginLimiter, LoginLimits
from hq.refusals import Refused
from hq.rights import ShopperRights
from hq.service import Enrollment

__all__ = ["PURPOSES", "WALLET_ACTOR", "WalletEnrollRequest", "WalletSettings", "WalletState",
           "wallet_api_router"]

log = get_logger(__name__)

#: The consent purposes the wallet offers: ``offers`` is what HQ's token tables need
#: (proximity offers); the other two are recorded for HQ's analytics and ranking.
PURPOSES: Final = ("offers", "personalisation", "analytics")
#: Who the audit log names for a public wallet enrolment (no principal: a sign-up).
WALLET_ACTOR: Final = "wallet:web"
#: Enrolments per client address per window: a household's phones, not a script's.
_ENROL_LIMITS: Final = LoginLimits(per_pair=20, per_address=20, per_account=1 << 30)
_MAX_HOME_STORES: Final = 8
_NO_STORE: Final = {"Cache-Control": "no-store"}  # every wallet answer is per shopper


@dataclass(frozen=True, slots=True)
class WalletSettings:
    """``broker_url``: the broker's secure WebSockets as the browser reaches them
    (``wss://broker.example:8884/mqtt``); None: the page says the wallet is not set up."""

    broker_url: str | None = None
    enrol_limits: LoginLimits = _ENROL_LIMITS


class WalletEnrollRequest(msgspec.Struct, forbid_unknown_fields=True):
    consents: list[str]
    stores: list[str] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WalletState:
    """What the wallet's routes read from ``app.state.wallet`` (set by ``mount_wallet``)."""

    settings: WalletSettings
    limiter: LoginLimiter

    @classmethod
    def of(cls, request: Request) -> WalletState:
        return state_of(request, "wallet", cls)


def _record(request: Request, actor: str, action: str, obj: str, after: object) -> None:
    state_of(request, "audit", AuditLog).record(actor, action, obj, after=after)


def _enroll_body(raw: bytes, known_stores: set[str]) -> WalletEnrollRequest:
    try:
        req = decode(raw, WalletEnrollRequest)
    except msgspec.ValidationError as exc:
        raise HTTPException(422, detail=f"invalid enrolment: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise HTTPException(400, detail=f"body is not valid JSON: {exc}") from exc
    problems = [f"consents: {c[:32]!r} is not one of {', '.join(PURPOSES)}"
                for c in req.consents if c not in PURPOSES]
    if "offers" not in req.consents:
        problems.append("consents: a wallet enrols for 'offers' (the shopper can pause them later)")
    problems += [f"stores: no store {s[:64]!r}" for s in req.stores if s not in known_stores]
    if len(req.stores) > _MAX_HOME_STORES:
        problems.append(f"stores: {len(req.stores)} home stores, at most {_MAX_HOME_STORES}")
    if problems:
        raise HTTPException(422, detail=problems)
    return req


def wallet_api_router() -> APIRouter:
    router = APIRouter()

    @router.get("/wallet/config", include_in_schema=False)
    async def config(request: Request) -> Response:
        s = WalletState.of(request).settings
        return json_answer({"broker_url": s.broker_url, "purposes": list(PURPOSES)}, headers=_NO_STORE)

    @router.get("/wallet/stores", include_in_schema=False)
    async def stores(service: ServiceDep) -> Response:
        rows = await asyncio.to_thread(
            service.db.query, "SELECT id, name FROM stores ORDER BY name, id")
        return json_answer({"stores": [{"id": r[0], "name": r[1]} for r in rows]}, headers=_NO_STORE)

    @router.post("/wallet/enroll", status_code=201, include_in_schema=False)
    async def enroll(request: Request, service: ServiceDep, accounts: AccountsDep) -> Response:
        address = request.client.host if request.client else "unknown"
        if (verdict := WalletState.of(request).limiter.attempt("enrol", address)) is not None:
            raise Refused(429, "enrol_rate_limited",
                          f"too many enrolments from this address; try again in "
                          f"{verdict.retry_after_s} s",
                          headers=[("Retry-After", str(verdict.retry_after_s))])
        req = _enroll_body(await request.body(), set(service.store_ids()))

        def audited(e: Enrollment) -> None:
            log.info("shopper enrolled in the web wallet", inbox=e.inbox, consents=e.consents,
                     stores=e.home_stores)
            # the identity key, broker password and API token are the shopper's: never audited
            _record(request, WALLET_ACTOR, "shopper.enroll", f"shopper:{e.inbox}",
                    {"consents": e.consents, "home_stores": e.home_stores, "via": "wallet"})

        e = await ShopperRights(service, accounts).enroll_admitted(
            req.consents, req.stores, source="wallet", audited=audited)
        out: dict[str, object] = msgspec.to_builtins(e)
        return json_answer(out | {"stores": e.home_stores}, 201, headers=_NO_STORE)

    return router
