"""Single-use redemption codes: minted by a store's gateway, verified by HQ alone.

A code is 15 bytes, written as 24 base32 letters in six groups of four
(``ABCD-EFGH-IJKL-MNOP-QRST-UVWX``), short enough to type at a till and to print as a
QR code:

- 4 bytes: the format version (top 4 bits, ``1``) and the expiry in whole minutes
  since 2024-01-01 UTC (28 bits, rounded up: a code lives at most 59 s past its offer);
- 5 bytes: the serial, random per offer; the offer's id starts with its 10 hex digits
  (:func:`offer_id_for`), which is how HQ finds the offer once the gateway's batch names it;
- 6 bytes: a tag, the first 48 bits of HMAC-SHA256 under the store's redemption key
  of (store, campaign, variant, version, expiry, serial).

The store's key (:func:`store_key`) comes from HQ's master secret and reaches only that
store's gateways, inside their signed bundle. So HQ verifies a code before it has heard
of the offer (it tries the store's campaigns and variants: a few HMACs), a phone cannot
make one, and a stolen gateway can make codes for its own store only: another store's
till checks them under another key, and they fail there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Final

__all__ = ["CODE_BYTES", "CodeError", "ParsedCode", "mint_code", "normalize",
           "offer_id_for", "parse_code", "serial_of_offer", "store_key", "verify_tag"]

CODE_BYTES: Final = 15
_VERSION: Final = 1
_EPOCH: Final = 1_704_067_200  # 2024-01-01T00:00:00Z
_MINUTES_MAX: Final = (1 << 28) - 1
_TAG: Final = 6
_LABEL: Final = b"aislecast-redeem-v1"
# letters people misread for base32's: zero, one, eight
_TYPOS: Final = str.maketrans({"0": "O", "1": "I", "8": "B"})


class CodeError(ValueError):
    """Not a code at all (wrong length, letters outside base32, unknown version)."""


@dataclass(frozen=True, slots=True)
class ParsedCode:
    code: str  # normalized: 24 letters, no dashes
    expires_at: float  # unix seconds
    serial: bytes
    tag: bytes
    head: bytes  # the version and expiry bytes, as signed


def store_key(master: bytes, store: str) -> bytes:
    """The store's redemption key: only HQ holds ``master``."""
    return hmac.new(master, _LABEL + b"|store|" + store.encode(), hashlib.sha256).digest()


def offer_id_for(serial: bytes, rest: str) -> str:
    """An offer id (32 hex) that starts with ``serial``; ``rest`` supplies the other 22."""
    return (serial.hex() + rest)[:32]


def serial_of_offer(offer_id: str) -> str:
    """The 10 hex digits of a code-bearing offer id that are its code's serial."""
    return offer_id[:10]


def _tag(key: bytes, store: str, campaign: str, variant: str, *, head: bytes,
         serial: bytes) -> bytes:
    msg = b"\0".join((_LABEL, store.encode(), campaign.encode(), variant.encode(), head, serial))
    return hmac.new(key, msg, hashlib.sha256).digest()[:_TAG]


def mint_code(key: bytes, *, store: str, campaign: str, variant: str, serial: bytes,
              expires_at: float) -> str:
    """The grouped code for an offer of ``campaign``/``variant`` at ``store``."""
    minutes = max(0, min(_MINUTES_MAX, math.ceil((expires_at - _EPOCH) / 60)))
    head = ((_VERSION << 28) | minutes).to_bytes(4, "big")
    raw = head + serial + _tag(key, store, campaign, variant, head=head, serial=serial)
    text = base64.b32encode(raw).decode()
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def normalize(code: str) -> str:
    """Upper case, no dashes or spaces, common misreadings fixed (not validated)."""
    return "".join(code.split()).replace("-", "").upper().translate(_TYPOS)


def parse_code(code: str) -> ParsedCode:
    """Raises :class:`CodeError` for anything that is not a code of this format."""
    text = normalize(code[:64])
    if len(text) != 24:
        raise CodeError(f"a code has 24 letters, this one {len(text)}")
    try:
        raw = base64.b32decode(text)
    except ValueError:
        raise CodeError("a code uses the letters A-Z and digits 2-7 only") from None
    head = raw[:4]
    word = int.from_bytes(head, "big")
    if word >> 28 != _VERSION:
        raise CodeError(f"unknown code version {word >> 28}")
    return ParsedCode(text, _EPOCH + (word & _MINUTES_MAX) * 60.0, raw[4:9], raw[9:], head)


def verify_tag(key: bytes, parsed: ParsedCode, *, store: str, campaign: str, variant: str) -> bool:
    want = _tag(key, store, campaign, variant, head=parsed.head, serial=parsed.serial)
    return hmac.compare_digest(want, parsed.tag)
