"""HQ's store registry beyond upserts: read one, delete, and the references between them.

A store owns its zones, beacons and shelf tags; gateways log in for a store
(:mod:`hq.credentials`); campaigns target stores and their triggers name zones. The
checks here keep those references whole:

- a beacon or tag in a zone the store does not have is refused (422 naming the zone
  and the store's zones: :meth:`hq.service.HqService.zone_problems`);
- deleting a zone that beacons, tags or campaigns still name is refused with
  :class:`InUse` (409 naming them); so is deleting a store that gateways log in for or
  campaigns target. A store's zones, beacons and tags go with it.

Shelf tags (``tags`` table, migration ``m0008_tags``) are registered when staff write
them (``aislecast tags write --hq ... --store ...``): which tag, where, which campaign
and short link, when and by whom.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TypeVar

import msgspec

from aislecast.kernel import topics
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import Beacon, Store, Zone
from hq.service import HqService, NotFound, check_id, check_text

__all__ = ["InUse", "ShelfTag", "TagWrite", "delete_beacon", "delete_store", "delete_tag",
           "delete_zone", "get_beacon", "get_tag", "get_zone", "tags", "upsert_tag"]

log = get_logger(__name__)


class InUse(Exception):
    """``what`` ``key`` cannot be deleted: ``users`` (``"beacon:b1"``, ``"campaign:c1"``,
    ``"gateway:gw-1"``) still refer to it. HQ answers 409 naming them."""

    def __init__(self, what: str, key: str, users: list[str]) -> None:
        super().__init__(f"{what} {key!r} is still used by {', '.join(users)}: "
                         "change or delete those first")
        self.what = what
        self.key = key
        self.users = users


class TagWrite(msgspec.Struct, frozen=True):
    """``PUT /api/stores/{store_id}/tags/{tag_id}``: a shelf tag as written by staff."""

    zone: str | None = None
    product: str | None = None
    campaign: str | None = None
    code: str | None = None  # the short link code the tag carries
    url: str | None = None  # the URL written on the tag
    written_at: float | None = None  # unix time; default: when HQ got this


class ShelfTag(msgspec.Struct, frozen=True):
    """A registered shelf tag: ``written_by`` is the actor who registered it."""

    id: str
    store: str
    written_at: float
    written_by: str
    zone: str | None = None
    product: str | None = None
    campaign: str | None = None
    code: str | None = None
    url: str | None = None


_Row = TypeVar("_Row", Zone, Beacon)
_TAG_COLUMNS = "id, store, written_at, written_by, zone, product, campaign, code, url"


def _by_id(rows: Iterable[_Row], kind: str, row_id: str) -> _Row:
    found = next((r for r in rows if r.id == row_id), None)
    if found is None:
        raise NotFound(kind, row_id)
    return found


def get_zone(service: HqService, store: str, zone_id: str) -> Zone:
    service.get_store(store)
    return _by_id(service.zones(store), "zone", zone_id)


def get_beacon(service: HqService, store: str, beacon_id: str) -> Beacon:
    service.get_store(store)
    return _by_id(service.beacons(store), "beacon", beacon_id)


def _zone_users(service: HqService, store: str, zone_id: str) -> list[str]:
    users = [f"beacon:{b.id}" for b in service.beacons(store) if b.zone == zone_id]
    users += [f"tag:{t.id}" for t in tags(service, store) if t.zone == zone_id]
    users += [f"campaign:{c.id}" for c in service.campaigns(store)
              if any(zone_id in t.zones for t in c.all_triggers())]
    return users


def delete_zone(service: HqService, store: str, zone_id: str) -> Zone:
    """Delete a zone nothing names any more; :class:`InUse` (409) else."""
    zone = get_zone(service, store, zone_id)
    users = _zone_users(service, store, zone_id)
    if users:
        raise InUse("zone", zone_id, users)
    service.db.execute("DELETE FROM zones WHERE store = ? AND id = ?", (store, zone_id))
    return zone


def delete_beacon(service: HqService, store: str, beacon_id: str) -> Beacon:
    beacon = get_beacon(service, store, beacon_id)
    service.db.execute("DELETE FROM beacons WHERE store = ? AND id = ?", (store, beacon_id))
    return beacon


async def delete_store(service: HqService, store_id: str) -> Store:
    """Delete a store no gateway logs in for and no campaign targets, with its zones,
    beacons and tags, and clear its retained bundle; :class:`InUse` (409) else."""
    store = service.get_store(store_id)
    users = [f"gateway:{g}" for g in service.credentials.gateways_of(store_id)]
    users += [f"campaign:{c.id}" for c in service.campaigns(store_id)]
    if users:
        raise InUse("store", store_id, users)
    with service.db.transaction():
        for table in ("zones", "beacons", "tags"):
            service.db.execute(f"DELETE FROM {table} WHERE store = ?", (store_id,))  # noqa: S608
        service.db.execute("DELETE FROM stores WHERE id = ?", (store_id,))
    if service.link is not None:  # an empty retained message clears the last bundle
        try:
            await service.link.publish(topics.bundle(store_id), b"", qos=1, retain=True)
        except Exception:  # noqa: BLE001 - the store is gone either way; say so
            log.warning("retained bundle of a deleted store not cleared", store=store_id)
    return store


def _tag(row: tuple[object, ...]) -> ShelfTag:
    return ShelfTag(str(row[0]), str(row[1]), float(row[2]), str(row[3]),  # type: ignore[arg-type]
                    *(None if v is None else str(v) for v in row[4:]))


def tags(service: HqService, store: str) -> list[ShelfTag]:
    rows = service.db.query(f"SELECT {_TAG_COLUMNS} FROM tags WHERE store = ? ORDER BY id",  # noqa: S608
                            (store,))
    return [_tag(tuple(r)) for r in rows]


def get_tag(service: HqService, store: str, tag_id: str) -> ShelfTag:
    service.get_store(store)
    row = service.db.one(f"SELECT {_TAG_COLUMNS} FROM tags WHERE store = ? AND id = ?",  # noqa: S608
                         (store, tag_id))
    if row is None:
        raise NotFound("tag", tag_id)
    return _tag(tuple(row))


def upsert_tag(service: HqService, store: str, tag_id: str, w: TagWrite, actor: str) -> ShelfTag:
    """Register (or re-register) a shelf tag; 422 for a zone or campaign HQ does not have."""
    service.get_store(store)
    problems = check_id("id", tag_id) + check_text("", w, limit=500)
    if w.zone is not None:
        problems += service.zone_problems(store, "zone", w.zone)
    if w.campaign is not None:
        try:
            service.get_campaign(w.campaign)
        except NotFound:
            problems.append(f"campaign: no campaign {w.campaign[:64]!r} (GET /api/campaigns)")
    service.refuse("tag", problems)
    tag = ShelfTag(tag_id, store, time.time() if w.written_at is None else w.written_at, actor,
                   w.zone, w.product, w.campaign, w.code, w.url)
    service.db.execute(
        f"INSERT INTO tags ({_TAG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        " ON CONFLICT (store, id) DO UPDATE SET written_at = excluded.written_at,"
        " written_by = excluded.written_by, zone = excluded.zone, product = excluded.product,"
        " campaign = excluded.campaign, code = excluded.code, url = excluded.url",
        (tag.id, store, tag.written_at, actor, tag.zone, tag.product, tag.campaign, tag.code,
         tag.url))
    return tag


def delete_tag(service: HqService, store: str, tag_id: str) -> ShelfTag:
    tag = get_tag(service, store, tag_id)
    service.db.execute("DELETE FROM tags WHERE store = ? AND id = ?", (store, tag_id))
    return tag
