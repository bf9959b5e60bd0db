"""Schedule ticks (gateway/schedule.py) driven by an injected clock: openings in the
store's time zone, no tick on first sight, and ticks that stay within caps."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from pathlib import Path

import msgspec
import pytest

from aislecast.apps.scenarios import setup_store
from aislecast.kernel.campaign import Campaign, Caps, Creative, Schedule, Trigger, Window
from aislecast.kernel.schema import Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key, public_key_pem
from edge.simstore import STORE_UUID, default_zones
from gateway.config import load_config
from gateway.parts import GatewayParts
from gateway.schedule import ScheduleTicker
from hq.db import HqDb
from hq.service import HqService
from tests.fakeclock import FakeClock

STORE = "store-s"
TZ = "Europe/Berlin"
_TICK = 10.0  # fake-clock tick of the week-long replay


def _at(day: str, hhmm: str, tz: str = TZ) -> float:
    """Unix time of a local wall-clock time (no wall clock read anywhere)."""
    h, m = hhmm.split(":")
    d = dt.date.fromisoformat(day)
    return dt.datetime(d.year, d.month, d.day, int(h), int(m), tzinfo=zoneinfo.ZoneInfo(tz)).timestamp()


def _campaign(cid: str, windows: list[Window], *, zones: list[str] | None = None,
              caps: Caps | None = None, tz: str | None = None) -> Campaign:
    return Campaign(id=cid, name=cid, stores=[STORE],
                    trigger=Trigger(kind="schedule", zones=zones or []),
                    schedule=Schedule(windows=windows, tz=tz),
                    creatives=[Creative(id="a", title=f"{cid} now")], caps=caps or Caps())


def test_openings_in_store_time_zone() -> None:
    ticker = ScheduleTicker(STORE)
    ticker.load([_campaign("happy-hour", [Window("17:00", "19:00", days=[1, 2, 3, 4, 5])])], tz=TZ)
    present = {"a": "entrance", "b": "produce"}
    mon = "2025-03-03"  # a Monday
    assert ticker.due(_at(mon, "16:59"), present) == []  # first sight: closed, no edge
    ticks = ticker.due(_at(mon, "17:00"), present)
    assert sorted(t.inbox for t in ticks) == ["a", "b"]
    assert all(t.campaigns == ("happy-hour",) for t in ticks)
    assert ticker.due(_at(mon, "17:01"), present) == []  # still open: no second tick
    assert ticker.due(_at(mon, "19:00"), present) == []  # closes
    # Tuesday: 16:00 UTC is 17:00 in Berlin (CET): the store's zone decides, not UTC
    assert ticker.due(_at("2025-03-04", "15:59", "UTC"), present) == []
    assert len(ticker.due(_at("2025-03-04", "16:00", "UTC"), present)) == 2
    assert ticker.due(_at("2025-03-08", "16:59"), present) == []
    assert ticker.due(_at("2025-03-08", "17:00"), present) == []  # Saturday: not in days
    assert ticker.openings == 2


def test_first_sight_mid_window_zones_and_pause() -> None:
    ticker = ScheduleTicker(STORE, TZ)
    zoned = _campaign("bakery", [Window("08:00", "09:00")], zones=["bakery"])
    other_tz = _campaign("ny", [Window("08:00", "09:00")], tz="America/New_York")
    ticker.load([zoned, other_tz])
    day = "2025-03-05"
    present = {"a": "bakery", "b": "entrance"}
    assert ticker.due(_at(day, "08:30"), present) == []  # restart/bundle mid-window
    assert ticker.due(_at(day, "09:00"), present) == []
    ticks = ticker.due(_at("2025-03-06", "08:00"), present)
    assert [(t.inbox, t.campaigns) for t in ticks] == [("a", ("bakery",))]  # zone filter
    # a live edit keeps the open state: no second opening
    ticker.upsert([msgspec.structs.replace(zoned, name="edited")])
    assert ticker.due(_at("2025-03-06", "08:05"), present) == []
    ny = ticker.due(_at("2025-03-06", "08:00", "America/New_York"), present)
    assert sorted(t.inbox for t in ny) == ["a", "b"]  # the campaign's own time zone
    ticker.pause(["bakery", "ny"])  # a pause forgets them
    assert len(ticker) == 0


def test_ticking_for_a_week_fires_each_opening_once_within_a_tick() -> None:
    """A week of ticks on a fake clock, across the spring DST change: each opening is
    seen once, within one tick. The tick is 10 s rather than the gateway's 0.5 s so the
    60,480 ticks take about a second; the ticker's logic does not depend on the period."""
    start = _at("2025-03-24", "00:00")  # a Monday; Berlin goes to CEST on Sunday 30th
    clock = FakeClock(wall=start)
    ticker = ScheduleTicker(STORE, TZ)
    ticker.load([_campaign("evening", [Window("17:00", "19:00")]),
                 _campaign("early", [Window("02:30", "03:30")])])
    fired: list[tuple[str, float]] = []

    def tick() -> None:
        for t in ticker.due(clock.time(), {"a": "entrance"}):
            fired.extend((c, clock.time()) for c in t.campaigns)

    clock.call_every(_TICK, tick)
    clock.advance(7 * 86400)
    assert clock.fired == 7 * 86400 / _TICK  # the witness: every tick of the week ran
    days = [f"2025-03-{d}" for d in range(24, 31)]
    evening = [t for c, t in fired if c == "evening"]
    assert evening == pytest.approx([_at(d, "17:00") for d in days], abs=_TICK)
    # 02:30 local does not exist on the 30th (clocks jump 02:00 -> 03:00): the window is
    # open from 03:00 CEST, the first tick after the jump
    early = [t for c, t in fired if c == "early"]
    assert early == pytest.approx([_at(d, "02:30") for d in days[:6]]
                                      + [_at("2025-03-30", "03:00")], abs=_TICK)
    assert ticker.openings == len(fired)


