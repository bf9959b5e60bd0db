"""One card in the field: activate it, ask for our AID or read its NDEF, make a Tap.

Runs on the reader thread (blocking nfcpy calls, each with a bounded timeout). Problems
with the card are raised as :class:`ReadFailure` with a counter name; ``OSError`` (the
reader itself failing) is let through for the device loop to handle.
"""

from __future__ import annotations

from typing import Any

import nfc.clf
import nfc.tag
import nfc.tag.tt4

from edge.nfc._const import AISLECAST_AID, ISODEP_FWT_CAP_S, TOKEN_LEN
from edge.nfc._tap import Tap
from edge.nfc.records import TAG_RECORD_TYPE, decode_message, summarize, tag_id_from_uri

__all__ = ["ReadFailure", "read_ndef_octets", "read_target", "select_aid"]

_SW_OK = b"\x90\x00"


class ReadFailure(Exception):
    """The card could not be read into a tap; ``kind`` is the stats counter to bump."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def activate(clf: Any, target: Any) -> Any:
    """nfcpy's tag activation, with the ISO-DEP frame wait capped (never hang on a card)."""
    try:
        tag = nfc.tag.activate(clf, target)
    except OSError:
        raise
    except Exception as exc:
        raise ReadFailure("read_failed", f"activation error: {type(exc).__name__}") from exc
    if tag is None:
        raise ReadFailure("read_failed", "activation failed (card left the field?)")
    dep = getattr(tag, "_dep", None)
    if dep is not None and dep.fwt > ISODEP_FWT_CAP_S:
        dep.fwt = ISODEP_FWT_CAP_S
        dep.n_retry_ack = dep.n_retry_nak = max(dep.n_retry_nak, 1)
    return tag


def select_aid(tag: Any, aid: bytes = AISLECAST_AID) -> tuple[bytes, bytes]:
    """SELECT by name; returns (data, status word). Communication errors raise ReadFailure."""
    try:
        rsp = bytes(tag.send_apdu(0x00, 0xA4, 0x04, 0x00, aid, mrl=256, check_status=False))
    except OSError:
        raise
    except Exception as exc:
        raise ReadFailure("read_failed", f"SELECT AID failed: {type(exc).__name__}") from exc
    if len(rsp) < 2:
        raise ReadFailure("read_failed", "SELECT AID: short response")
    return rsp[:-2], rsp[-2:]


def read_ndef_octets(tag: Any) -> bytes:
    """The tag's NDEF message bytes; ReadFailure when it has none or the read broke."""
    try:
        ndef = tag.ndef
        octets = None if ndef is None else bytes(ndef.octets)
    except OSError:
        raise
    except Exception as exc:  # nfcpy parses card data with asserts and struct.unpack
        raise ReadFailure("read_failed", f"NDEF read error: {type(exc).__name__}") from exc
    if octets is None:
        raise ReadFailure("no_ndef", "no NDEF data (not formatted, or removed mid-read)")
    return octets


def _phone_tap(tag: Any, token: bytes, ts: float) -> Tap:
    if len(token) != TOKEN_LEN:
        raise ReadFailure("bad_token", f"token of {len(token)} bytes, want {TOKEN_LEN}")
    return Tap(
        kind="phone", ts=ts, tag_uid=bytes(tag.identifier).hex(), tag_type=str(tag.type),
        token=token.hex(),
    )


def _tag_tap(tag: Any, octets: bytes, ts: float) -> Tap:
    records = decode_message(octets)
    if records is None:
        raise ReadFailure("bad_ndef", f"malformed NDEF message ({len(octets)} bytes)")
    summary = summarize(records)
    uri = tag_id = zone = product = None
    for rec in summary:
        kind = rec["type"]
        if kind in ("uri", "smartposter") and uri is None:
            uri = str(rec["uri"])
        elif kind == "aislecast" and tag_id is None:
            tag_id = str(rec["tag_id"])
            zone = str(rec["zone"]) if "zone" in rec else None
            product = str(rec["product"]) if "product" in rec else None
        elif kind == "invalid" and rec.get("record_type") == TAG_RECORD_TYPE:
            raise ReadFailure("bad_record", "our tag record is malformed")
    if tag_id is None and uri is not None:
        tag_id = tag_id_from_uri(uri)
    return Tap(
        kind="tag", ts=ts, tag_uid=bytes(tag.identifier).hex(), tag_type=str(tag.type),
        tag_id=tag_id, zone=zone, product=product, uri=uri, records=summary,
    )


def read_target(clf: Any, target: Any, ts: float) -> Tap:
    """Turn a sensed target into a Tap, or raise ReadFailure (OSError passes through)."""
    tag = activate(clf, target)
    aid_missing = False
    if isinstance(tag, nfc.tag.tt4.Type4Tag):
        data, sw = select_aid(tag)
        if sw == _SW_OK:
            return _phone_tap(tag, data, ts)
        aid_missing = True
    try:
        octets = read_ndef_octets(tag)
    except ReadFailure as exc:
        if aid_missing and exc.kind == "no_ndef":
            raise ReadFailure(
                "aid_not_found", "ISO-DEP card without our AID (6A82) and without NDEF"
            ) from exc
        raise
    return _tag_tap(tag, octets, ts)
