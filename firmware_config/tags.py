"""Staff tag writer: put a store's shelf tag on an NFC tag, then read it back and verify.

A shelf tag carries the HQ short link (``https://HQ/s/CODE?src=nfc&t=TAG``, the same
link as the shelf label's QR code with ``src=nfc``), optionally as a Smart Poster with a
title, and our ``aislecast.io:tag`` record (tag id, zone, product). Tags that are too
small or read-only are refused before anything is written, with the capacity needed.

These functions block (nfcpy); from async code call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import nfc.clf
import nfc.tag

from aislecast.kernel.errors import AislecastError
from edge.nfc import classify, open_frontend, tune_udp
from edge.nfc.records import RecordDict, TagInfo, decode_message, encode_message, summarize

__all__ = [
    "TagReport",
    "TagWriteError",
    "build_message",
    "read_tag",
    "tag_url",
    "write_tag",
]

_POLL_S = 0.02  # a staff member holds the tag still; poll fast, the udp wait is capped
_TECHNOLOGIES = ("106A", "212F")  # Type 2/4A tags and FeliCa Type 3; 106B tags are rare


class TagWriteError(AislecastError):
    """Reading or writing a tag failed: ``reason`` is one of ``no_tag``, ``not_ndef``,
    ``too_small``, ``read_only``, ``removed``, ``verify_failed``."""

    def __init__(self, reason: str, message: str, *, hint: str | None = None,
                 needed: int | None = None, capacity: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        self.needed = needed
        self.capacity = capacity


class TagReport(msgspec.Struct, kw_only=True):
    """What a tag holds (``aislecast tags read``) or what was written and verified."""

    tag_type: str
    uid: str
    capacity: int
    length: int
    writeable: bool
    records: list[RecordDict]
    elapsed_ms: float = 0.0


def tag_url(url: str, tag_id: str) -> str:
    """The short link with ``src=nfc`` and ``t=<tag id>`` in its query (kept if present)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise TagWriteError("bad_url", f"not an http(s) URL: {url!r}",
                            hint="give the HQ short link, e.g. https://hq.example/s/Ab3x")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.setdefault("src", "nfc")
    query["t"] = tag_id
    return urlunsplit(parts._replace(query=urlencode(query)))


def build_message(*, tag_id: str, url: str, title: str | None = None,
                  zone: str | None = None, product: str | None = None) -> bytes:
    """The NDEF message for a shelf tag (raises ValueError on a malformed id/zone/product)."""
    info = TagInfo(tag_id=tag_id, zone=zone, product=product)
    return encode_message(uri=tag_url(url, tag_id), title=title, info=info)


def _wait_for_tag(clf: Any, timeout: float) -> Any:
    tune_udp(clf, _POLL_S)
    targets = [nfc.clf.RemoteTarget(t) for t in _TECHNOLOGIES]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        target = clf.sense(*targets, iterations=1)
        if target is not None:
            tag = nfc.tag.activate(clf, target)
            if tag is not None:
                return tag
        time.sleep(_POLL_S)
    raise TagWriteError("no_tag", f"no tag presented within {timeout:g} s",
                        hint="hold the tag flat on the reader and run the command again")


def _ndef_of(tag: Any) -> Any:
    try:
        ndef = tag.ndef
    except (nfc.tag.TagCommandError, nfc.clf.CommunicationError) as exc:
        raise _removed("read") from exc
    if ndef is None:
        raise TagWriteError("not_ndef", f"{tag.type} {_uid(tag)} holds no NDEF data area",
                            hint="format it first (e.g. `python -m nfc` tagtool format) "
                                 "or use an NFC Forum tag such as NTAG213")
    return ndef


def _removed(during: str) -> TagWriteError:
    return TagWriteError("removed", f"tag left the field during {during}",
                         hint="hold the tag still on the reader and run the command again; "
                              "after an interrupted write the tag may hold a partial message")


def _uid(tag: Any) -> str:
    return bytes(tag.identifier).hex()


def _report(tag: Any, ndef: Any, octets: bytes, started: float) -> TagReport:
    records = decode_message(octets)
    return TagReport(
        tag_type=str(tag.type), uid=_uid(tag), capacity=int(ndef.capacity),
        length=len(octets), writeable=bool(ndef.is_writeable),
        records=summarize(records) if records is not None else
        [{"type": "invalid", "record_type": "?", "length": len(octets)}],
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def read_tag(device: str, *, timeout: float = 10.0) -> TagReport:
    """Wait up to ``timeout`` s for a tag on ``device`` and report what it holds."""
    clf = open_frontend(device)
    try:
        tag = _wait_for_tag(clf, timeout)
        started = time.perf_counter()
        ndef = _ndef_of(tag)
        return _report(tag, ndef, bytes(ndef.octets), started)
    except OSError as exc:
        raise classify(device, exc, was_open=True) from exc
    finally:
        with contextlib.suppress(Exception):
            clf.close()


def write_tag(device: str, message: bytes, *, timeout: float = 10.0) -> TagReport:
    """Write ``message`` to the next tag on ``device``, read it back and verify it.

    Refuses, before writing anything, a tag that is read-only or whose NDEF capacity is
    below ``len(message)``. ``elapsed_ms`` covers write plus verify (not the wait).
    """
    clf = open_frontend(device)
    try:
        tag = _wait_for_tag(clf, timeout)
        started = time.perf_counter()
        ndef = _ndef_of(tag)
        if not ndef.is_writeable:
            raise TagWriteError("read_only", f"{tag.type} {_uid(tag)} is read-only (locked)",
                                hint="locked tags cannot be rewritten; use a fresh tag")
        if ndef.capacity < len(message):
            raise TagWriteError(
                "too_small",
                f"tag too small: the message needs {len(message)} bytes of NDEF capacity, "
                f"this {tag.type} holds {ndef.capacity}",
                hint=f"use a tag with at least {len(message)} bytes (NTAG213 holds 137, "
                     "NTAG215 496, NTAG216 868) or drop --title / shorten the URL",
                needed=len(message), capacity=int(ndef.capacity),
            )
        try:
            ndef.octets = message
        except (nfc.tag.TagCommandError, nfc.clf.CommunicationError) as exc:
            raise _removed("write") from exc
        try:
            ndef.has_changed  # noqa: B018 - the property re-reads the message from the tag
            fresh = tag.ndef
        except (nfc.tag.TagCommandError, nfc.clf.CommunicationError) as exc:
            raise _removed("verify") from exc
        if fresh is None:  # nfcpy maps a failed read-back to "no NDEF"
            raise _removed("verify")
        if bytes(fresh.octets) != message:
            raise TagWriteError("verify_failed", "read-back differs from what was written",
                                hint="the tag may be faulty or was moved; write it again")
        return _report(tag, fresh, message, started)
    except OSError as exc:
        raise classify(device, exc, was_open=True) from exc
    finally:
        with contextlib.suppress(Exception):
            clf.close()
