"""Tag writer and ``aislecast tags`` against emulated tags on nfcpy's udp driver."""

from __future__ import annotations

import json

import pytest
from nfc_helpers import CARD_WAIT_S, make_tag

from aislecast.apps.cli import main
from edge.nfc.emulator import (
    CardEmulator,
    Type2Card,
    type2_image,
)
from edge.nfc.records import decode_message, summarize
from firmware_config.tags import TagWriteError, build_message, tag_url, write_tag

URL = "https://hq.example/s/Ab3x"


def _msg(title: str | None = "Fresh milk offers") -> bytes:
    return build_message(tag_id="T-0417", url=URL, title=title, zone="dairy", product="milk-1l")


def test_tag_url_adds_src_and_id() -> None:
    assert tag_url(URL, "T-1") == "https://hq.example/s/Ab3x?src=nfc&t=T-1"
    assert tag_url(URL + "?src=qr", "T-1") == "https://hq.example/s/Ab3x?src=qr&t=T-1"
    with pytest.raises(TagWriteError):
        tag_url("ftp://x/y", "T-1")


@pytest.mark.parametrize("kind", ["Type2Tag", "Type3Tag", "Type4Tag"])
def test_write_then_verify_each_type(port: int, kind: str) -> None:
    card = make_tag(kind, b"")
    message = _msg()
    with CardEmulator(port, card, presentations=1, timeout=CARD_WAIT_S):
        report = write_tag(f"udp:127.0.0.1:{port}", message, timeout=5.0)
    assert report.length == len(message)
    assert report.records == summarize(decode_message(message) or [])
    assert report.records[1] == {"type": "aislecast", "tag_id": "T-0417", "zone": "dairy",
                                 "product": "milk-1l"}
    assert 0 < report.elapsed_ms < 1000


def test_too_small_names_capacity_needed(port: int) -> None:
    message = _msg()
    card = Type2Card(type2_image(b"", data_size=48))
    with CardEmulator(port, card, presentations=1, timeout=CARD_WAIT_S), pytest.raises(TagWriteError) as info:
        write_tag(f"udp:127.0.0.1:{port}", message, timeout=5.0)
    assert info.value.reason == "too_small" and info.value.needed == len(message)
    assert f"needs {len(message)} bytes" in str(info.value)


def test_read_only_refused(port: int) -> None:
    with CardEmulator(port, Type2Card(type2_image(b"\xd0\x00\x00", read_only=True)),
                      presentations=1, timeout=CARD_WAIT_S), \
            pytest.raises(TagWriteError, match="read-only") as info:
        write_tag(f"udp:127.0.0.1:{port}", _msg(), timeout=5.0)
    assert info.value.reason == "read_only"


@pytest.mark.parametrize(
    ("kind", "after"), [("Type2Tag", 8), ("Type2Tag", 30), ("Type3Tag", 4), ("Type4Tag", 8)]
)
def test_removed_mid_write(port: int, kind: str, after: int) -> None:
    card = make_tag(kind, b"")
    # the card waits CARD_WAIT_S for each command, so only ``after`` ends the session (the
    # default 0.25 s read a slow reader on a loaded machine as gone, mid-activation)
    emulator = CardEmulator(port, card, presentations=1, vanish_after=after,
                            timeout=CARD_WAIT_S)
    with emulator, pytest.raises(TagWriteError) as info:
        write_tag(f"udp:127.0.0.1:{port}", _msg(), timeout=5.0)
    assert info.value.reason == "removed" and "partial" in str(info.value)


def test_no_tag_times_out(port: int) -> None:
    with pytest.raises(TagWriteError, match=r"no tag presented within 0\.3 s"):
        write_tag(f"udp:127.0.0.1:{port}", _msg(), timeout=0.3)


def test_cli_write_then_read_json(port: int, capsys: pytest.CaptureFixture[str]) -> None:
    dev = f"udp:127.0.0.1:{port}"
    card = Type2Card(type2_image(b"", data_size=496))
    with CardEmulator(port, card, presentations=2, timeout=CARD_WAIT_S):
        assert main(["tags", "write", "--device", dev, "--tag-id", "T-9", "--url", URL,
                     "--title", "Cheese", "--zone", "deli", "--timeout", "5"]) == 0
        assert "verified in" in capsys.readouterr().out
        assert main(["tags", "read", "--device", dev, "--json", "--timeout", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tag_type"] == "Type2Tag" and out["uid"] == "5312ab34cd5678"
    assert out["records"][0] == {"type": "smartposter", "title": "Cheese",
                                 "uri": "https://hq.example/s/Ab3x?src=nfc&t=T-9"}
    assert out["records"][1] == {"type": "aislecast", "tag_id": "T-9", "zone": "deli"}


def test_cli_bad_device_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tags", "read", "--device", "com3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aislecast: error: NFC reader 'com3': bad_path")
    assert "Traceback" not in err


def test_cli_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["tags", "write", "--help"])
    assert "examples:" in capsys.readouterr().out
