"""Pure decoders: bytes in, a typed frame or ``None`` out, never raising.

The skeleton decodes iBeacon and Eddystone-EID (the shopper-token frame); the other
formats are added with the BLE capability.
"""

from __future__ import annotations

import struct
import uuid as _uuid

from edge.advert import Advertisement
from edge.frames import APPLE_COMPANY_ID, EDDYSTONE_UUID, EddystoneEID, Frame, IBeacon

__all__ = ["decode_advertisement"]


def _ibeacon(data: bytes) -> IBeacon | None:
    if len(data) != 23 or data[0] != 0x02 or data[1] != 0x15:
        return None
    major, minor, tx = struct.unpack_from(">HHb", data, 18)
    return IBeacon(str(_uuid.UUID(bytes=data[2:18])), major, minor, tx)


def _eddystone(data: bytes) -> Frame | None:
    if len(data) == 10 and data[0] == 0x30:
        return EddystoneEID(struct.unpack_from(">b", data, 1)[0], data[2:10].hex())
    return None


def decode_advertisement(adv: Advertisement) -> Frame | None:
    """Decode the first recognised frame of ``adv``; ``None`` when nothing matches."""
    mfr = adv.manufacturer_data.get(APPLE_COMPANY_ID)
    if mfr is not None:
        return _ibeacon(mfr)
    svc = adv.service_data.get(EDDYSTONE_UUID)
    if svc is not None:
        return _eddystone(svc)
    return None
