"""Fleet health read once for the whole fleet (hq.fleet_health.fleet_health) says what
the per-store read says, store by store, and raises the same alerts: several gateways
per store, offline and stale ones, a store only a gateway reported, beacons no gateway
reports, old bundles, unheard beacons, weak batteries."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from aislecast.kernel.schema import Beacon, BeaconHealth, GatewayState, Store, Zone, encode
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.board import GatewayBoard
from hq.db import HqDb
from hq.fleet_health import FleetRules, fleet_health, store_health
from hq.service import HqService

NOW = 1_767_225_600.0


def _report(board: GatewayBoard, store: str, gw: str, *,
            status: Literal["online", "offline"] = "online",
            bundle: int = 2, beacons: list[BeaconHealth] | None = None) -> None:
    board.on_state(store, gw, encode(GatewayState(v=1, gateway=gw, store=store, status=status,
                                                  version="1", bundle_version=bundle,
                                                  beacons=beacons)))


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[HqService, GatewayBoard]:
    svc = HqService(HqDb(f"sqlite:///{tmp_path}/hq.sqlite"),
                    Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    board = GatewayBoard()
    for i in range(12):
        s = f"s{i:02d}"
        svc.upsert_store(Store(id=s, name=s, tz="Europe/Berlin"))
        svc.db.execute("UPDATE stores SET bundle_version = 2 WHERE id = ?", (s,))
        for z in ("a", "b"):
            svc.upsert_zone(s, Zone(id=z, name=z))
            svc.upsert_beacon(s, Beacon(id=f"b{z}", zone=z, uuid="00" * 16))
        heard = [BeaconHealth(id="ba", zone="a", last_seen_age_s=1.0 + i,
                              battery_mv=2300 if i % 4 == 1 else 2900,
                              alert="unheard" if i % 3 == 0 else None)]
        _report(board, s, "gw-1", bundle=1 if i % 5 == 0 else 2, beacons=heard)
        if i % 2 == 0:  # a second gateway: hears the beacon too, or is offline
            again = [BeaconHealth(id="ba", zone="a", last_seen_age_s=0.5,
                                  alert="unheard" if i % 6 == 0 else None)]
            _report(board, s, "gw-2", status="offline" if i % 4 == 2 else "online", beacons=again)
    _report(board, "typo-store", "gw-x", bundle=0)  # only a gateway says it exists
    return svc, board


def test_the_fleet_read_is_the_per_store_read(fleet: tuple[HqService, GatewayBoard]) -> None:
    svc, board = fleet
    per_store = [store_health(svc, board, s, now=NOW) for s in sorted(board.stores())]
    assert fleet_health(svc, board, now=NOW) == per_store
    assert any(not b.reported for h in per_store for b in h.beacons)  # the planned-only rows
    # without them (what an alert round reads) the rest is unchanged
    lean = fleet_health(svc, board, now=NOW, planned=False)
    assert [[b for b in h.beacons if b.reported] for h in per_store] == [h.beacons for h in lean]


def test_the_alerts_are_the_per_store_alerts(fleet: tuple[HqService, GatewayBoard]) -> None:
    svc, board = fleet
    fast = FleetRules(svc, board, behind_after_s=0.0, clock=lambda: NOW)
    slow = FleetRules(svc, board, behind_after_s=0.0, clock=lambda: NOW)
    got = list(fast.conditions())
    per_store = [store_health(svc, board, s, now=NOW) for s in sorted(board.stores())]
    assert got == list(slow.judge(per_store, NOW))
    kinds = {c.kind for c in got}
    assert kinds == {"gateway_behind", "beacon_unheard", "beacon_low_battery"}, kinds
    assert "gateway:s05/gw-1" in {c.source for c in got if c.kind == "gateway_behind"}
