"""The web wallet's own HTTP routes at HQ (docs/architecture.md#wallet), outside ``/api``.

A browser cannot hold the ``wallet`` service token that ``POST /api/shoppers`` needs
(anyone could read it from the page), so the wallet enrols at ``POST /wallet/enroll``:
public, like a sign-up form, and limited per client address
(:class:`hq.login_limits.LoginLimiter` with every enrolment counted, 429 past the
bound). After that the shopper *is* its broker login: ``POST /wallet/opt-out`` takes
``Authorization: Basic base64(inbox:broker_password)``, checked against the hash in
HQ's credential registry (:mod:`hq.credentials`); a wrong or revoked login is 401 and
says nothing about whether the inbox exists.

``GET /wallet/stores`` lists store ids and names only (home-store choice);
``GET /wallet/config`` tells the page where the broker's secure WebSockets are.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Final

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response

from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import decode
from hq.audit import AuditLog
from hq.broker_auth import CredentialError, verify_password
from hq.deps import ServiceDep
from hq.login_limits import LoginLimiter, LoginLimits
from hq.refusals import Refused
from hq.service import HqService

__all__ = ["PURPOSES", "WALLET_ACTOR", "WalletEnrollRequest", "WalletSettings", "WalletState",
           "shopper_of",
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


@dataclass(frozen=True, slots=True)
class WalletSettings:
    """``broker_url``: the broker's secure WebSockets as the browser reaches them
    (``wss://broker.example:8884/mqtt``); None: the page says the wallet is not set up."""

    broker_url: str | None = None
    enrol_limits: LoginLimits = _ENROL_LIMITS


class WalletEnrollRequest(msgspec.Struct, forbid_unknown_fields=True):
    consents: list[str]
    stores: list[str] = msgspec.field(default_factory=list)


def _json(obj: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


@dataclass(frozen=True, slots=True)
class WalletState:
    """What the wallet's routes read from ``app.state.wallet`` (set by ``mount_wallet``)."""

    settings: WalletSettings
    limiter: LoginLimiter

    @classmethod
    def of(cls, request: Request) -> WalletState:
        got = request.app.state.wallet
        assert isinstance(got, cls), "hq.wallet.mount_wallet() sets app.state.wallet"
        return got


def _record(request: Request, actor: str, action: str, obj: str, after: object) -> None:
    log = request.app.state.audit
    assert isinstance(log, AuditLog), "create_app() sets app.state.audit"
    log.record(actor, action, obj, after=after)


def _basic(request: Request) -> tuple[str, str]:
    raw = request.headers.get("authorization", "")
    scheme, _, blob = raw.partition(" ")
    try:
        user, sep, password = base64.b64decode(blob.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        sep = user = password = ""
    if scheme.lower() != "basic" or not sep or not user or not password:
        raise Refused(401, "no_shopper_credential",
                      "send 'Authorization: Basic base64(inbox:broker_password)' "
                      "(the login your enrolment returned)", headers=[("WWW-Authenticate", "Basic")])
    return user, password


def _check_login(service: HqService, inbox: str, password: str) -> bool:
    user = service.credentials.get(inbox)
    if user is None or not user.active or user.kind != "phone":
        return False
    try:
        return verify_password(password, user.password_hash)
    except CredentialError:
        return False


async def shopper_of(request: Request, service: HqService) -> str:
    """The inbox whose broker login the request carries (401 for none or a wrong one)."""
    inbox, password = _basic(request)
    if not await asyncio.to_thread(_check_login, service, inbox, password):
        raise Refused(401, "bad_shopper_credential",
                      "that inbox and broker password do not log in (wrong, revoked or erased)",
                      caller=f"shopper:{inbox[:64]}")
    return inbox


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
        return _json({"broker_url": s.broker_url, "purposes": list(PURPOSES)})

    @router.get("/wallet/stores", include_in_schema=False)
    async def stores(service: ServiceDep) -> Response:
        rows = await asyncio.to_thread(
            service.db.query, "SELECT id, name FROM stores ORDER BY name, id")
        return _json({"stores": [{"id": r[0], "name": r[1]} for r in rows]})

    @router.post("/wallet/enroll", status_code=201, include_in_schema=False)
    async def enroll(request: Request, service: ServiceDep) -> Response:
        address = request.client.host if request.client else "unknown"
        if (verdict := WalletState.of(request).limiter.attempt("enrol", address)) is not None:
            raise Refused(429, "enrol_rate_limited",
                          f"too many enrolments from this address; try again in "
                          f"{verdict.retry_after_s} s",
                          headers=[("Retry-After", str(verdict.retry_after_s))])
        req = _enroll_body(await request.body(), set(service.store_ids()))

        def enroll_audited() -> dict[str, object]:
            e = service.enroll(req.consents)
            log.info("shopper enrolled in the web wallet", inbox=e.inbox, consents=e.consents,
                     stores=req.stores)
            _record(request, WALLET_ACTOR, "shopper.enroll", f"shopper:{e.inbox}",
                    {"consents": e.consents, "via": "wallet"})
            out: dict[str, object] = msgspec.to_builtins(e)
            return out | {"stores": req.stores}

        return _json(await asyncio.to_thread(enroll_audited), 201)

    @router.post("/wallet/opt-out", include_in_schema=False)
    async def opt_out(request: Request, service: ServiceDep) -> Response:
        inbox = await shopper_of(request, service)
        await service.opt_out(inbox)
        log.info("shopper opted out in the web wallet", inbox=inbox)
        _record(request, f"shopper:{inbox}", "shopper.opt_out", f"shopper:{inbox}", {"opted_out": True})
        return _json({"inbox": inbox, "opted_out": True})

    return router
