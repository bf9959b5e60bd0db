"""BlueZScanner on bleak's real BlueZ backend, fake BlueZ (docs/architecture.md#bluez-and-bleak)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fakebluez import FakeBlueZ, settle

from edge.advert import Advertisement
from edge.bluez import BlueZScanner, WatchdogSettings
from edge.scanner import Scanner
from tests.fakeclock import FakeClock
from tests.harness import until

pytest_plugins = ["fakebluez.fixtures"]
pytestmark = pytest.mark.timeout(60)

IBEACON = bytes.fromhex("0215" + "f7826da64fa24e988024bc5b71e0893e" + "0001" + "0002" + "c5")
EDDYSTONE_UID = bytes.fromhex("00e8" + "edd1ebeac04e5defa017" + "0123456789ab" + "0000")
FEAA = "0000feaa-0000-1000-8000-00805f9b34fb"


async def wait_for(cond: Callable[[], bool], within: float = 10.0) -> None:
    await until(cond, timeout=within, step=0.01)


@pytest.mark.parametrize("mode", ["auto", "active", "passive"])
async def test_adverts_reach_on_advert_with_right_bytes(fake_bluez: FakeBlueZ, mode: str) -> None:
    got: list[Advertisement] = []
    async with BlueZScanner(got.append, mode=mode) as scanner:  # type: ignore[arg-type]
        assert isinstance(scanner, Scanner)
        expected_mode = "active" if mode == "active" else "passive"
        assert scanner.stats()["mode"] == expected_mode
        t0 = time.monotonic()
        fake_bluez.advertise("C0:FF:EE:00:00:01", rssi=-61, manufacturer_data={0x004C: IBEACON})
        fake_bluez.advertise("C0:FF:EE:00:00:02", rssi=-72, service_data={FEAA: EDDYSTONE_UID})
        fake_bluez.advertise("C0:FF:EE:00:00:01", rssi=-59, manufacturer_data={0x004C: IBEACON})
        await wait_for(lambda: len(got) >= 3)
    ib = [a for a in got if a.address == "C0:FF:EE:00:00:01"]
    ed = [a for a in got if a.address == "C0:FF:EE:00:00:02"]
    assert [a.rssi for a in ib] == [-61, -59]
    assert ib[0].manufacturer_data == {0x004C: IBEACON}
    assert ed[0].service_data == {FEAA: EDDYSTONE_UID}
    assert ed[0].rssi == -72
    assert all(a.receiver == "hci0" and a.ts >= t0 for a in got)
    if mode == "active":
        assert fake_bluez.discovery_filters[0]["DuplicateData"] is False
    stats = scanner.stats()
    assert stats["adverts"] == 3
    assert stats["state"] == "stopped"


async def test_auto_scans_actively_without_advertisement_monitor(
    private_system_bus: str,
) -> None:
    fake = FakeBlueZ(passive=False)
    await fake.start()
    try:
        got: list[Advertisement] = []
        async with BlueZScanner(got.append) as scanner:
            assert scanner.stats()["mode"] == "active"
            assert fake.discovering
            fake.advertise("C0:FF:EE:00:00:01", rssi=-50, manufacturer_data={0x004C: IBEACON})
            await wait_for(lambda: len(got) == 1)
        assert not fake.discovering  # left cleanly
    finally:
        await fake.stop()


async def test_duplicates_are_kept(fake_bluez: FakeBlueZ) -> None:
    """The fake, unlike BlueZ, never suppresses duplicates, so 50 adverts arriving only
    shows the scanner itself drops none; that real BlueZ will not either rests on the
    filter the scanner sets, checked as BlueZ received it."""
    got: list[Advertisement] = []
    async with BlueZScanner(got.append, mode="active"):
        for i in range(50):
            fake_bluez.advertise("C0:FF:EE:00:00:01", rssi=-60 - i % 3,
                                 manufacturer_data={0x004C: IBEACON})
        await wait_for(lambda: len(got) == 50)
        in_force = fake_bluez.discovery_filters[-1]  # bleak clears it again on stop
    assert [a.rssi for a in got] == [-60 - i % 3 for i in range(50)]  # every sample, in order
    assert in_force == {"Transport": "le", "DuplicateData": False}


async def test_not_reentrant_and_callback_errors_do_not_stop_scanning(
    fake_bluez: FakeBlueZ,
) -> None:
    seen: list[Advertisement] = []

    def flaky(adv: Advertisement) -> None:
        seen.append(adv)
        if len(seen) == 1:
            raise ValueError("boom")

    scanner = BlueZScanner(flaky)
    async with scanner:
        with pytest.raises(RuntimeError, match="re-entrant"):
            await scanner.__aenter__()
        for _ in range(3):
            fake_bluez.advertise("C0:FF:EE:00:00:01", rssi=-60, manufacturer_data={76: IBEACON})
        await wait_for(lambda: len(seen) == 3)
        assert scanner.stats()["callback_errors"] == 1


async def test_quiet_store_with_beacons_needs_no_recovery(beacons: FakeBlueZ) -> None:
    """Adverts heard in every half second of scanner time (a fake clock), for three
    silence thresholds: the watchdog, which saw each step (settle), never acts."""
    clock = FakeClock()
    got: list[Advertisement] = []
    settings = WatchdogSettings(tick_s=0.02)  # default thresholds; real-time tick
    async with BlueZScanner(got.append, watchdog=settings, clock=clock.monotonic) as scanner:
        start = clock.monotonic()
        while clock.monotonic() - start < 3 * settings.silence_restart_s:
            heard = len(got)
            await wait_for(lambda: len(got) > heard)  # noqa: B023 - awaited at once
            clock.advance(0.5)
            await settle(scanner)
        stats = scanner.stats()
    assert stats["restarts"] == 0
    assert stats["recovery_failures"] == 0
    assert got[-1].ts - got[0].ts >= 3 * settings.silence_restart_s - 0.5


@pytest.mark.parametrize("mode", ["active", "passive"])
async def test_measure_adverts_per_second(fake_bluez: FakeBlueZ, mode: str) -> None:
    """Throughput of fake -> dbus-daemon -> bleak -> BlueZScanner -> on_advert (reported)."""
    got: list[Advertisement] = []
    n = 5000
    async with BlueZScanner(got.append, mode=mode) as scanner:  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for i in range(n):
            fake_bluez.advertise(f"C0:FF:EE:00:{i // 256 % 256:02X}:{i % 256:02X}",
                                 rssi=-60, manufacturer_data={0x004C: IBEACON})
            if i % 50 == 49:
                await fake_bluez.drain()  # bursts fit the socket buffer (fakebluez._service)
        await wait_for(lambda: len(got) >= n, within=30)
        elapsed = time.perf_counter() - t0
        assert scanner.stats()["adverts"] == n
    print(f"\nbluez scanner {mode}: {n / elapsed:,.0f} adverts/s through the fake "
          f"({n} adverts in {elapsed:.2f} s, fake and scanner on one event loop)")


async def test_doctor_sees_the_fake_adapter(fake_bluez: FakeBlueZ, tmp_path: Path) -> None:
    from aislecast.apps.cmd_doctor import run_checks  # noqa: PLC0415
    from aislecast.kernel.broker import free_port  # noqa: PLC0415

    checks = {c.name: c for c in await run_checks("hci0", "127.0.0.1", free_port(), tmp_path)}
    assert checks["permissions"].status == "ok"
    assert checks["adapter"].status == "ok"
    assert checks["passive scan"].status == "ok"
    assert checks["broker"].status == "fail"
    assert checks["disk"].status in ("ok", "warn")
    fake_bluez.power_off()
    checks = {c.name: c for c in await run_checks("hci0", "127.0.0.1", free_port(), tmp_path)}
    assert checks["adapter"].status == "warn"
    checks = {c.name: c for c in await run_checks("hci1", "127.0.0.1", free_port(), tmp_path)}
    assert checks["adapter"].status == "fail"
