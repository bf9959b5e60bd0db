"""Classify every BlueZ / bleak / D-Bus error in one place and map it to a recovery.

Nothing else in the package looks inside an exception: callers ask :func:`classify`
for an :class:`ErrorClass` and :data:`RECOVERY` for what to do about it (in the manner
of bleak-retry-connector's backoff classes).
"""

from __future__ import annotations

import enum
from typing import Final

from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakError,
)
from dbus_fast import AuthError, DBusError

from aislecast.kernel.errors import AislecastError

__all__ = [
    "RECOVERY",
    "BlueZScannerError",
    "ErrorClass",
    "Recovery",
    "classify",
    "hint_for",
]


class ErrorClass(enum.StrEnum):
    """What went wrong, coarsely; the keys of ``stats()["errors_by_class"]``."""

    IN_PROGRESS = "in_progress"  # org.bluez.Error.InProgress: another start/stop racing
    NOT_READY = "not_ready"  # adapter powered off (NotReady / POWERED_OFF)
    ADAPTER_MISSING = "adapter_missing"  # no such adapter object, bluetoothd gone
    PERMISSION = "permission"  # D-Bus policy / polkit refused us
    PASSIVE_UNSUPPORTED = "passive_unsupported"  # no AdvertisementMonitorManager1
    BUS = "bus"  # our D-Bus connection broke
    TIMEOUT = "timeout"  # a step exceeded ATTEMPT_TIMEOUT_S
    FAILED = "failed"  # org.bluez.Error.Failed and other generic BlueZ refusals
    UNKNOWN = "unknown"  # anything else (logged with traceback)


class Recovery(enum.StrEnum):
    """What the supervisor does next for an error class."""

    RETRY = "retry"  # same step again after full-jitter backoff
    POWER_CYCLE = "power_cycle"  # power the adapter on (or off and on) over D-Bus
    WAIT_ADAPTER = "wait_adapter"  # nothing to do until the adapter (re)appears
    FALLBACK_ACTIVE = "fallback_active"  # passive is not offered: scan actively
    RECREATE = "recreate"  # new BleakScanner and new D-Bus connections
    ESCALATE = "escalate"  # next stage of the ladder


RECOVERY: Final[dict[ErrorClass, Recovery]] = {
    ErrorClass.IN_PROGRESS: Recovery.RETRY,
    ErrorClass.NOT_READY: Recovery.POWER_CYCLE,
    ErrorClass.ADAPTER_MISSING: Recovery.WAIT_ADAPTER,
    ErrorClass.PERMISSION: Recovery.RETRY,  # logged loudly; an operator must fix policy
    ErrorClass.PASSIVE_UNSUPPORTED: Recovery.FALLBACK_ACTIVE,
    ErrorClass.BUS: Recovery.RECREATE,
    ErrorClass.TIMEOUT: Recovery.ESCALATE,
    ErrorClass.FAILED: Recovery.ESCALATE,
    ErrorClass.UNKNOWN: Recovery.ESCALATE,
}

_BY_DBUS_NAME: Final[dict[str, ErrorClass]] = {
    "org.bluez.Error.InProgress": ErrorClass.IN_PROGRESS,
    "org.bluez.Error.NotReady": ErrorClass.NOT_READY,
    "org.bluez.Error.DoesNotExist": ErrorClass.ADAPTER_MISSING,
    "org.bluez.Error.NotAuthorized": ErrorClass.PERMISSION,
    "org.bluez.Error.NotPermitted": ErrorClass.PERMISSION,
    "org.bluez.Error.Failed": ErrorClass.FAILED,
    "org.freedesktop.DBus.Error.AccessDenied": ErrorClass.PERMISSION,
    "org.freedesktop.DBus.Error.UnknownObject": ErrorClass.ADAPTER_MISSING,
    "org.freedesktop.DBus.Error.UnknownMethod": ErrorClass.ADAPTER_MISSING,
    "org.freedesktop.DBus.Error.ServiceUnknown": ErrorClass.ADAPTER_MISSING,
    "org.freedesktop.DBus.Error.NameHasNoOwner": ErrorClass.ADAPTER_MISSING,
    "org.freedesktop.DBus.Error.NoReply": ErrorClass.TIMEOUT,
    "org.freedesktop.DBus.Error.Disconnected": ErrorClass.BUS,
}

