"""Beacon fleet health: planned beacons heard by bytes, TLM by address, alerts on change."""

from __future__ import annotations

from aislecast.kernel.schema import Beacon
from edge.advert import Advertisement
from edge.frames import APPLE_COMPANY_ID, encode_eddystone_tlm, encode_eddystone_uid, encode_ibeacon
from gateway.adverts import AdvertRouter
from gateway.fleet import FleetHealth
from gateway.identity import IdentityResolver
from gateway.parts import GatewayCounters

UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"


def _router(fleet: FleetHealth) -> tuple[AdvertRouter, GatewayCounters]:
    c = GatewayCounters()
    return AdvertRouter(identity=IdentityResolver(), fleet=fleet, receivers={}, receiver_tx_power_1m=-59,
                        counters=c, observe=lambda *a: None), c


def test_heard_tlm_and_alerts() -> None:
    fleet = FleetHealth(unheard_after_s=30.0, low_battery_mv=2500)
    fleet.plan([Beacon(id="b1", zone="dairy", uuid=UUID, major=1, minor=2),
                Beacon(id="b2", zone="bakery", namespace="a1b2c3d4e5f6a7b8c9d0", instance="0000000000aa"),
                Beacon(id="b3", zone="drinks", uuid=UUID, major=1, minor=3)], ts=0.0)
    route, c = _router(fleet)
    cid, ib = encode_ibeacon(UUID, 1, 2, -59)
    assert cid == APPLE_COMPANY_ID
    route(Advertisement("AA:01", -70, 1.0, manufacturer_data={cid: ib}))
    su, uid = encode_eddystone_uid("a1b2c3d4e5f6a7b8c9d0", "0000000000aa", -20)
    route(Advertisement("AA:02", -64, 1.0, service_data={su: uid}))
    tu, tlm = encode_eddystone_tlm(2400, 21.5, 100, 3600.0)
    route(Advertisement("AA:02", -64, 2.0, service_data={tu: tlm}))  # b2's address: matched
    route(Advertisement("AA:99", -64, 2.0, service_data={tu: tlm}))  # unknown address
    assert c.adverts_decoded == 4
    b1, b2 = fleet.beacons["b1"], fleet.beacons["b2"]
    assert (b1.rssi, b1.last_seen, b1.heard) == (-70, 1.0, 1)
    assert (b2.battery_mv, b2.temperature_c, b2.uptime_s) == (2400, 21.5, 3600.0)
    assert fleet.tlm_unmatched == 1
    alerts = {a.beacon: a for a in fleet.check(10.0)}
    assert set(alerts) == {"b2"} and alerts["b2"].reason == "low_battery"
    assert alerts["b2"].detail["battery_mv"] == 2400
    alerts = {a.beacon: a.reason for a in fleet.check(35.0)}  # b3 never heard, b1 silent
    assert alerts == {"b1": "unheard", "b2": "unheard", "b3": "unheard"}
    assert fleet.check(36.0) == []  # said once, not every tick
    route(Advertisement("AA:01", -71, 40.0, manufacturer_data={cid: ib}))
    assert [(a.beacon, a.reason) for a in fleet.check(41.0)] == [("b1", "recovered")]
    m = fleet.metrics(41.0)
    assert m["beacons_planned"] == 3 and m["beacons_unheard"] == 2 and m["beacons_heard"] == 1
    assert m["beacon_battery_min_mv"] == 2400


def test_unplanned_beacon_is_ignored_and_replan_keeps_history() -> None:
    fleet = FleetHealth()
    fleet.plan([Beacon(id="b1", zone="dairy", uuid=UUID, major=1, minor=2)], ts=0.0)
    route, _ = _router(fleet)
    cid, other = encode_ibeacon(UUID, 9, 9, -59)
    route(Advertisement("AA:03", -60, 1.0, manufacturer_data={cid: other}))
    assert fleet.beacons["b1"].last_seen is None
    cid, ib = encode_ibeacon(UUID, 1, 2, -59)
    route(Advertisement("AA:01", -60, 1.0, manufacturer_data={cid: ib}))
    fleet.plan([Beacon(id="b1", zone="dairy", uuid=UUID, major=1, minor=2)], ts=5.0)
    assert fleet.beacons["b1"].last_seen == 1.0
