"""Typed beacon frames and their encoders (the decoders live in :mod:`edge.decoders`).

Encoders are used by the simulated store and by tests to produce the exact bytes a
real beacon or phone puts on air. Each returns ``(company_id, manufacturer_data)`` or
``(service_uuid, service_data)``, the shape of :class:`edge.advert.Advertisement`'s
dictionaries; :func:`edge.adstructs.build_ad` turns them into raw advertising data.

Layouts: iBeacon (Apple's Proximity Beacon spec), AltBeacon (github.com/AltBeacon/spec),
Eddystone UID/URL/TLM/eTLM/EID (github.com/google/eddystone). Multi-byte fields are
big-endian in all of them; only the Bluetooth company id itself is little-endian.
"""

from __future__ import annotations

import struct
import uuid as _uuid

import msgspec

__all__ = [
    "ALTBEACON_CODE",
    "APPLE_COMPANY_ID",
    "EDDYSTONE_EID",
    "EDDYSTONE_TLM",
    "EDDYSTONE_UID",
    "EDDYSTONE_URL",
    "EDDYSTONE_UUID",
    "EDDYSTONE_UUID16",
    "URL_EXPANSIONS",
    "URL_SCHEMES",
    "AltBeacon",
    "EddystoneEID",
    "EddystoneETLM",
    "EddystoneTLM",
    "EddystoneUID",
    "EddystoneURL",
    "Frame",
    "IBeacon",
    "encode_altbeacon",
    "encode_eddystone_eid",
    "encode_eddystone_etlm",
    "encode_eddystone_tlm",
    "encode_eddystone_uid",
    "encode_eddystone_url",
    "encode_ibeacon",
]

APPLE_COMPANY_ID = 0x004C
# AltBeacon's "beacon code", the two bytes right after the company id, big-endian.
ALTBEACON_CODE = b"\xbe\xac"
EDDYSTONE_UUID16 = 0xFEAA
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
# Eddystone frame types: the first byte of the service data.
EDDYSTONE_UID = 0x00
EDDYSTONE_URL = 0x10
EDDYSTONE_TLM = 0x20
EDDYSTONE_EID = 0x30

# Eddystone-URL scheme prefix byte -> text (eddystone-url/README.md, "URL Scheme Prefix").
URL_SCHEMES: tuple[str, ...] = ("http://www.", "https://www.", "http://", "https://")
# Eddystone-URL expansion codes 0x00..0x0d -> text; 0x0e..0x20 and 0x7f..0xff are
# reserved, so a frame carrying them is rejected (eddystone-url/README.md).
URL_EXPANSIONS: tuple[str, ...] = (
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/",
    ".com", ".org", ".edu", ".net", ".info", ".biz", ".gov",
)
_URL_MAX_ENCODED = 17  # bytes after the scheme byte


class IBeacon(msgspec.Struct, frozen=True, tag="ibeacon", tag_field="format"):
    uuid: str
    major: int
    minor: int
    tx_power: int


class AltBeacon(msgspec.Struct, frozen=True, tag="altbeacon", tag_field="format"):
    manufacturer: int
    id1: str
    id2: int
    id3: int
    reference_rssi: int
    mfg_reserved: int = 0


class EddystoneUID(msgspec.Struct, frozen=True, tag="eddystone_uid", tag_field="format"):
    tx_power: int
    namespace: str
    instance: str


class EddystoneURL(msgspec.Struct, frozen=True, tag="eddystone_url", tag_field="format"):
    tx_power: int
    url: str


class EddystoneTLM(msgspec.Struct, frozen=True, tag="eddystone_tlm", tag_field="format"):
    version: int
    battery_mv: int
    temperature_c: float | None
    adv_count: int
    uptime_s: float


class EddystoneETLM(msgspec.Struct, frozen=True, tag="eddystone_tlm", tag_field="format"):
    """Encrypted TLM (version 1): recognised and passed on, not decoded."""

    version: int
    encrypted: bool
    etlm: str
    salt: int
    mic: int


class EddystoneEID(msgspec.Struct, frozen=True, tag="eddystone_eid", tag_field="format"):
    tx_power: int
    eid: str


Frame = (
    IBeacon | AltBeacon | EddystoneUID | EddystoneURL | EddystoneTLM | EddystoneETLM | EddystoneEID
)


def encode_ibeacon(beacon_uuid: str, major: int, minor: int, tx_power: int) -> tuple[int, bytes]:
    """Return ``(company_id, manufacturer_data)`` for an iBeacon frame."""
    body = _uuid.UUID(beacon_uuid).bytes + struct.pack(">HHb", major, minor, tx_power)
    return APPLE_COMPANY_ID, b"\x02\x15" + body


