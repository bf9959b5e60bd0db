"""Our NDEF record and the total parsers: round trips, hostile input, and a canary."""

from __future__ import annotations

import inspect
import socket

import ndef
import nfc.clf
import nfc.clf.device
import nfc.clf.udp
import nfc.tag.tt4
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.nfc import AISLECAST_AID, NfcDeviceError, check_path
from edge.nfc.records import (
    TAG_RECORD_TYPE,
    TagInfo,
    decode_message,
    decode_tag_record,
    encode_message,
    encode_tag_record,
    summarize,
    tag_id_from_uri,
)


def test_tag_record_round_trip_and_key_value_form() -> None:
    info = TagInfo(tag_id="T-17", zone="dairy", product="milk-1l")
    rec = encode_tag_record(info)
    assert rec.type == TAG_RECORD_TYPE and bytes(rec.data).startswith(b'{"v":1,"id":"T-17"')
    assert decode_tag_record(rec.data) == info
    assert decode_tag_record(b"id=T-2;zone=z1&product=p") == TagInfo(tag_id="T-2", zone="z1",
                                                                    product="p")
    assert decode_tag_record(b'{"id":"T-3","zone":"a b"}') == TagInfo(tag_id="T-3")


@pytest.mark.parametrize("payload", [b"", b"{", b"[1]", b'{"id":7}', b"zone=z", b"\xff\xfe",
                                     b'{"id":"' + b"x" * 600 + b'"}', b"id=", b"null"])
def test_bad_tag_payloads_give_none(payload: bytes) -> None:
    assert decode_tag_record(payload) is None


def test_encode_refuses_unprintable_fields() -> None:
    with pytest.raises(ValueError, match="printable"):
        encode_tag_record(TagInfo(tag_id="has space"))


def test_message_summary_and_uri_fallback() -> None:
    octets = encode_message(uri="https://hq.example/s/X?src=nfc&t=T-5", title="Hi",
                            info=TagInfo(tag_id="T-5"))
    records = decode_message(octets)
    assert records is not None
    text = ndef.TextRecord("hello", "en")
    assert summarize([*records, text]) == [
        {"type": "smartposter", "uri": "https://hq.example/s/X?src=nfc&t=T-5", "title": "Hi"},
        {"type": "aislecast", "tag_id": "T-5"},
        {"type": "text", "text": "hello", "language": "en"},
    ]
    assert tag_id_from_uri("https://hq.example/s/X?t=T-5") == "T-5"
    assert tag_id_from_uri("https://hq.example/s/X") is None


@settings(max_examples=300, deadline=None, print_blob=True)
@given(st.binary(max_size=300))
def test_parsers_never_raise(data: bytes) -> None:
    decode_tag_record(data)
    records = decode_message(data)
    if records is not None:
        summarize(records)
    summarize([ndef.Record(TAG_RECORD_TYPE, "", data), ndef.Record("urn:nfc:wkt:U", "", data)])


def test_device_paths() -> None:
    for good in ("usb", "usb:054c:06c3", "usb:001:023", "tty:USB0:pn532", "tty:AMA0",
                 "udp", "udp:127.0.0.1:24680"):
        check_path(good)
    for bad in ("", "usb0", "com3", "udp:127.0.0.1:99999", "tty:", "/dev/ttyUSB0"):
        with pytest.raises(NfcDeviceError):
            check_path(bad)


def test_aid_is_proprietary() -> None:
    assert AISLECAST_AID[0] == 0xF0 and AISLECAST_AID[1:] == b"AISLECAST"


def test_nfcpy_private_parts_we_rely_on() -> None:
    """Canary: fails when an nfcpy upgrade moves what edge.nfc reaches into."""
    assert inspect.signature(nfc.clf.udp.Device._recv_data).parameters.keys() >= {"timeout"}
    for name in ("sense_tta", "sense_ttb", "sense_ttf", "mute"):
        assert callable(getattr(nfc.clf.udp.Device, name, None)), name
    # the emulator reads the device's UDP socket (an instance attribute, so make one)
    dev = nfc.clf.udp.Device("127.0.0.1", 31999)
    try:
        assert isinstance(dev.socket, socket.socket)
    finally:
        dev.socket.close()
    assert callable(nfc.clf.device.connect)
    dep = nfc.tag.tt4.IsoDepInitiator(None, 64, 0.1)
    assert {"fwt", "n_retry_ack", "n_retry_nak"} <= vars(dep).keys()
    assert "timeout" in inspect.signature(nfc.clf.ContactlessFrontend.exchange).parameters
