"""The raw advertisement every scanner backend produces, real or simulated."""

from __future__ import annotations

import msgspec

__all__ = ["Advertisement"]


class Advertisement(msgspec.Struct, frozen=True, gc=False):
    """One BLE advertisement as heard by one receiver.

    ``manufacturer_data`` maps the Bluetooth SIG company id to the bytes after it;
    ``service_data`` maps a 128-bit service UUID string (lower case, dashed, as bleak
    reports it, e.g. ``0000feaa-0000-1000-8000-00805f9b34fb``) to its bytes.
    ``ts`` is ``time.monotonic()`` seconds on the gateway; ``receiver`` names the
    adapter (``hci0``) or simulated receiver that heard it.
    """

    address: str
    rssi: int
    ts: float
    receiver: str = "hci0"
    manufacturer_data: dict[int, bytes] = msgspec.field(default_factory=dict)
    service_data: dict[str, bytes] = msgspec.field(default_factory=dict)
    local_name: str | None = None
    tx_power: int | None = None
