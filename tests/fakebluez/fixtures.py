"""pytest fixtures for the fake BlueZ; import them into a test module to use them."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from fakebluez import FakeBlueZ, PrivateBus, beacon_loop, dbus_daemon_binary

__all__ = ["beacons", "fake_bluez", "private_system_bus"]


@pytest.fixture(scope="session")
def private_system_bus() -> Iterator[str]:
    """One private dbus-daemon per session, set as the system bus for bleak."""
    if dbus_daemon_binary() is None:
        pytest.skip("dbus-daemon is not installed (apt-get install -y dbus-daemon)")
    old = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    with PrivateBus() as bus:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
        try:
            yield bus.address
        finally:
            if old is None:
                os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
            else:
                os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = old


@pytest.fixture
async def fake_bluez(private_system_bus: str) -> AsyncIterator[FakeBlueZ]:
    """A fresh fake ``bluetoothd`` with a powered ``hci0`` offering passive scanning."""
    fake = FakeBlueZ()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def beacons(fake_bluez: FakeBlueZ) -> AsyncIterator[FakeBlueZ]:
    """The fake, with two fixed store beacons advertising at 20 Hz each."""
    task = asyncio.create_task(beacon_loop(fake_bluez))
    try:
        yield fake_bluez
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
