"""The :class:`Tap` a reader hands to the gateway: a shelf tag or a shopper's phone."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Tap"]


class Tap(msgspec.Struct, frozen=True, kw_only=True):
    """One tap on the store's reader.

    ``kind`` is ``"tag"`` (a shelf tag: NDEF read) or ``"phone"`` (ISO-DEP host card
    emulation answered our AID with its rotating ``token``). ``ts`` is
    ``time.monotonic()`` when the card was found; ``tag_uid`` the anticollision id
    (random per tap on phones), ``tag_type`` nfcpy's name (``Type2Tag``...);
    ``records`` the NDEF records as plain dicts (see :func:`edge.nfc.records.summarize`).
    """

    kind: Literal["tag", "phone"]
    ts: float
    tag_uid: str
    tag_type: str
    tag_id: str | None = None
    zone: str | None = None
    product: str | None = None
    uri: str | None = None
    token: str | None = None
    records: list[dict[str, str | int]] = msgspec.field(default_factory=list)

    @property
    def key(self) -> str:
        """What identifies "the same tap again": the phone's token, else the tag's uid."""
        return f"p:{self.token}" if self.token is not None else f"t:{self.tag_uid}"