def _gateway(tmp_path: Path, campaigns: list[Campaign]) -> GatewayParts:
    key = load_or_create_signing_key(tmp_path / "hq.pem")
    svc = HqService(HqDb(f"sqlite:///{tmp_path}/hq.sqlite"), Signer(key))
    setup_store(svc, STORE, default_zones(), STORE_UUID)
    svc.upsert_store(Store(id=STORE, name="S", tz=TZ))
    for c in campaigns:
        svc.upsert_campaign(c)
    cfg = load_config({"gateway": "gw-s", "store": STORE, "data_dir": str(tmp_path / "gw"),
                       "hq_public_key": public_key_pem(Signer(key).public_key),
                       "scanner": {"backend": "sim"}})
    parts = GatewayParts.open(cfg, notify=lambda kind, data: None, on_bundle=lambda: None)
    parts.apply_bundle(svc.build_bundle(STORE))  # what a verified bundle does
    return parts


def test_gateway_ticks_decide_within_caps(tmp_path: Path) -> None:
    """Two windows the same day, one offer per shopper per day: the second opening's
    tick is decided and logged, but capped."""
    c = _campaign("twice", [Window("10:00", "11:00"), Window("15:00", "16:00")],
                  caps=Caps(per_shopper=5, per_day=1))
    gw = _gateway(tmp_path, [c])
    t = time.monotonic()
    for i in range(3):  # strong samples place the shopper in the entrance zone
        gw.presence.observe("shopper-1", "entrance", -45, -59, t + i * 0.2)
    assert gw.presence.present() == {"shopper-1": "entrance"}
    day = "2025-03-05"
    assert gw.triggers.schedule_tick(_at(day, "09:59")) == []
    first = gw.triggers.schedule_tick(_at(day, "10:00"))
    assert [(d.reason, d.campaign) for d in first] == [("offer", "twice")]
    assert first[0].offer is not None and first[0].offer.title == "twice now"
    assert gw.triggers.schedule_tick(_at(day, "11:00")) == []
    second = gw.triggers.schedule_tick(_at(day, "15:00"))
    assert [(d.reason, d.campaign) for d in second] == [("cap_per_day", "twice")]
    assert gw.triggers.schedule_tick(_at(day, "16:00")) == []
    third = gw.triggers.schedule_tick(_at("2025-03-06", "10:00"))  # a new local day
    assert [d.reason for d in third] == ["offer"]
    assert gw.recorder.stats.offers == 2 and gw.recorder.stats.decisions == 3
    gw.close()
