"""Typed beacon frames and their encoders (the decoders live in :mod:`edge.decoders`).

Encoders are used by the simulated store and by tests to produce the exact bytes a
real beacon or phone puts on air.
"""

from __future__ import annotations

import struct
import uuid as _uuid

import msgspec

__all__ = [
    "EDDYSTONE_UUID",
    "EDDYSTONE_UUID16",
    "APPLE_COMPANY_ID",
    "AltBeacon",
    "EddystoneEID",
    "EddystoneETLM",
    "EddystoneTLM",
    "EddystoneUID",
    "EddystoneURL",
    "Frame",
    "IBeacon",
    "encode_eddystone_eid",
    "encode_ibeacon",
]

APPLE_COMPANY_ID = 0x004C
EDDYSTONE_UUID16 = 0xFEAA
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"


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


Frame = IBeacon | AltBeacon | EddystoneUID | EddystoneURL | EddystoneTLM | EddystoneETLM | EddystoneEID


def encode_ibeacon(beacon_uuid: str, major: int, minor: int, tx_power: int) -> tuple[int, bytes]:
    """Return ``(company_id, manufacturer_data)`` for an iBeacon frame."""
    body = _uuid.UUID(beacon_uuid).bytes + struct.pack(">HHb", major, minor, tx_power)
    return APPLE_COMPANY_ID, b"\x02\x15" + body


def encode_eddystone_eid(eid: bytes, tx_power: int) -> tuple[str, bytes]:
    """Return ``(service_uuid, service_data)`` for an Eddystone-EID frame (8-byte EID)."""
    if len(eid) != 8:
        raise ValueError(f"an EID is 8 bytes, got {len(eid)}")
    return EDDYSTONE_UUID, bytes([0x30]) + struct.pack(">b", tx_power) + eid
