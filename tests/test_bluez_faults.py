"""Faults injected into the fake BlueZ are recovered without restarting, and counted.

Each test runs two fixed beacons at 20 Hz (a store), injects one fault, and waits for
adverts to flow again. The scanner runs on a fake clock (fakebluez.drive): its watchdog
sees silence, the powered-off grace and retry delays only as the test advances scanner
time, so each recovery happens at the same scanner time on an idle or a loaded machine,
and that time is held to the issue's 10 s. The thresholds are the production defaults;
only the supervisor's (real-time) tick is short, so a step is seen at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from fakebluez import LIVENESS_S, FakeBlueZ, beacon_loop, drive, settle

from edge.advert import Advertisement
from edge.bluez import BlueZScanner, WatchdogSettings
from tests.fakeclock import FakeClock
from tests.harness import until

pytest_plugins = ["fakebluez.fixtures"]
pytestmark = pytest.mark.timeout(120)

RECOVERY_BOUND_S = 10.0  # issue 4.3: "faults recovered within 10 s" (scanner time)
CLOCKED = WatchdogSettings(tick_s=0.02)  # default thresholds (fake clock); real-time tick


class Sink:
    def __init__(self) -> None:
        self.adverts: list[Advertisement] = []

    def __call__(self, adv: Advertisement) -> None:
        self.adverts.append(adv)

    async def more_than(self, n: int) -> None:
        """Wait (real time, scanner clock untouched) until more than ``n`` adverts came."""
        await until(lambda: len(self.adverts) > n, timeout=LIVENESS_S)


def counter(scanner: BlueZScanner, key: str, at_least: int = 1) -> Callable[[], bool]:
    def reached() -> bool:
        value = scanner.stats()[key]
        assert isinstance(value, int)
        return value >= at_least
    return reached


async def adverts_again(sink: Sink) -> None:
    """Called once a recovery counter moved: any advert counted from here on came after
    the recovery, since BlueZ's reply to its step travelled the same connection behind
    every advert sent before the fault."""
    await sink.more_than(len(sink.adverts))


def report(name: str, seconds: float, stats: dict[str, object]) -> None:
    keys = [k for k, v in stats.items() if (k.startswith(("recoveries_", "errors_")) and v)]
    print(f"\n{name}: recovered after {seconds:.2f} s of scanner time; "
          + ", ".join(f"{k}={stats[k]}" for k in keys))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
async def scanner(beacons: FakeBlueZ, clock: FakeClock, sink: Sink,
                  request: pytest.FixtureRequest) -> AsyncIterator[BlueZScanner]:
    """A running scanner on ``clock`` hearing the beacons (mode from ``request.param``)."""
    mode = getattr(request, "param", "auto")
    async with BlueZScanner(sink, mode=mode, watchdog=CLOCKED, clock=clock.monotonic) as sc:
        await sink.more_than(0)
        yield sc


@pytest.mark.parametrize("scanner", ["active", "passive"], indirect=True)
async def test_adapter_powered_off_then_on(beacons: FakeBlueZ, scanner: BlueZScanner,
                                           sink: Sink) -> None:
    beacons.power_off()
    await until(lambda: scanner.stats()["state"] == "powered_off", timeout=LIVENESS_S)
    # someone else powers it on while the scanner waits out its grace (2 s of scanner
    # time, which does not pass here: the scanner must not power-cycle it itself)
    beacons.power_on()
    await until(counter(scanner, "recoveries_restart"), timeout=LIVENESS_S)
    await adverts_again(sink)
    stats = scanner.stats()
    report(f"powered off/on ({scanner.stats()['mode']})", 0.0, stats)
    assert stats["recoveries_power_cycle"] == 0


async def test_adapter_left_powered_off_is_powered_on(beacons: FakeBlueZ, scanner: BlueZScanner,
                                                      sink: Sink, clock: FakeClock) -> None:
    beacons.power_off()
    took = await drive(scanner, clock, counter(scanner, "recoveries_power_cycle"),
                       within_s=RECOVERY_BOUND_S)
    await adverts_again(sink)
    stats = scanner.stats()
    report("left powered off", took, stats)
    assert took >= CLOCKED.powered_off_grace_s  # it waited out the grace first
    assert beacons.stats.power_changes[-1] is True


@pytest.mark.parametrize("scanner", ["active", "passive"], indirect=True)
async def test_adapter_removed_and_readded(beacons: FakeBlueZ, scanner: BlueZScanner,
                                           sink: Sink, clock: FakeClock) -> None:
    beacons.remove_adapter()
    await until(lambda: scanner.stats()["state"] == "adapter_missing", timeout=LIVENESS_S)
    beacons.add_adapter()
    took = await drive(scanner, clock, counter(scanner, "recoveries_recreate"),
                       within_s=RECOVERY_BOUND_S)
    await adverts_again(sink)
    report(f"removed/re-added ({scanner.stats()['mode']})", took, scanner.stats())


async def test_in_progress_on_start_discovery_is_retried(beacons: FakeBlueZ, clock: FakeClock,
                                                         sink: Sink) -> None:
    beacons.fail_start_discovery(2)
    async with BlueZScanner(sink, mode="active", watchdog=CLOCKED, clock=clock.monotonic) as sc:
        await sink.more_than(0)
        stats = sc.stats()
    report("InProgress x2 on start", 0.0, stats)
    assert stats["errors_in_progress"] == 2


@pytest.mark.parametrize("scanner", ["active"], indirect=True)  # StartDiscovery: active only
async def test_in_progress_during_recovery_is_retried(beacons: FakeBlueZ, scanner: BlueZScanner,
                                                      sink: Sink, clock: FakeClock) -> None:
    beacons.fail_start_discovery(1)
    beacons.mute("restart")
    took = await drive(scanner, clock, counter(scanner, "recoveries_restart"),
                       within_s=RECOVERY_BOUND_S)
    await adverts_again(sink)
    stats = scanner.stats()
    report("silence + InProgress on restart", took, stats)
    assert stats["errors_in_progress"] == 1
    assert took >= CLOCKED.silence_restart_s


@pytest.mark.parametrize("scanner", ["active", "passive"], indirect=True)
async def test_adverts_that_simply_stop(beacons: FakeBlueZ, scanner: BlueZScanner, sink: Sink,
                                        clock: FakeClock) -> None:
    beacons.mute("restart")  # no error anywhere; only a restart brings them back
    took = await drive(scanner, clock, counter(scanner, "recoveries_restart"),
                       within_s=RECOVERY_BOUND_S)
    await adverts_again(sink)
    stats = scanner.stats()
    report(f"adverts stop ({stats['mode']})", took, stats)
    assert took >= CLOCKED.silence_restart_s  # not before the silence threshold
    assert stats["recoveries_restart"] == 1
    assert stats["recoveries_power_cycle"] == 0


async def test_silence_escalates_to_power_cycle(beacons: FakeBlueZ, scanner: BlueZScanner,
                                                sink: Sink, clock: FakeClock) -> None:
    beacons.mute("power_cycle")  # a restart does not help; a power cycle does
    took = await drive(scanner, clock, counter(scanner, "recoveries_power_cycle"),
                       within_s=RECOVERY_BOUND_S)
    await adverts_again(sink)
    stats = scanner.stats()
    report("silence until power cycle", took, stats)
    assert stats["recoveries_restart"] >= 1
    assert stats["recoveries_power_cycle"] == 1
    assert took >= CLOCKED.silence_restart_s + CLOCKED.silence_escalate_s


async def test_endless_silence_walks_the_whole_ladder_and_keeps_going(
    beacons: FakeBlueZ, scanner: BlueZScanner, clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aislecast.edge.bluez")
    beacons.mute("never")
    took = await drive(scanner, clock, counter(scanner, "recoveries_recreate"), within_s=30.0)
    stats = scanner.stats()
    assert stats["state"] == "scanning"
    assert stats["recoveries_restart"] >= 1
    assert stats["recoveries_power_cycle"] >= 1
    assert took >= 3 * CLOCKED.silence_restart_s  # restart, power cycle, recreate, in turn
    lines = [r for r in caplog.records if "bluez recovery ok" in r.getMessage()]
    assert {getattr(r, "stage", None) for r in lines} >= {"restart", "power_cycle", "recreate"}
    # and it keeps going: the ladder starts over while the silence lasts
    await drive(scanner, clock, counter(scanner, "recoveries_restart", 2), within_s=60.0)


async def test_bluetoothd_restart(private_system_bus: str, clock: FakeClock, sink: Sink) -> None:
    """bluetoothd exits (org.bluez loses its owner) and a new one starts."""
    first = FakeBlueZ()
    await first.start()
    task = asyncio.create_task(beacon_loop(first))
    try:
        async with BlueZScanner(sink, watchdog=CLOCKED, clock=clock.monotonic) as scanner:
            await sink.more_than(0)
            task.cancel()
            await first.stop()
            await until(lambda: scanner.stats()["state"] != "scanning", timeout=LIVENESS_S)
            second = FakeBlueZ()
            await second.start()
            task = asyncio.create_task(beacon_loop(second))
            took = await drive(scanner, clock, counter(scanner, "recoveries_recreate"),
                               within_s=RECOVERY_BOUND_S)
            await adverts_again(sink)
            await settle(scanner)
            stats = scanner.stats()
            await second.stop()
    finally:
        task.cancel()
    report("bluetoothd restart", took, stats)
