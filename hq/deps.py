"""What HQ's HTTP handlers depend on, read from ``app.state`` (set once by
:func:`hq.api.create_app`), so routes take their services as FastAPI dependencies and
nothing is global: every test app and every HqServer in a process has its own."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hq.ingest import Ingest
from hq.service import HqService

__all__ = ["IngestDep", "ServiceDep", "ingest_of", "service_of"]


def service_of(request: Request) -> HqService:
    service = request.app.state.service
    assert isinstance(service, HqService), "create_app() sets app.state.service"
    return service


def ingest_of(request: Request) -> Ingest:
    ingest = request.app.state.ingest
    assert isinstance(ingest, Ingest), "create_app() sets app.state.ingest"
    return ingest


ServiceDep = Annotated[HqService, Depends(service_of)]
IngestDep = Annotated[Ingest, Depends(ingest_of)]
