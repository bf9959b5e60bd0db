"""HTTP routes for the store registry: list, read, replace and delete stores, zones,
beacons, shelf tags and gateways (the create routes, ``POST /api/stores...``, are in
:mod:`hq.api`).

``PUT`` replaces the whole object (the body's ``id`` must be the path's); ``DELETE``
answers the deleted object, or 409 naming what still refers to it
(:class:`hq.registry.InUse`). Store staff see and change only their stores: another
store is 404 with the same body as a store that does not exist. Every change is
audit-logged and reaches gateways with the store's next bundle, as a POST's does.
A gateway's ``DELETE`` revokes its broker login (``aislecast hq gateways add``
provisions one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import GenericAlias
from typing import Any, Final

import msgspec
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi import Path as PathParam

from aislecast.kernel.acl import gateway_username
from aislecast.kernel.schema import Beacon, Store, Zone
from hq.accounts import Principal
from hq.credentials import BrokerUser
from hq.deps import PrincipalDep, ServiceDep, audit, json_answer
from hq.openapi import json_io, json_response
from hq.registry import (
    InUse,
    ShelfTag,
    TagWrite,
    delete_beacon,
    delete_store,
    delete_tag,
    delete_zone,
    get_beacon,
    get_tag,
    get_zone,
    tags,
    upsert_tag,
)
from hq.service import HqService, NotFound
from hq.strict import body_of

__all__ = ["IN_USE", "GatewayEntry", "mount_registry"]

#: The 409 of a delete that something still refers to (declared on every DELETE).
IN_USE: dict[int | str, dict[str, Any]] = {409: {
    "description": "still referred to: `detail` names the beacons, tags, campaigns or "
                   "gateways to change or delete first",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Refusal"}}}}}


class GatewayEntry(msgspec.Struct, frozen=True):
    """A gateway HQ has provisioned (a broker login), not merely one that reported in."""

    store: str
    gateway: str
    username: str
    created_at: float
    active: bool


def _store(service: HqService, p: Principal, store_id: str) -> Store:
    if not p.sees(store_id):
        raise NotFound("store", store_id)  # the same answer as for no such store
    return service.get_store(store_id)


def _same_id(path_id: str, body_id: str) -> None:
    if body_id != path_id:
        raise HTTPException(422, detail=[f"id: body id {body_id[:64]!r} is not {path_id[:64]!r}"])


def _gateway(u: BrokerUser) -> GatewayEntry:
    return GatewayEntry(u.store or "", u.gateway or "", u.username, u.created_at, u.active)


def _store_routes(router: APIRouter) -> None:
    @router.get("/api/stores", openapi_extra=json_response(list[Store], "the caller's stores"))
    async def list_stores(service: ServiceDep, p: PrincipalDep) -> Response:
        return json_answer([service.get_store(s) for s in service.store_ids() if p.sees(s)])

    @router.get("/api/stores/{store_id}", openapi_extra=json_response(Store, "the store"))
    async def read_store(store_id: str, service: ServiceDep, p: PrincipalDep) -> Response:
        return json_answer(_store(service, p, store_id))

    @router.put("/api/stores/{store_id}", openapi_extra=json_io(Store, Store, "the store as stored"))
    async def replace_store(store_id: str, request: Request, service: ServiceDep,
                            p: PrincipalDep) -> Response:
        store = await body_of(request, Store)
        _same_id(store_id, store.id)
        before = _store(service, p, store_id)
        service.upsert_store(store)
        audit(request, "store.update", f"store:{store_id}", before=before, after=store)
        return json_answer(store)

    @router.delete("/api/stores/{store_id}", responses=IN_USE,
                   openapi_extra=json_response(Store, "the deleted store"))
    async def remove_store(store_id: str, request: Request, service: ServiceDep,
                           p: PrincipalDep) -> Response:
        _store(service, p, store_id)
        store = await delete_store(service, store_id)
        audit(request, "store.delete", f"store:{store_id}", before=store)
        return json_answer(store)


@dataclass(frozen=True, slots=True)
class _Part:
    """A kind of object a store owns, keyed by its ``id`` (zones, beacons)."""

    name: str  # "zone": the audit actions, the path parameter ``zone_id``
    plural: str
    cls: type[Any]
    items: Callable[[HqService, str], list[Any]]
    one: Callable[[HqService, str, str], Any]
    upsert: Callable[[HqService, str, Any], None]
    delete: Callable[[HqService, str, str], Any]
    in_use: bool  # its delete can be refused with 409


_PARTS: Final = (
    _Part("zone", "zones", Zone, HqService.zones, get_zone, HqService.upsert_zone, delete_zone, True),
    _Part("beacon", "beacons", Beacon, HqService.beacons, get_beacon, HqService.upsert_beacon,
          delete_beacon, False),
)


def _part_routes(router: APIRouter, part: _Part) -> None:
    """GET (list, one), PUT and DELETE of ``part`` under its store."""
    base = f"/api/stores/{{store_id}}/{part.plural}"
    item = f"{base}/{{{part.name}_id}}"
    key = PathParam(alias=f"{part.name}_id")  # the path says zone_id, beacon_id
    answers = IN_USE if part.in_use else None

    @router.get(base, name=f"list_{part.plural}",
                openapi_extra=json_response(GenericAlias(list, (part.cls,)),
                                              f"the store's {part.plural}"))
    async def list_items(store_id: str, service: ServiceDep, p: PrincipalDep) -> Response:
        _store(service, p, store_id)
        return json_answer(part.items(service, store_id))

    @router.get(item, name=f"read_{part.name}",
                openapi_extra=json_response(part.cls, f"the {part.name}"))
    async def read_item(store_id: str, service: ServiceDep, p: PrincipalDep,
                        item_id: str = key) -> Response:
        _store(service, p, store_id)
        return json_answer(part.one(service, store_id, item_id))

    @router.put(item, name=f"replace_{part.name}",
                openapi_extra=json_io(part.cls, part.cls, f"the {part.name} as stored"))
    async def replace_item(store_id: str, request: Request, service: ServiceDep,
                           p: PrincipalDep, item_id: str = key) -> Response:
        obj = await body_of(request, part.cls)
        _same_id(item_id, obj.id)
        _store(service, p, store_id)
        before = next((o for o in part.items(service, store_id) if o.id == item_id), None)
        part.upsert(service, store_id, obj)
        audit(request, f"{part.name}.upsert", f"{part.name}:{store_id}/{item_id}",
              before=before, after=obj)
        return json_answer(obj)

    @router.delete(item, name=f"remove_{part.name}", responses=answers,
                   openapi_extra=json_response(part.cls, f"the deleted {part.name}"))
    async def remove_item(store_id: str, request: Request, service: ServiceDep,
                          p: PrincipalDep, item_id: str = key) -> Response:
        _store(service, p, store_id)
        obj = part.delete(service, store_id, item_id)
        audit(request, f"{part.name}.delete", f"{part.name}:{store_id}/{item_id}", before=obj)
        return json_answer(obj)


def _tag_and_gateway_routes(router: APIRouter) -> None:
    base = "/api/stores/{store_id}/tags"

    @router.get(base, openapi_extra=json_response(list[ShelfTag], "the store's shelf tags"))
    async def list_tags(store_id: str, service: ServiceDep, p: PrincipalDep) -> Response:
        _store(service, p, store_id)
        return json_answer(tags(service, store_id))

    @router.get(base + "/{tag_id}", openapi_extra=json_response(ShelfTag, "the shelf tag"))
    async def read_tag(store_id: str, tag_id: str, service: ServiceDep,
                       p: PrincipalDep) -> Response:
        _store(service, p, store_id)
        return json_answer(get_tag(service, store_id, tag_id))

    @router.put(base + "/{tag_id}", openapi_extra=json_io(TagWrite, ShelfTag, "the tag as registered"))
    async def register_tag(store_id: str, tag_id: str, request: Request, service: ServiceDep,
                           p: PrincipalDep) -> Response:
        w = await body_of(request, TagWrite)
        _store(service, p, store_id)
        try:
            before: ShelfTag | None = get_tag(service, store_id, tag_id)
        except NotFound:
            before = None
        tag = upsert_tag(service, store_id, tag_id, w, p.actor)
        audit(request, "tag.register", f"tag:{store_id}/{tag_id}", before=before, after=tag)
        return json_answer(tag)

    @router.delete(base + "/{tag_id}", openapi_extra=json_response(ShelfTag, "the deleted tag"))
    async def remove_tag(store_id: str, tag_id: str, request: Request, service: ServiceDep,
                         p: PrincipalDep) -> Response:
        _store(service, p, store_id)
        tag = delete_tag(service, store_id, tag_id)
        audit(request, "tag.delete", f"tag:{store_id}/{tag_id}", before=tag)
        return json_answer(tag)

    gws = "/api/stores/{store_id}/gateways"

    def one(service: HqService, store_id: str, gateway_id: str) -> GatewayEntry:
        user = service.credentials.get(gateway_username(store_id, gateway_id))
        if user is None or not user.active or (user.kind, user.store, user.gateway) != (
                "gateway", store_id, gateway_id):
            raise NotFound("gateway", gateway_id)
        return _gateway(user)

    @router.get(gws, openapi_extra=json_response(list[GatewayEntry],
                                                 "the store's provisioned gateways"))
    async def list_gateways(store_id: str, service: ServiceDep, p: PrincipalDep) -> Response:
        _store(service, p, store_id)
        return json_answer([_gateway(u) for u in service.credentials.users("gateway")
                      if u.store == store_id])

    @router.get(gws + "/{gateway_id}", openapi_extra=json_response(GatewayEntry, "the gateway"))
    async def read_gateway(store_id: str, gateway_id: str, service: ServiceDep,
                           p: PrincipalDep) -> Response:
        _store(service, p, store_id)
        return json_answer(one(service, store_id, gateway_id))

    @router.delete(gws + "/{gateway_id}", openapi_extra=json_response(
        GatewayEntry, "the gateway, its broker login revoked"))
    async def remove_gateway(store_id: str, gateway_id: str, request: Request,
                             service: ServiceDep, p: PrincipalDep) -> Response:
        _store(service, p, store_id)
        gw = one(service, store_id, gateway_id)
        service.credentials.revoke(gw.username)  # its bundle drops it at the next publish
        audit(request, "gateway.revoke", f"gateway:{store_id}/{gateway_id}", before=gw)
        return json_answer(msgspec.structs.replace(gw, active=False))


def mount_registry(app: FastAPI) -> None:
    """Add the registry routes to ``app`` and answer :class:`InUse` with 409."""
    router = APIRouter()
    _store_routes(router)
    for part in _PARTS:
        _part_routes(router, part)
    _tag_and_gateway_routes(router)
    app.include_router(router)

    @app.exception_handler(InUse)
    async def _in_use(request: Request, exc: InUse) -> Response:
        return json_answer({"detail": str(exc), "reason": "in_use", "users": exc.users}, 409)

