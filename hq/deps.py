"""What HQ's HTTP handlers depend on, read from ``app.state`` (set once by
:func:`hq.api.create_app`, the wallet's by :func:`hq.wallet.mount_wallet`), so routes take
their services as FastAPI dependencies and nothing is global: every test app and every
HqServer in a process has its own.

:func:`state_of` reads one service by name and checks its class; :func:`state_dep` makes
the FastAPI dependency that does it. The dependencies are ``async def`` although they only
read attributes: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
per dependency per request (a bare authenticated GET, called in-process, took 0.7-1.0 ms
with them and 0.4 ms without).

:func:`principal_of` is the caller that :class:`hq.auth.AuthMiddleware` identified;
:func:`audit` writes a handler's audit entry as that caller; :func:`json_answer` is a
handler's JSON answer (msgspec-encoded, ``application/json``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any, TypeVar

import msgspec
from fastapi import Depends, Request, Response

from hq.accounts import Accounts, Principal
from hq.audit import AuditLog
from hq.ingest import Ingest
from hq.service import HqService

__all__ = [
    "AccountsDep",
    "IngestDep",
    "PrincipalDep",
    "ServiceDep",
    "accounts_of",
    "audit",
    "ingest_of",
    "json_answer",
    "principal_of",
    "service_of",
    "state_dep",
    "state_of",
]

T = TypeVar("T")


def state_of(request: Request, name: str, cls: type[T]) -> T:
    """``request.app.state.<name>``, which must be a ``cls`` (building the app sets it)."""
    got = getattr(request.app.state, name)
    assert isinstance(got, cls), f"building the app sets app.state.{name} to a {cls.__name__}"
    return got


def state_dep(name: str, cls: type[T]) -> Callable[[Request], Coroutine[Any, Any, T]]:
    """The FastAPI dependency ``Depends(state_dep(name, cls))``: :func:`state_of` per request."""
    async def dependency(request: Request) -> T:
        return state_of(request, name, cls)

    dependency.__name__ = dependency.__qualname__ = f"{name}_of"
    return dependency


service_of = state_dep("service", HqService)
ingest_of = state_dep("ingest", Ingest)
accounts_of = state_dep("accounts", Accounts)


def json_answer(obj: object, status: int = 200, *,
                headers: Mapping[str, str] | None = None) -> Response:
    """``obj`` as msgspec's JSON with ``status`` (and extra ``headers``, e.g. ``Cache-Control``)."""
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json",
                    headers=headers)


def _principal(request: Request) -> Principal:
    p = getattr(request.state, "principal", None)
    assert isinstance(p, Principal), "AuthMiddleware identifies every /api caller"
    return p


async def principal_of(request: Request) -> Principal:
    return _principal(request)


def audit(request: Request, action: str, obj: str, *, before: object = None,
          after: object = None) -> None:
    """Record the request's state change as its caller (once per request is the rule);
    a handler may call it from the worker thread that makes the change."""
    log = state_of(request, "audit", AuditLog)
    log.record(_principal(request).actor, action, obj, before=before, after=after)
    request.state.audited = True


ServiceDep = Annotated[HqService, Depends(service_of)]
IngestDep = Annotated[Ingest, Depends(ingest_of)]
AccountsDep = Annotated[Accounts, Depends(accounts_of)]
PrincipalDep = Annotated[Principal, Depends(principal_of)]
