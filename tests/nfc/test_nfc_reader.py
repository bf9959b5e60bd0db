"""NfcReader against nfcpy's udp driver with emulated tags and phones on the far side."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Any

import pytest
from nfc_helpers import AISLECAST_AID, CARD_WAIT_S, TOKEN, count, make_reader, make_tag

import edge.nfc._reader as reader_mod
from edge.nfc import NfcDeviceError, NfcReader, Tap
from edge.nfc.emulator import (
    CardEmulator,
    IsoDepCard,
    Type2Card,
    type2_image,
)
from tests.harness import until


async def _run(port: int, card: Any, *, sessions: int = 1, techs: tuple[str, ...] = ("106A",),
               emu_kw: dict[str, Any] | None = None, **kw: Any) -> tuple[list[Tap], NfcReader]:
    taps: list[Tap] = []
    async with make_reader(port, taps, technologies=techs, **kw) as reader:
        with CardEmulator(port, card, presentations=sessions,
                          **({"timeout": CARD_WAIT_S} | (emu_kw or {}))) as emu:
            # a liveness bound, not a latency goal
            assert await asyncio.to_thread(emu.wait_sessions, sessions, 30.0), emu.error
    # no wait needed: leaving the reader awaits the thread's last call_soon_threadsafe,
    # queued after every tap it delivered (the loop runs them in order)
    return taps, reader


@pytest.mark.parametrize("kind", ["Type2Tag", "Type3Tag", "Type4Tag"])
async def test_each_tag_type_is_read(port: int, message: bytes, kind: str) -> None:
    card = make_tag(kind, message)
    techs = ("212F",) if kind == "Type3Tag" else ("106A",)
    taps, reader = await _run(port, card, techs=techs)
    assert len(taps) == 1, reader.stats()
    tap = taps[0]
    assert (tap.kind, tap.tag_type, tap.tag_id, tap.zone, tap.product) == (
        "tag", kind, "T-17", "dairy", "milk-1l")
    assert tap.uri == "https://hq.example/s/Ab3x?src=nfc&t=T-17"
    assert tap.records[0] == {"type": "smartposter", "uri": tap.uri, "title": "Milk deals"}


async def test_phone_token_read_and_repeat_suppressed(port: int) -> None:
    phone = IsoDepCard(token=lambda: TOKEN, aid=AISLECAST_AID)
    taps, reader = await _run(port, phone, sessions=3, repeat_holdoff_s=5.0)
    assert [t.token for t in taps] == [TOKEN.hex()]
    assert taps[0].kind == "phone"
    assert reader.stats()["repeats"] == 2


async def test_unknown_aid_answers_6a82_and_is_counted(port: int) -> None:
    other_app = IsoDepCard(token=lambda: TOKEN, aid=bytes.fromhex("A0000000041010"))
    assert other_app.handle(b"\x02\x00\xa4\x04\x00\x0a" + AISLECAST_AID + b"\x00") == (
        b"\x02\x6a\x82")
    taps, reader = await _run(port, other_app)
    assert taps == []
    assert reader.stats()["aid_not_found"] == 1


async def test_wrong_token_length_is_counted(port: int) -> None:
    taps, reader = await _run(port, IsoDepCard(token=lambda: b"\x01\x02", aid=AISLECAST_AID))
    assert taps == [] and reader.stats()["bad_token"] == 1


@pytest.mark.parametrize("after", [1, 3])
async def test_tag_removed_mid_read(port: int, message: bytes, after: int) -> None:
    card = Type2Card(type2_image(message))
    taps, reader = await _run(port, card, emu_kw={"vanish_after": after})
    assert taps == []
    assert count(reader, "read_failed", "no_ndef") == 1, reader.stats()


@pytest.mark.parametrize(
    ("payload", "counter"),
    [
        (b"\xd1\x01\xf0U\x04hq", "bad_ndef"),                      # record longer than data
        (b"\x00" * 20, "bad_ndef"),                                # not NDEF at all
        (b"\xd4\x1c\x03aislecast.io:tag{\"id\":1}", "bad_ndef"),   # wrong length field
        (b"\xd4\x1c\x0aurn:nfc:ext" * 3, "bad_ndef"),
    ],
)
async def test_garbage_ndef_counted_and_dropped(port: int, payload: bytes, counter: str) -> None:
    taps, reader = await _run(port, Type2Card(type2_image(payload)))
    assert taps == [] and reader.stats()[counter] == 1, reader.stats()


async def test_hostile_project_record_counted(port: int) -> None:
    import ndef  # noqa: PLC0415

    bad = ndef.Record("urn:nfc:ext:aislecast.io:tag", "", b'{"id": "\\u0000' + b"x" * 80 + b'"}')
    msg = b"".join(ndef.message_encoder([bad]))
    taps, reader = await _run(port, Type2Card(type2_image(msg)))
    assert taps == [] and reader.stats()["bad_record"] == 1


async def test_tlv_pointing_past_memory_is_no_ndef(port: int) -> None:
    memory = type2_image(b"")
    memory[16:20] = b"\x03\xff\xff\xf0"  # NDEF TLV claiming 65 KB
    taps, reader = await _run(port, Type2Card(memory))
    assert taps == [] and count(reader, "no_ndef", "read_failed", "bad_ndef") == 1


async def test_reader_gone_then_back(port: int, message: bytes,
                                     monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    real_open = reader_mod.open_frontend  # type: ignore[attr-defined]
    opened: list[Any] = []

    def flaky_open(path: str) -> Any:
        clf = real_open(path)
        if not opened:  # first device: unplugged on its third poll
            sense, calls = clf.sense, [0]

            def sense_then_gone(*a: Any, **k: Any) -> Any:
                calls[0] += 1
                if calls[0] == 3:
                    raise OSError(errno.ENODEV, "No such device")
                return sense(*a, **k)

            clf.sense = sense_then_gone
        opened.append(clf)
        return clf

    monkeypatch.setattr(reader_mod, "open_frontend", flaky_open)
    caplog.set_level(logging.INFO, logger="aislecast.edge.nfc")
    taps, reader = await _run(port, Type2Card(type2_image(message)),
                              emu_kw={"gap_s": 0.2})
    stats = reader.stats()
    assert len(taps) == 1
    assert stats["device_lost"] == 1 and stats["reconnects"] == 1
    lost = [r for r in caplog.records if getattr(r, "code", "") == "nfc_device_error"]
    assert len(lost) == 1 and "unplugged" in lost[0].getMessage()
    assert "USB cable" in lost[0].getMessage()


async def test_missing_device_logged_once_retried_and_exits_fast(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aislecast.edge.nfc")
    reader = NfcReader("tty:aislecastnone9:pn532", lambda t: None, poll_interval=0.02,
                       mute_after_tap_s=0.0, backoff_cap_s=0.02)
    async with reader:
        await until(lambda: count(reader, "open_failures") >= 2, timeout=10)
        stats = reader.stats()
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    assert stats["state"] == "waiting_for_device"
    assert count(reader, "open_failures") >= 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "missing" in text and "plug the reader in" in text


def test_wrong_device_path_is_a_clear_error() -> None:
    with pytest.raises(NfcDeviceError) as info:
        NfcReader("usb0", lambda t: None, poll_interval=0.02, mute_after_tap_s=0.0)
    assert info.value.cause == "bad_path" and "usb:VID:PID" in str(info.value)
    with pytest.raises(ValueError, match="technologies"):
        NfcReader("usb", lambda t: None, poll_interval=0.02, mute_after_tap_s=0.0,
                  technologies=("106X",))


async def test_idle_reader_stops_promptly_and_refuses_reentry(port: int) -> None:
    reader = make_reader(port, [])
    async with reader:
        await until(lambda: count(reader, "polls") >= 3, timeout=10)
        with pytest.raises(RuntimeError, match="re-entrant"):
            await reader.__aenter__()
        started = time.monotonic()
    assert time.monotonic() - started < 0.3
    assert reader.stats()["state"] == "stopped"
    assert count(reader, "polls") >= 3


async def test_callback_error_is_counted_not_fatal(port: int, message: bytes) -> None:
    def boom(tap: Tap) -> None:
        raise RuntimeError("consumer bug")

    reader = NfcReader(f"udp:127.0.0.1:{port}", boom, poll_interval=0.02,
                       mute_after_tap_s=0.002, repeat_holdoff_s=0.0)
    async with reader:
        with CardEmulator(port, Type2Card(type2_image(message)), presentations=2,
                          timeout=CARD_WAIT_S) as emu:
            assert await asyncio.to_thread(emu.wait_sessions, 2, 10.0)
    assert reader.stats()["callback_errors"] == 2  # delivered before the reader stopped
