"""NFC on the store gateway: the reader (nfcpy on a thread, taps on asyncio) and tags.

``NfcReader`` polls a reader for shelf tags (NDEF on Type 2, 3 and 4 tags) and for
shoppers' phones (ISO-DEP host card emulation answering :data:`AISLECAST_AID` with an
8-byte rotating token) and hands each :class:`Tap` to a callback on the event loop.
:mod:`edge.nfc.records` holds our NDEF record; :mod:`edge.nfc.emulator` plays cards over
nfcpy's udp driver for tests and benchmarks; :mod:`edge.nfc.settings` what a
configuration is checked against.

Importing this package does not load nfcpy or ndeflib (~3 MiB of a gateway's memory,
for a gateway without a reader): the names that need them (the reader, the device
helpers, ``TagInfo``) are imported on first use, by :func:`__getattr__`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from edge.nfc._tap import Tap
from edge.nfc.settings import (
    AISLECAST_AID,
    NFC_BACKOFF_BASE,
    NFC_BACKOFF_CAP_S,
    NFC_MUTE_AFTER_TAP_S,
    NFC_POLL_INTERVAL_S,
    TECHNOLOGIES,
    NfcDeviceError,
    check_path,
)

if TYPE_CHECKING:
    from edge.nfc._device import classify, open_frontend, tune_udp
    from edge.nfc._reader import NfcReader
    from edge.nfc.records import TagInfo

__all__ = [
    "AISLECAST_AID",
    "NFC_BACKOFF_BASE",
    "NFC_BACKOFF_CAP_S",
    "NFC_MUTE_AFTER_TAP_S",
    "NFC_POLL_INTERVAL_S",
    "TECHNOLOGIES",
    "NfcDeviceError",
    "NfcReader",
    "TagInfo",
    "Tap",
    "check_path",
    "classify",
    "open_frontend",
    "tune_udp",
]

#: The names that load nfcpy or ndeflib, and the module of each.
_LAZY: Final = {
    "NfcReader": "edge.nfc._reader",
    "TagInfo": "edge.nfc.records",
    "classify": "edge.nfc._device",
    "open_frontend": "edge.nfc._device",
    "tune_udp": "edge.nfc._device",
}


def __getattr__(name: str) -> object:
    """Import a name of :data:`_LAZY` on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge.nfc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
