"""NFC on the store gateway: the reader (nfcpy on a thread, taps on asyncio) and tags.

``NfcReader`` polls a reader for shelf tags (NDEF on Type 2, 3 and 4 tags) and for
shoppers' phones (ISO-DEP host card emulation answering :data:`AISLECAST_AID` with an
8-byte rotating token) and hands each :class:`Tap` to a callback on the event loop.
:mod:`edge.nfc.records` holds our NDEF record; :mod:`edge.nfc.emulator` plays cards over
nfcpy's udp driver for tests and benchmarks.
"""

from edge.nfc._const import (
    AISLECAST_AID,
    NFC_BACKOFF_BASE,
    NFC_BACKOFF_CAP_S,
    NFC_MUTE_AFTER_TAP_S,
    NFC_POLL_INTERVAL_S,
)
from edge.nfc._device import NfcDeviceError, check_path, classify, open_frontend, tune_udp
from edge.nfc._reader import TECHNOLOGIES, NfcReader
from edge.nfc._tap import Tap
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
