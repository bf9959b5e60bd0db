"""The whole gateway on bleak's real BlueZ backend, against the fake BlueZ
(docs/architecture.md#bluez-and-bleak).

A :class:`~gateway.app.Gateway` configured with ``scanner.backend = "bluez"`` (its
scanner built by :func:`edge.factory.make_scanner` from the config, as ``aislecast
gateway run`` does) runs beside HQ and a phone on the private Mosquitto
(tests/harness.py). The fake BlueZ advertises the store's two fixed beacons, and the
shopper's rotating token as an Eddystone-EID frame from a device of its own
(``FakeBlueZ.advertise``). The receiver is the adapter: hci0 sits in the entrance.
Then faults are injected on the fake and the same gateway, never restarted, must hear
again, with the recoveries visible in ``gateway.metrics()``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakebluez import FakeBlueZ

from aislecast.apps.phone import Phone
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.schema import Beacon
from edge.bluez import BlueZScanner
from edge.factory import make_scanner
from edge.frames import EDDYSTONE_UUID
from gateway.app import Gateway
from gateway.config import load_config
from tests import harness
from tests.harness import STORE, Stack, enter_campaign, stack

pytest_plugins = ["fakebluez.fixtures"]
# real-time recovery bounds (the scanner's own clock): one worker with the other
# wall-clock checks (xdist group "realtime")
pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("realtime")]

# The fixed beacons of fakebluez.beacon_loop, planned at HQ in the entrance.
FAKE_BEACONS = [
    Beacon(id="fake-ibeacon", zone="entrance", uuid="f7826da6-4fa2-4e98-8024-bc5b71e0893e",
           major=1, minor=2),
    Beacon(id="fake-uid", zone="entrance", namespace="edd1ebeac04e5defa017",
           instance="0123456789ab"),
]
PHONE_ADDRESS = "5A:11:22:33:44:55"  # a random address, as phones advertise with
SCANNER: dict[str, Any] = {"backend": "bluez", "adapter": "hci0", "mode": "auto",
                           "receivers": {"hci0": "entrance"}}
RECOVERY_BOUND_S = 10.0  # the scanner's goal: adverts again within 10 s of a fault


async def until(pred: Callable[[], bool], within: float = 15.0) -> None:
    await harness.until(pred, timeout=within, step=0.05)


def eid_frame(token: bytes, tx_power_0m: int = -20) -> bytes:
    """An Eddystone-EID service-data frame: 0x30, tx power at 0 m, the 8-byte token."""
    return bytes([0x30, tx_power_0m & 0xFF]) + token


async def advertise_token(fake: FakeBlueZ, phone: Phone, hz: float = 10.0) -> None:
    """The phone's foreground service: its current token at ``hz`` (lost while off)."""
    while True:
        fake.advertise(PHONE_ADDRESS, rssi=-52,
                       service_data={EDDYSTONE_UUID: eid_frame(phone.token())})
        await fake.drain()
        await asyncio.sleep(1 / hz)  # the advertising interval: pacing, not a wait


def start_bluez_gateway(st: Stack) -> Gateway:
    """A gateway whose scanner comes from its config, like ``aislecast gateway run``."""
    cfg = load_config(st.gateway_config() | {"scanner": SCANNER})
    sc = cfg.scanner
    gw = Gateway(cfg, lambda cb: make_scanner(sc.backend, cb, adapter=sc.adapter, mode=sc.mode))
    st.gateways.append((gw, st.tg.create_task(gw.run(), name="test-gw-bluez")))
    return gw


async def hearing_again(gw: Gateway, since: float) -> float:
    """Seconds from ``since`` until the gateway's scanner hears adverts again."""
    def heard() -> bool:
        age = gw.scanner.stats()["last_advert_age_s"]
        return isinstance(age, float) and time.monotonic() - age > since
    await until(heard, RECOVERY_BOUND_S)
    return time.monotonic() - since


async def inject_faults(gw: Gateway, fake: FakeBlueZ) -> tuple[float, float]:
    """Power off/on, then silence; seconds until the gateway hears again after each."""
    # adapter powered off and on again by someone else: the scanner restarts discovery
    fake.power_off()
    # powered on again once the scanner saw it off, inside the grace (2 s) after which
    # the scanner would power it on itself
    await until(lambda: gw.scanner.stats()["state"] == "powered_off", 2.0)
    t_on = time.monotonic()
    fake.power_on()
    took_power = await hearing_again(gw, t_on)
    assert gw.metrics()["scanner_recoveries_restart"] >= 1
    # adverts stop with no error anywhere: the watchdog restarts discovery
    restarts = gw.metrics()["scanner_recoveries_restart"]
    t_mute = time.monotonic()
    fake.mute("restart")
    await until(lambda: gw.metrics()["scanner_recoveries_restart"] > restarts, RECOVERY_BOUND_S)
    return took_power, await hearing_again(gw, t_mute)


async def test_gateway_on_fake_bluez_offers_and_recovers(
    broker: MosquittoProcess, beacons: FakeBlueZ, tmp_path: Path
) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("entrance")]) as st:
        for b in FAKE_BEACONS:
            st.hq.service.upsert_beacon(STORE, b)
        e = st.hq.service.enroll(["offers"], [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = start_bluez_gateway(st)
        async with asyncio.timeout(10):
            await gw.ready.wait()
        assert isinstance(gw.scanner, BlueZScanner)
        gw_task = st.gateways[-1][1]
        entered: list[dict[str, Any]] = []
        gw.listeners.append(lambda kind, data: entered.append(data) if kind == "enter" else None)

        # 1. fixed beacons, then a shopper's token: zone_enter and an offer on the phone
        await until(lambda: gw.metrics()["fleet_beacons_heard"] == 2)
        phone = st.phone(e)
        async with phone:
            await phone.link.wait_connected(10)
            adv = asyncio.create_task(advertise_token(beacons, phone), name="test-phone-eid")
            try:
                await until(lambda: phone.stats.offers_received >= 1)
                assert entered[0] == {"inbox": e.inbox, "zone": "entrance", "reason": "offer"}
                [offer] = phone.offers.values()
                assert (offer.campaign, offer.zone) == ("c-entrance", "entrance")
                await until(lambda: st.hq.ingest.stats.by_kind.get("zone_enter", 0) >= 1)
                m = gw.metrics()
                assert m["scanner_adverts"] >= m["adverts_decoded"] > 0
                assert m["tokens_unknown"] == 0
                assert m["scanner_recoveries_restart"] == 0

                took_power, took_mute = await inject_faults(gw, beacons)
                decoded = gw.metrics()["adverts_decoded"]
                await until(lambda: gw.metrics()["adverts_decoded"] > decoded + 20)
            finally:
                adv.cancel()
        m = gw.metrics()
        print(f"\npower off/on: hearing again {took_power:.2f} s after power on; "
              f"silence: hearing again {took_mute:.2f} s after adverts stopped; "
              + ", ".join(f"{k}={v:g}" for k, v in sorted(m.items())
                          if k.startswith("scanner_") and v and k != "scanner_adverts"))
        assert not gw_task.done()  # recovered in place: never restarted
        assert m["scanner_restarts"] >= 2
        assert m["scanner_recoveries_restart"] >= 2
        assert m["scanner_recoveries_power_cycle"] == m["scanner_recoveries_recreate"] == 0
        assert m["scanner_last_advert_age_s"] < 1.0
        assert m["fleet_beacons_heard"] == 2
        assert phone.stats.offers_received == 1  # cap 1: the same visit, no second offer
        assert "scanner_state" not in m and "scanner_last_advert_monotonic" not in m
