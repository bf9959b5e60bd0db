"""TapRouter without a broker: a reader that keeps failing is restarted and never raises."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import pytest

import gateway.taps as taps_mod
from edge.nfc import Tap
from gateway.config import NfcSection
from gateway.taps import TapRouter
from tests.harness import until


def _router(cfg: NfcSection, calls: list[tuple[Any, ...]], **kw: Any) -> TapRouter:
    def act(kind: str, inbox: str | None, zone: str | None, tags: Sequence[str],
            detail: dict[str, Any]) -> None:
        calls.append((kind, inbox, zone, list(tags), detail))

    return TapRouter(cfg, resolve=lambda tok, now: {"00" * 8: "inbox-1"}.get(tok),
                     zone_of=lambda inbox: "produce", zones=lambda: {"produce", "dairy"},
                     act=act, bad=lambda what: calls.append(("bad", what)), **kw)


async def test_a_reader_that_raises_is_restarted_and_never_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[int] = []

    def broken(*a: Any, **k: Any) -> Any:
        made.append(1)
        raise OSError("reader exploded")

    monkeypatch.setattr(taps_mod, "NFC_BACKOFF_CAP_S", 0.01)
    router = _router(NfcSection(device="udp:127.0.0.1:20001"), [], reader_factory=broken)
    task = asyncio.create_task(router.run())
    await until(lambda: router.stats["reader_restarts"] >= 3 or task.done(), timeout=10)
    assert not task.done()  # still supervising
    assert len(made) >= 3 and router.stats["reader_restarts"] >= 3
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_no_device_means_no_reader() -> None:
    router = _router(NfcSection(), [])
    await asyncio.wait_for(router.run(), 1.0)
    assert "reader_up" not in router.metrics()


def test_reader_taps_phone_unknown_token_and_shelf_tag() -> None:
    calls: list[tuple[Any, ...]] = []
    router = _router(NfcSection(zone="checkout", reader_tag="till-1"), calls)
    router.on_tap(Tap(kind="phone", ts=0.0, tag_uid="08", tag_type="Type4Tag", token="00" * 8))
    router.on_tap(Tap(kind="phone", ts=0.0, tag_uid="08", tag_type="Type4Tag", token="11" * 8))
    router.on_tap(Tap(kind="tag", ts=0.0, tag_uid="53", tag_type="Type2Tag", tag_id="T-17"))
    assert calls[0] == ("tap", "inbox-1", "checkout", ["till-1"], {"source": "nfc_reader"})
    assert calls[1][:4] == ("tap", None, "checkout", [])  # a tag on the reader: logged only
    assert router.stats["reader_tokens_unknown"] == 1
