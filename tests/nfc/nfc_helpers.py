"""Helpers shared by the NFC tests (a module, not conftest, so imports are unambiguous)."""

from __future__ import annotations

from edge.nfc import AISLECAST_AID, NfcReader, Tap

__all__ = ["AISLECAST_AID", "TOKEN", "make_reader"]

TOKEN = bytes.fromhex("0badc0ffee123456")


def make_reader(port: int, taps: list[Tap], **kw: object) -> NfcReader:
    """A reader on the udp driver with fast test settings (no repeat holdoff)."""
    opts: dict[str, object] = {
        "poll_interval": 0.02, "mute_after_tap_s": 0.002, "repeat_holdoff_s": 0.0,
        "backoff_cap_s": 0.05,
    }
    opts.update(kw)
    return NfcReader(f"udp:127.0.0.1:{port}", taps.append, **opts)  # type: ignore[arg-type]
