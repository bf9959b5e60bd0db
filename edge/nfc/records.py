"""NDEF records we read and write: URI, Smart Poster, Text and our own ``aislecast.io:tag``.

Everything that parses tag bytes here is total: :func:`decode_message`,
:func:`decode_tag_record` and :func:`summarize` never raise, whatever the tag holds.
They return ``None`` (or a ``{"type": "invalid"}`` summary) and let the caller count it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

import msgspec
import ndef

from edge.nfc.settings import MAX_FIELD_LEN

__all__ = [
    "MAX_FIELD_LEN",
    "MAX_NDEF_BYTES",
    "TAG_RECORD_TYPE",
    "RecordDict",
    "TagInfo",
    "decode_message",
    "decode_tag_record",
    "encode_message",
    "encode_tag_record",
    "summarize",
    "tag_id_from_uri",
]

#: NFC Forum external type (NFC RTD 1.0 §3.4: ``<domain>:<type>``), as ndeflib names it.
TAG_RECORD_TYPE = "urn:nfc:ext:aislecast.io:tag"
#: Our record's payload is tiny; anything bigger is hostile or not ours.
_MAX_TAG_PAYLOAD = 512
#: NTAG216 holds 868 bytes and large Type 4 tags a few KiB; we never need more than 8 KiB.
MAX_NDEF_BYTES = 8192
_FIELD_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_FIELD_LEN}}}")

RecordDict = dict[str, str | int]


class TagInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What our own record says about a shelf tag."""

    tag_id: str
    zone: str | None = None
    product: str | None = None


def encode_tag_record(info: TagInfo) -> ndef.Record:
    """Our external record: compact JSON ``{"v":1,"id":...,"z":zone,"p":product}``."""
    for name in ("tag_id", "zone", "product"):
        value = getattr(info, name)
        if value is not None and not _FIELD_RE.fullmatch(value):
            raise ValueError(
                f"{name} must be 1-{MAX_FIELD_LEN} printable ASCII characters without spaces"
            )
    body: dict[str, str | int] = {"v": 1, "id": info.tag_id}
    if info.zone is not None:
        body["z"] = info.zone
    if info.product is not None:
        body["p"] = info.product
    return ndef.Record(TAG_RECORD_TYPE, "", msgspec.json.encode(body))


def _clean(value: object) -> str | None:
    if isinstance(value, str) and _FIELD_RE.fullmatch(value):
        return value
    return None


def decode_tag_record(payload: bytes | bytearray) -> TagInfo | None:
    """Parse our record's payload: compact JSON, or ``id=..;zone=..;product=..`` text.

    Returns ``None`` for anything malformed, oversized or missing the tag id; never raises.
    """
    if not payload or len(payload) > _MAX_TAG_PAYLOAD:
        return None
    fields: dict[str, object]
    if payload[:1] == b"{":
        try:
            decoded = msgspec.json.decode(bytes(payload))
        except msgspec.DecodeError:
            return None
        if not isinstance(decoded, dict):
            return None
        fields = decoded
    else:
        try:
            text = bytes(payload).decode("ascii")
        except UnicodeDecodeError:
            return None
        fields = {}
        for part in re.split(r"[;&\n]", text):
            key, sep, value = part.partition("=")
            if sep:
                fields[key.strip()] = value.strip()
    tag_id = _clean(fields.get("id", fields.get("t")))
    if tag_id is None:
        return None
    return TagInfo(
        tag_id=tag_id,
        zone=_clean(fields.get("zone", fields.get("z"))),
        product=_clean(fields.get("product", fields.get("p"))),
    )


def encode_message(
    *, uri: str, title: str | None = None, info: TagInfo | None = None
) -> bytes:
    """The message a shelf tag carries: URI (or Smart Poster with title) then our record."""
    first: ndef.Record = (
        ndef.UriRecord(uri) if title is None else ndef.SmartposterRecord(uri, title=title)
    )
    records = [first] if info is None else [first, encode_tag_record(info)]
    return b"".join(ndef.message_encoder(records))


def decode_message(octets: bytes | bytearray) -> list[ndef.Record] | None:
    """Strictly decode an NDEF message; ``None`` when empty, oversized or malformed."""
    if not octets or len(octets) > MAX_NDEF_BYTES:
        return None
    try:
        return list(ndef.message_decoder(bytes(octets), errors="strict"))
    except Exception:  # noqa: BLE001 - ndeflib raises DecodeError, and worse on hostile input
        return None


def _summarize_one(record: ndef.Record) -> RecordDict:
    try:
        if isinstance(record, ndef.SmartposterRecord):
            out: RecordDict = {"type": "smartposter", "uri": str(record.resource.iri)}
            if record.title:
                out["title"] = str(record.title)
            return out
        if isinstance(record, ndef.UriRecord):
            return {"type": "uri", "uri": str(record.iri)}
        if isinstance(record, ndef.TextRecord):
            return {"type": "text", "text": str(record.text), "language": str(record.language)}
        if record.type == TAG_RECORD_TYPE:
            info = decode_tag_record(record.data)
            if info is None:
                return {"type": "invalid", "record_type": record.type, "length": len(record.data)}
            out = {"type": "aislecast", "tag_id": info.tag_id}
            if info.zone is not None:
                out["zone"] = info.zone
            if info.product is not None:
                out["product"] = info.product
            return out
        return {"type": "other", "record_type": str(record.type), "length": len(record.data)}
    except Exception:  # noqa: BLE001 - a hostile record must not take the reader down
        return {"type": "invalid", "record_type": "?", "length": 0}


def summarize(records: Iterable[ndef.Record]) -> list[RecordDict]:
    """Plain dicts for logs, JSON output and :class:`edge.nfc.Tap` (never raises)."""
    return [_summarize_one(r) for r in records]


def tag_id_from_uri(uri: str) -> str | None:
    """The ``t`` query parameter of a shelf tag's URL, when it is a clean id."""
    try:
        values = parse_qs(urlsplit(uri).query).get("t")
    except ValueError:
        return None
    return _clean(values[0]) if values else None
