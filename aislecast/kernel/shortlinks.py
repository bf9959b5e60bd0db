"""The short-link format: ``https://HQ/s/CODE?src=qr|nfc``.

A shelf label's QR code and its NFC tag carry the same short link, told apart only by
``?src=``. HQ resolves and counts them (``hq.shortlinks``); the staff tools print and
write them (``firmware_config``). Both sides need the format and nothing else, so it
lives here, free of any web framework.

Example::

    short_url("https://hq.example", "Ab3dE5f", source="qr")
    # -> 'https://hq.example/s/Ab3dE5f?src=qr'
"""

from __future__ import annotations

import re
from typing import Final, Literal

from aislecast.kernel.errors import AislecastError

__all__ = [
    "CODE_ALPHABET",
    "CODE_MAX_LEN",
    "CODE_MIN_LEN",
    "DEFAULT_CODE_LEN",
    "Source",
    "is_valid_code",
    "short_url",
]

# base62: digits and both letter cases survive every QR mode, NFC URI record and URL
# without escaping, and need no case folding (unlike base32) for a link nobody types.
CODE_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# 7 characters: 62**7 ~ 3.5e12 codes, so at a chain's ~1e6 shelf links a random code
# collides with probability ~3e-7 per draw and the collision check almost never loops.
# It keeps the URL short enough for a QR version 3 at error correction M.
DEFAULT_CODE_LEN: Final = 7
# Accepted lengths: 4 leaves room for hand-picked vanity codes; 16 is far above anything
# minted and bounds what an attacker can make the store look up.
CODE_MIN_LEN: Final = 4
CODE_MAX_LEN: Final = 16
_CODE_RE: Final = re.compile(rf"[0-9A-Za-z]{{{CODE_MIN_LEN},{CODE_MAX_LEN}}}")

Source = Literal["qr", "nfc", "other"]


def is_valid_code(code: str) -> bool:
    """True when ``code`` has an accepted length and only base62 characters."""
    return _CODE_RE.fullmatch(code) is not None


def short_url(base_url: str, code: str, *, source: Source | None = None) -> str:
    """The short link for ``code`` under ``base_url`` (the HQ origin), with ``?src=``."""
    if not is_valid_code(code):
        raise AislecastError(f"short link code {code!r} is not valid base62")
    url = f"{base_url.rstrip('/')}/s/{code}"
    return url if source is None else f"{url}?src={source}"
