"""Store health at HQ: the beacons and gateways of one store, from the gateways' state
reports (:class:`hq.board.GatewayBoard`), for ``GET /api/stores/{store_id}/health``, the
console's store health table and alerts (:class:`FleetRules`, a source of
:class:`hq.alerts.AlertWatch`).

Each gateway's retained state carries a bounded beacon summary
(:class:`aislecast.kernel.schema.BeaconHealth`, at most
:data:`~aislecast.kernel.schema.MAX_REPORTED_BEACONS`). Several gateways may hear one
beacon: a beacon's row takes the freshest sighting among the online gateways, and it is
unheard when every online gateway that reports it says so. Beacons registered at HQ that
no online gateway reports are listed with ``reported: false``.

Alerts (per store): ``beacon_unheard`` and ``beacon_low_battery`` (TLM battery under
:data:`LOW_BATTERY_MV`, or the gateway's own low-battery judgement), both warnings, and
``gateway_behind`` (warning) when an online gateway's applied bundle version stays below
the store's current one at HQ for :data:`BEHIND_AFTER_S`. ``gateway_offline`` is
:mod:`hq.alerts`' own. An alert round reads the database once for the whole fleet
(:func:`fleet_health`: every store's bundle version in one query), not per store;
``aislecast bench fleet`` measures it against the per-store way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from fastapi import APIRouter, Request, Response

from aislecast.kernel.schema import Beacon, BeaconHealth, decode
from hq.alerts import STALE_AFTER_S, Condition
from hq.board import GatewayBoard, GatewayView
from hq.deps import PrincipalDep, ServiceDep, json_answer, state_of
from hq.fleet_schema import BeaconRow, GatewayRow, StoreHealth
from hq.openapi import json_response
from hq.service import HqService, NotFound

__all__ = ["BEHIND_AFTER_S", "LOW_BATTERY_MV", "FleetRules", "battery_percent", "fleet_health",
           "fleet_router", "store_health"]

LOW_BATTERY_MV: Final = 2500  # coin cells fall off a cliff below ~2,500 mV
# a publish reaches every gateway in seconds; two minutes behind is a stuck gateway
BEHIND_AFTER_S: Final = 120.0
_EMPTY_MV, _FULL_MV = 2000, 3000  # a coin cell's useful range, for the percent estimate


def battery_percent(mv: int) -> int:
    return max(0, min(100, round((mv - _EMPTY_MV) * 100 / (_FULL_MV - _EMPTY_MV))))


def _status(v: GatewayView, now: float, stale_after_s: float) -> str:
    if v.status == "online" and v.state_at is not None and now - v.state_at > stale_after_s:
        return "stale"
    return v.status


def _hq_version(service: HqService, store: str) -> int:
    row = service.db.one("SELECT bundle_version FROM stores WHERE id = ?", (store,))
    return 0 if row is None else int(row[0])


def store_health(service: HqService, board: GatewayBoard, store: str, *, now: float,
                 stale_after_s: float = STALE_AFTER_S,
                 low_battery_mv: int = LOW_BATTERY_MV) -> StoreHealth:
    """One store's health (``GET /api/stores/{store_id}/health``): two small queries."""
    return _health(store, _hq_version(service, store), board.gateways(store), board,
                   service.beacons(store), now=now, stale_after_s=stale_after_s,
                   low_battery_mv=low_battery_mv)


def fleet_health(service: HqService, board: GatewayBoard, *, now: float, planned: bool = True,
                 stale_after_s: float = STALE_AFTER_S,
                 low_battery_mv: int = LOW_BATTERY_MV) -> list[StoreHealth]:
    """Every store the board knows, by id, as :func:`store_health` says each: one query
    for HQ's bundle versions and (``planned``) one for the registered beacons, however
    many stores; the board's gateways grouped by store in one pass. ``planned=False``
    leaves out the beacons no gateway reports (rows that raise no alert)."""
    versions = {str(r[0]): int(r[1]) for r in service.db.query("SELECT id, bundle_version FROM stores")}
    views: dict[str, list[GatewayView]] = {}
    for v in board.views():
        views.setdefault(v.store, []).append(v)
    registered: dict[str, list[Beacon]] = {}
    if planned:
        for store, body in service.db.query("SELECT store, body FROM beacons ORDER BY store, id"):
            registered.setdefault(str(store), []).append(decode(body, Beacon))
    return [_health(store, versions.get(store, 0), sorted(views[store], key=lambda v: v.gateway),
                    board, registered.get(store, []), now=now, stale_after_s=stale_after_s,
                    low_battery_mv=low_battery_mv) for store in sorted(views)]