def encode_altbeacon(
    manufacturer: int,
    id1: str,
    id2: int,
    id3: int,
    reference_rssi: int,
    *,
    mfg_reserved: int = 0,
) -> tuple[int, bytes]:
    """Return ``(company_id, manufacturer_data)`` for an AltBeacon frame.

    The 20-byte beacon id is split the interoperable way: a 16-byte UUID and two
    16-bit integers (RadiusNetworks/altbeacon-reference).
    """
    if not 0 <= manufacturer <= 0xFFFF:
        raise ValueError(f"a company id is 16 bits, got {manufacturer}")
    body = _uuid.UUID(id1).bytes + struct.pack(">HHbB", id2, id3, reference_rssi, mfg_reserved)
    return manufacturer, ALTBEACON_CODE + body


def _hex_bytes(value: str | bytes, size: int, what: str) -> bytes:
    raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
    if len(raw) != size:
        raise ValueError(f"{what} is {size} bytes, got {len(raw)}")
    return raw


def encode_eddystone_uid(
    namespace: str | bytes, instance: str | bytes, tx_power: int
) -> tuple[str, bytes]:
    """Return ``(service_uuid, service_data)`` for an Eddystone-UID frame (RFU bytes included)."""
    nid = _hex_bytes(namespace, 10, "a namespace")
    bid = _hex_bytes(instance, 6, "an instance")
    return EDDYSTONE_UUID, struct.pack(">Bb", EDDYSTONE_UID, tx_power) + nid + bid + b"\x00\x00"


def encode_eddystone_url(url: str, tx_power: int) -> tuple[str, bytes]:
    """Return ``(service_uuid, service_data)`` for an Eddystone-URL frame.

    The longest matching scheme prefix is taken, then expansion codes replace their
    text greedily; raises ``ValueError`` when the URL cannot be encoded in 17 bytes.
    """
    for code in (1, 0, 3, 2):  # longest prefixes first
        if url.startswith(URL_SCHEMES[code]):
            rest = url[len(URL_SCHEMES[code]):]
            break
    else:
        raise ValueError(f"an Eddystone URL starts with http:// or https://, got {url!r}")
    out = bytearray(struct.pack(">BbB", EDDYSTONE_URL, tx_power, code))
    i = 0
    while i < len(rest):
        for exp_code, text in enumerate(URL_EXPANSIONS):
            if rest.startswith(text, i):
                out.append(exp_code)
                i += len(text)
                break
        else:
            ch = ord(rest[i])
            if not 0x21 <= ch <= 0x7E:
                raise ValueError(f"URL character {rest[i]!r} is not printable US-ASCII")
            out.append(ch)
            i += 1
    if len(out) - 3 > _URL_MAX_ENCODED:
        raise ValueError(f"URL encodes to {len(out) - 3} bytes, at most {_URL_MAX_ENCODED} fit")
    return EDDYSTONE_UUID, bytes(out)


def encode_eddystone_tlm(
    battery_mv: int, temperature_c: float | None, adv_count: int, uptime_s: float
) -> tuple[str, bytes]:
    """Return ``(service_uuid, service_data)`` for a plain (version 0) TLM frame.

    Temperature is 8.8 signed fixed point, ``None`` is sent as 0x8000 ("not
    supported"); uptime is sent as a 0.1 s counter (eddystone-tlm/tlm-plain.md).
    """
    temp = 0x8000 if temperature_c is None else round(temperature_c * 256) & 0xFFFF
    if temperature_c is not None and not -0x8000 < round(temperature_c * 256) < 0x8000:
        raise ValueError(f"temperature {temperature_c} C does not fit 8.8 fixed point")
    body = struct.pack(
        ">BBHHII", EDDYSTONE_TLM, 0, battery_mv, temp, adv_count, round(uptime_s * 10)
    )
    return EDDYSTONE_UUID, body


def encode_eddystone_etlm(etlm: str | bytes, salt: int, mic: int) -> tuple[str, bytes]:
    """Return ``(service_uuid, service_data)`` for an encrypted (version 1) TLM frame."""
    body = _hex_bytes(etlm, 12, "an encrypted TLM block")
    return EDDYSTONE_UUID, bytes((EDDYSTONE_TLM, 1)) + body + struct.pack(">HH", salt, mic)


def encode_eddystone_eid(eid: bytes, tx_power: int) -> tuple[str, bytes]:
    """Return ``(service_uuid, service_data)`` for an Eddystone-EID frame (8-byte EID)."""
    if len(eid) != 8:
        raise ValueError(f"an EID is 8 bytes, got {len(eid)}")
    return EDDYSTONE_UUID, bytes([0x30]) + struct.pack(">b", tx_power) + eid