_BY_REASON: Final[dict[BleakBluetoothNotAvailableReason, ErrorClass]] = {
    BleakBluetoothNotAvailableReason.POWERED_OFF: ErrorClass.NOT_READY,
    BleakBluetoothNotAvailableReason.NO_BLUETOOTH: ErrorClass.ADAPTER_MISSING,
    BleakBluetoothNotAvailableReason.NO_BLE_CENTRAL_ROLE: ErrorClass.ADAPTER_MISSING,
    BleakBluetoothNotAvailableReason.DENIED_BY_SYSTEM: ErrorClass.PERMISSION,
}

# bleak raises plain BleakError with these texts (manager._check_adapter and
# passive_scan); tests/test_bluez_conformance.py checks they are still the texts.
BLEAK_ADAPTER_NOT_FOUND: Final = "not found"
BLEAK_PASSIVE_UNSUPPORTED: Final = "passive scanning on Linux requires"

_HINTS: Final[dict[ErrorClass, str]] = {
    ErrorClass.IN_PROGRESS: "another program is starting or stopping discovery; retrying",
    ErrorClass.NOT_READY: "the adapter is powered off: `bluetoothctl power on`",
    ErrorClass.ADAPTER_MISSING: "no such adapter: check the dongle, `systemctl status bluetooth`",
    ErrorClass.PERMISSION: "D-Bus refused access to org.bluez: run as root or allow the "
    "user in /etc/dbus-1/system.d/bluetooth.conf (group `bluetooth`)",
    ErrorClass.PASSIVE_UNSUPPORTED: "passive scan needs BlueZ >= 5.56 started with "
    "--experimental and kernel >= 5.10; scanning actively instead",
    ErrorClass.BUS: "the D-Bus connection dropped: is dbus/bluetoothd restarting?",
    ErrorClass.TIMEOUT: "BlueZ did not answer in time: is bluetoothd hung?",
    ErrorClass.FAILED: "BlueZ refused the request; see bluetoothd's journal",
    ErrorClass.UNKNOWN: "unexpected error; see the traceback in the log",
}


def classify(exc: BaseException) -> ErrorClass:
    """The :class:`ErrorClass` of an exception raised by bleak, dbus-fast or asyncio."""
    if isinstance(exc, BlueZScannerError):
        return exc.error_class
    if isinstance(exc, BleakDBusError):
        return _BY_DBUS_NAME.get(exc.dbus_error, ErrorClass.FAILED)
    if isinstance(exc, DBusError):
        return _BY_DBUS_NAME.get(exc.type, ErrorClass.FAILED)
    if isinstance(exc, BleakBluetoothNotAvailableError):
        return _BY_REASON.get(exc.reason, ErrorClass.ADAPTER_MISSING)
    if isinstance(exc, BleakError):
        text = str(exc)
        if BLEAK_PASSIVE_UNSUPPORTED in text:
            return ErrorClass.PASSIVE_UNSUPPORTED
        if BLEAK_ADAPTER_NOT_FOUND in text:
            return ErrorClass.ADAPTER_MISSING
        return ErrorClass.UNKNOWN
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT
    if isinstance(exc, AuthError | PermissionError):
        return ErrorClass.PERMISSION
    if isinstance(exc, EOFError | ConnectionError | OSError):
        return ErrorClass.BUS
    return ErrorClass.UNKNOWN


def hint_for(cls: ErrorClass) -> str:
    """What an operator should do about an error class."""
    return _HINTS[cls]


class BlueZScannerError(AislecastError):
    """The scanner could not start: ``adapter``, ``error_class`` and a ``hint``."""

    def __init__(self, adapter: str, error_class: ErrorClass, message: str) -> None:
        super().__init__(f"{adapter}: {message}", hint=hint_for(error_class))
        self.adapter = adapter
        self.error_class = error_class