def _health(store: str, version: int, views: list[GatewayView], board: GatewayBoard,
            planned: list[Beacon], *, now: float, stale_after_s: float,
            low_battery_mv: int) -> StoreHealth:
    gateways: list[GatewayRow] = []
    best: dict[str, tuple[str, BeaconHealth]] = {}
    unheard_votes: dict[str, list[bool]] = {}
    for v in views:
        status = _status(v, now, stale_after_s)
        reported, omitted = board.beacons.get((store, v.gateway), ([], 0))
        gateways.append(GatewayRow(
            gateway=v.gateway, status=status, bundle_version=v.bundle_version,
            behind=status == "online" and v.bundle_version < version,
            state_age_s=None if v.state_at is None else round(now - v.state_at, 1),
            beacons_omitted=omitted))
        if status != "online":
            continue
        for b in reported:
            unheard_votes.setdefault(b.id, []).append(b.alert == "unheard")
            old = best.get(b.id)
            if old is None or _fresher(b, old[1]):
                best[b.id] = (v.gateway, b)
    rows: dict[str, BeaconRow] = {}
    for bid, (gw, b) in best.items():
        low = b.alert == "low_battery" or (b.battery_mv is not None
                                           and 0 < b.battery_mv < low_battery_mv)
        rows[bid] = BeaconRow(
            id=bid, zone=b.zone, reported=True, heard_by=gw, last_seen_age_s=b.last_seen_age_s,
            rssi=b.rssi, battery_mv=b.battery_mv,
            battery_percent=None if b.battery_mv is None else battery_percent(b.battery_mv),
            unheard=all(unheard_votes[bid]), low_battery=low)
    for beacon in planned:
        if beacon.id not in rows:
            rows[beacon.id] = BeaconRow(id=beacon.id, zone=beacon.zone, reported=False)
    return StoreHealth(store=store, now=now, bundle_version=version, gateways=gateways,
                       beacons=sorted(rows.values(), key=lambda r: r.id))


def _fresher(a: BeaconHealth, b: BeaconHealth) -> bool:
    if a.last_seen_age_s is None:
        return False
    return b.last_seen_age_s is None or a.last_seen_age_s < b.last_seen_age_s


@dataclass(slots=True)
class FleetRules:
    """Beacon and bundle-version alerts over every store the board knows."""

    service: HqService
    board: GatewayBoard
    behind_after_s: float = BEHIND_AFTER_S
    clock: Callable[[], float] = time.time
    _behind_since: dict[tuple[str, str], float] = field(default_factory=dict)

    def conditions(self) -> Iterator[Condition]:
        """This round's alerts: the whole fleet read at once (:func:`fleet_health`; the
        beacons no gateway reports are left out, they raise nothing)."""
        now = self.clock()
        return self.judge(fleet_health(self.service, self.board, now=now, planned=False), now)

    def judge(self, fleet: Iterable[StoreHealth], now: float) -> Iterator[Condition]:
        """The alerts ``fleet`` (stores' health, by store id) raises at ``now``."""
        behind_now: set[tuple[str, str]] = set()
        for h in fleet:
            store = h.store
            for g in h.gateways:
                if not g.behind:
                    continue
                key = (store, g.gateway)
                behind_now.add(key)
                since = self._behind_since.setdefault(key, now)
                if now - since >= self.behind_after_s:
                    yield Condition(
                        f"gateway:{store}/{g.gateway}", "gateway_behind", "warning",
                        f"gateway {store}/{g.gateway} runs bundle v{g.bundle_version}, HQ's is "
                        f"v{h.bundle_version}: it refuses or cannot receive bundles (check "
                        "`aislecast gateway health` on its host)", store)
            for b in h.beacons:
                src = f"beacon:{store}/{b.id}"
                if b.unheard:
                    yield Condition(src, "beacon_unheard", "warning",
                                    f"beacon {b.id} (zone {b.zone}) in store {store} is not heard "
                                    "by any gateway: check it is in place and its battery", store)
                if b.low_battery:
                    yield Condition(src, "beacon_low_battery", "warning",
                                    f"beacon {b.id} (zone {b.zone}) in store {store} reports "
                                    f"{b.battery_mv} mV: replace its battery", store)
        for key in set(self._behind_since) - behind_now:
            del self._behind_since[key]


def fleet_router() -> APIRouter:
    """``GET /api/stores/{store_id}/health``: store staff see their own stores only."""
    router = APIRouter()

    @router.get("/api/stores/{store_id}/health", openapi_extra=json_response(
        StoreHealth, "the store's gateways and beacons as their state reports say"))
    async def health(store_id: str, request: Request, service: ServiceDep,
                     p: PrincipalDep) -> Response:
        if not p.sees(store_id):
            raise NotFound("store", store_id)  # the same answer as for no such store
        service.get_store(store_id)
        board = state_of(request, "board", GatewayBoard)
        return json_answer(store_health(service, board, store_id, now=time.time()))

    return router
