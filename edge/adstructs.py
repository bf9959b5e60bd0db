"""Raw BLE advertising data (AD structures) to and from the dictionaries scanners report.

Advertising data is a run of structures ``[length][type][data...]`` where ``length``
counts the type byte and the data (Bluetooth Core spec, Vol 3 Part C §11). A zero
length ends the significant part early (the rest is padding). :func:`parse_ad` never
raises: a truncated or malformed structure sets ``AdData.error`` and parsing keeps
what came before it. Service UUIDs are reported as bleak does, full 128-bit lower-case
strings (``0000feaa-0000-1000-8000-00805f9b34fb``).
"""

from __future__ import annotations

import struct
import uuid as _uuid
from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

from edge.advert import Advertisement

__all__ = [
    "AD_MAX_LEN",
    "AdData",
    "build_ad",
    "parse_ad",
    "to_advertisement",
    "uuid16",
]

# BLE 5 extended advertising carries at most 1,650 bytes of advertising data
# (Core spec v5, Vol 6 Part B §2.3.4.9); legacy adverts carry 31.
AD_MAX_LEN: Final = 1650

_BASE_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"

# AD types (Bluetooth Assigned Numbers, "Common Data Types").
_FLAGS: Final = 0x01
_UUID16: Final = (0x02, 0x03)
_UUID32: Final = (0x04, 0x05)
_UUID128: Final = (0x06, 0x07)
_NAMES: Final = (0x08, 0x09)
_TX_POWER: Final = 0x0A
_SVC16: Final = 0x16
_SVC32: Final = 0x20
_SVC128: Final = 0x21
_MANUFACTURER: Final = 0xFF


class AdData(msgspec.Struct, kw_only=True):
    """What one advertising-data blob says; ``error`` names the first malformed structure."""

    flags: int | None = None
    service_uuids: list[str] = msgspec.field(default_factory=list)
    local_name: str | None = None
    tx_power: int | None = None
    manufacturer_data: dict[int, bytes] = msgspec.field(default_factory=dict)
    service_data: dict[str, bytes] = msgspec.field(default_factory=dict)
    error: str | None = None


def uuid16(value: int) -> str:
    """The full 128-bit string of a 16-bit SIG UUID (``0xFEAA`` -> ``0000feaa-...``)."""
    return f"0000{value:04x}{_BASE_SUFFIX}"


def _uuid32(value: int) -> str:
    return f"{value:08x}{_BASE_SUFFIX}"


def _uuid128(le: bytes) -> str:
    return str(_uuid.UUID(bytes=le[::-1]))


def _uuid_list(data: bytes, size: int) -> list[str] | None:
    if len(data) % size:
        return None
    if size == 2:
        return [uuid16(data[k] | data[k + 1] << 8) for k in range(0, len(data), 2)]
    if size == 4:
        return [_uuid32(int.from_bytes(data[k:k + 4], "little")) for k in range(0, len(data), 4)]
    return [_uuid128(data[k:k + 16]) for k in range(0, len(data), 16)]


def _apply(out: AdData, kind: int, data: bytes) -> str | None:
    """Store one structure's data in ``out``; return a complaint when it is malformed."""
    n = len(data)
    if kind == _MANUFACTURER:
        if n < 2:
            return f"manufacturer data has {n} bytes, needs a 2-byte company id"
        out.manufacturer_data[data[0] | data[1] << 8] = data[2:]
    elif kind == _SVC16:
        if n < 2:
            return f"service data has {n} bytes, needs a 2-byte UUID"
        out.service_data[uuid16(data[0] | data[1] << 8)] = data[2:]
    elif kind == _SVC32:
        if n < 4:
            return f"32-bit service data has {n} bytes, needs a 4-byte UUID"
        out.service_data[_uuid32(int.from_bytes(data[:4], "little"))] = data[4:]
    elif kind == _SVC128:
        if n < 16:
            return f"128-bit service data has {n} bytes, needs a 16-byte UUID"
        out.service_data[_uuid128(data[:16])] = data[16:]
    elif kind == _FLAGS:
        if n != 1:
            return f"flags have {n} bytes, expected 1"
        out.flags = data[0]
    elif kind == _TX_POWER:
        if n != 1:
            return f"tx power has {n} bytes, expected 1"
        out.tx_power = data[0] - 256 if data[0] > 127 else data[0]
    elif kind in _NAMES:
        if kind == 0x09 or out.local_name is None:  # complete name wins over shortened
            out.local_name = data.decode("utf-8", "replace")
    else:
        size = 2 if kind in _UUID16 else 4 if kind in _UUID32 else 16 if kind in _UUID128 else 0
        if size:
            uuids = _uuid_list(data, size)
            if uuids is None:
                return f"{size * 8}-bit UUID list has {n} bytes, not a multiple of {size}"
            out.service_uuids.extend(uuids)
    return None


