"""Helpers shared by the NFC tests (a module, not conftest, so imports are unambiguous)."""

from __future__ import annotations

from edge.nfc import AISLECAST_AID, NfcReader, Tap
from edge.nfc.emulator import IsoDepCard, Type2Card, Type3Card, type2_image, type3_blocks

__all__ = ["AISLECAST_AID", "CARD_WAIT_S", "TOKEN", "count", "make_reader", "make_tag"]

TOKEN = bytes.fromhex("0badc0ffee123456")

# How long an emulated card waits for the reader's next command before it counts the
# session as over (CardEmulator's ``timeout``). Its 0.25 s default is a card leaving the
# field; a reader or writer thread starved of the CPU (four test workers on two cores)
# took longer, the card left mid-read and the test saw a finished session but no tap
# ({'polls': 2, 'taps': 0}; reproduced by delaying each reader exchange 0.4 s). Readers
# end a session with RFOFF, so the longer wait costs nothing when all is well.
CARD_WAIT_S = 5.0


def make_reader(port: int, taps: list[Tap], **kw: object) -> NfcReader:
    """A reader on the udp driver with fast test settings (no repeat holdoff)."""
    opts: dict[str, object] = {
        "poll_interval": 0.02, "mute_after_tap_s": 0.002, "repeat_holdoff_s": 0.0,
        "backoff_cap_s": 0.05,
    }
    opts.update(kw)
    return NfcReader(f"udp:127.0.0.1:{port}", taps.append, **opts)  # type: ignore[arg-type]


def count(reader: NfcReader, *keys: str) -> int:
    """Sum of integer counters from ``reader.stats()``."""
    total = 0
    for key in keys:
        value = reader.stats()[key]
        assert isinstance(value, int), (key, value)
        total += value
    return total


def make_tag(kind: str, ndef: bytes) -> Type2Card | Type3Card | IsoDepCard:
    """An emulated tag of ``kind`` (``Type2Tag``, ``Type3Tag``, ``Type4Tag``) holding ``ndef``."""
    if kind == "Type2Tag":
        return Type2Card(type2_image(ndef))
    if kind == "Type3Tag":
        return Type3Card(type3_blocks(ndef))
    return IsoDepCard(ndef=ndef)
