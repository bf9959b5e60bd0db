"""What HQ's HTTP handlers depend on, read from ``app.state`` (set once by
:func:`hq.api.create_app`), so routes take their services as FastAPI dependencies and
nothing is global: every test app and every HqServer in a process has its own.
The dependencies are ``async def`` although they only read attributes: FastAPI runs a
plain ``def`` dependency in its thread pool, a thread hop per dependency per request
(a bare authenticated GET, called in-process, took 0.7-1.0 ms with them and 0.4 ms without).

:func:`principal_of` is the caller that :class:`hq.auth.AuthMiddleware` identified;
:func:`audit` writes a handler's audit entry as that caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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
    "principal_of",
    "service_of",
]


async def service_of(request: Request) -> HqService:
    service = request.app.state.service
    assert isinstance(service, HqService), "create_app() sets app.state.service"
    return service


async def ingest_of(request: Request) -> Ingest:
    ingest = request.app.state.ingest
    assert isinstance(ingest, Ingest), "create_app() sets app.state.ingest"
    return ingest


async def accounts_of(request: Request) -> Accounts:
    accounts = request.app.state.accounts
    assert isinstance(accounts, Accounts), "create_app() sets app.state.accounts"
    return accounts


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
    log = request.app.state.audit
    assert isinstance(log, AuditLog), "create_app() sets app.state.audit"
    log.record(_principal(request).actor, action, obj, before=before, after=after)
    request.state.audited = True


ServiceDep = Annotated[HqService, Depends(service_of)]
IngestDep = Annotated[Ingest, Depends(ingest_of)]
AccountsDep = Annotated[Accounts, Depends(accounts_of)]
PrincipalDep = Annotated[Principal, Depends(principal_of)]
