"""NFC timeouts and thresholds, each with where its value comes from.

They live here rather than in :mod:`aislecast.kernel.const` only because this package is owned
separately; the lead may move them there unchanged.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AISLECAST_AID",
    "ISODEP_FWT_CAP_S",
    "NFC_BACKOFF_BASE",
    "NFC_BACKOFF_CAP_S",
    "NFC_MUTE_AFTER_TAP_S",
    "NFC_POLL_INTERVAL_S",
    "NFC_REPEAT_HOLDOFF_S",
    "NFC_STOP_TIMEOUT_S",
    "TOKEN_LEN",
]

#: Proprietary AID (ISO 7816-5 category F = unregistered): F0 + ASCII "AISLECAST".
AISLECAST_AID: Final = bytes.fromhex("F04149534C4543415354")
#: The rotating token (docs/architecture.md#rotating-tokens) (Eddystone-EID size).
TOKEN_LEN: Final = 8

#: Time between polls of the field (nfcpy's own default is 0.5 s). Measured on the udp
#: driver: 20 ms gives tap p50/p99 of 12/26 ms at 1.9 % of a core idle; 10 ms costs 3.2 %.
NFC_POLL_INTERVAL_S: Final = 0.02
#: RF off this long after a tap so the card side re-arms before we poll again
#: (re-arm race: docs/architecture.md#nfc-with-nfcpy).
#: 2 ms covers the udp emulator on a loaded 2-core machine.
NFC_MUTE_AFTER_TAP_S: Final = 0.002
#: The same tag uid / phone token is reported once per this window while it stays on
#: the reader (a shopper holds a phone for ~1 s; NFC Forum tap guidance is 0.5-2 s).
NFC_REPEAT_HOLDOFF_S: Final = 2.0
#: Worst single nfcpy wait we allow for an ISO-DEP answer: a card may ask for up to
#: 4.9 s (FWI 14); Android HCE uses FWI 8 (77 ms) plus waiting-time extensions.
ISODEP_FWT_CAP_S: Final = 0.3
#: Leaving the reader: a poll or a tag read in progress finishes within this.
NFC_STOP_TIMEOUT_S: Final = 5.0
#: Reconnect: aiomqtt's full-jitter idiom uniform(0, 1.5 ** min(attempt, 10)), capped.
NFC_BACKOFF_BASE: Final = 1.5
NFC_BACKOFF_CAP_S: Final = 60.0