def parse_ad(raw: bytes) -> AdData:
    """Parse advertising data; never raises. Unknown AD types are skipped."""
    out = AdData()
    n = len(raw)
    if n > AD_MAX_LEN:
        out.error = f"advertising data is {n} bytes, more than the {AD_MAX_LEN} BLE allows"
        return out
    i = 0
    while i < n:
        length = raw[i]
        if length == 0:  # early termination; the rest is padding
            break
        end = i + 1 + length
        if end > n:
            left = n - i - 1
            out.error = (
                f"truncated AD structure at offset {i}: length {length}, "
                f"{left} byte{'' if left == 1 else 's'} left"
            )
            break
        problem = _apply(out, raw[i + 1], raw[i + 2:end])
        if problem is not None and out.error is None:
            out.error = f"AD structure at offset {i} (type 0x{raw[i + 1]:02x}): {problem}"
        i = end
    return out


def _structure(kind: int, data: bytes) -> bytes:
    if len(data) > 254:
        raise ValueError(f"AD type 0x{kind:02x} carries {len(data)} bytes, at most 254 fit")
    return bytes((len(data) + 1, kind)) + data


def _service_key(service_uuid: str) -> tuple[int, bytes]:
    u = _uuid.UUID(service_uuid)
    text = str(u)
    if text.endswith(_BASE_SUFFIX):
        short = int(text[:8], 16)
        if short <= 0xFFFF:
            return _SVC16, short.to_bytes(2, "little")
        return _SVC32, short.to_bytes(4, "little")
    return _SVC128, u.bytes[::-1]


def build_ad(
    *,
    flags: int | None = 0x06,
    manufacturer_data: Mapping[int, bytes] | None = None,
    service_data: Mapping[str, bytes] | None = None,
    service_uuids16: Sequence[int] = (),
    local_name: str | None = None,
    tx_power: int | None = None,
) -> bytes:
    """Build advertising data; raises ``ValueError`` on values that cannot be encoded.

    ``flags`` defaults to 0x06 (LE General Discoverable, BR/EDR not supported).
    """
    parts: list[bytes] = []
    if flags is not None:
        parts.append(_structure(_FLAGS, bytes((flags,))))
    if service_uuids16:
        parts.append(_structure(0x03, b"".join(u.to_bytes(2, "little") for u in service_uuids16)))
    for key, data in (service_data or {}).items():
        kind, prefix = _service_key(key)
        parts.append(_structure(kind, prefix + data))
    for company, data in (manufacturer_data or {}).items():
        parts.append(_structure(_MANUFACTURER, company.to_bytes(2, "little") + data))
    if tx_power is not None:
        parts.append(_structure(_TX_POWER, struct.pack(">b", tx_power)))
    if local_name is not None:
        parts.append(_structure(0x09, local_name.encode()))
    return b"".join(parts)


def to_advertisement(
    ad: AdData, address: str, rssi: int, ts: float, receiver: str = "hci0"
) -> Advertisement:
    """The :class:`Advertisement` a scanner would report for ``ad``."""
    return Advertisement(
        address=address,
        rssi=rssi,
        ts=ts,
        receiver=receiver,
        manufacturer_data=ad.manufacturer_data,
        service_data=ad.service_data,
        local_name=ad.local_name,
        tx_power=ad.tx_power,
    )
