"""Canary: the parts of bleak (some private) that edge.bluez relies on still exist.

If one of these fails after a bleak upgrade, read the named bleak module again before
changing the assertion: the scanner's behaviour under faults depends on it.
"""

from __future__ import annotations

import inspect

import bleak
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.bluezdbus import defs, manager
from bleak.backends.bluezdbus.scanner import BleakScannerBlueZDBus
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
)

from edge.bluez import errors


def test_scanner_args_we_pass_exist() -> None:
    assert {"adapter", "or_patterns", "filters"} <= set(BlueZScannerArgs.__annotations__)
    assert OrPattern._fields == ("start_position", "ad_data_type", "content_of_pattern")
    assert AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA == 0xFF
    assert AdvertisementDataType.SERVICE_DATA_UUID16 == 0x16
    assert "scanning_mode" in inspect.signature(bleak.BleakScanner).parameters


def test_duplicates_kept_by_default() -> None:
    """bleak sets DuplicateData=False itself (private _filters); we also pass it."""
    src = inspect.getsource(BleakScannerBlueZDBus.__init__)
    assert 'self._filters["DuplicateData"] = Variant("b", False)' in src


def test_error_texts_we_classify() -> None:
    src = inspect.getsource(manager.BlueZManager)
    assert f"adapter '{{adapter_path.split('/')[-1]}}' {errors.BLEAK_ADAPTER_NOT_FOUND}" in src
    assert errors.BLEAK_PASSIVE_UNSUPPORTED in src
    assert defs.BLUEZ_ERROR_IN_PROGRESS == "org.bluez.Error.InProgress"
    assert defs.BLUEZ_ERROR_NOT_READY == "org.bluez.Error.NotReady"
    e = BleakDBusError("org.bluez.Error.InProgress", ["busy"])
    assert e.dbus_error == "org.bluez.Error.InProgress"
    assert errors.classify(e) is errors.ErrorClass.IN_PROGRESS
    assert {r.name for r in BleakBluetoothNotAvailableReason} >= {
        "NO_BLUETOOTH", "NO_BLE_CENTRAL_ROLE", "POWERED_OFF", "DENIED_BY_SYSTEM",
    }
    na = BleakBluetoothNotAvailableError("off", BleakBluetoothNotAvailableReason.POWERED_OFF)
    assert errors.classify(na) is errors.ErrorClass.NOT_READY


def test_one_manager_per_event_loop() -> None:
    """bleak keeps one D-Bus connection per loop: set DBUS_SYSTEM_BUS_ADDRESS first."""
    assert isinstance(manager._global_instances, dict)
    assert inspect.iscoroutinefunction(manager.get_global_bluez_manager)


def test_bleak_does_not_watch_powered() -> None:
    """docs/architecture.md#bluez-and-bleak: bleak ignores Powered/Discovering; if this starts
    failing, bleak may now raise or stop on power-off and our AdapterWatch may double-handle it."""
    src = inspect.getsource(manager.BlueZManager._parse_msg)
    assert '"Powered"' not in src
    assert '"Discovering"' not in src
