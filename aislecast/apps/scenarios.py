"""The six real-time marketing scenarios as campaign templates, each with a demo setup.

A scenario is a ``setup`` coroutine that configures HQ (store, zones, beacons,
campaigns; validated like any marketer's campaign) and a ``during`` coroutine running
alongside the demo (fire a flash campaign at HQ's API, retrain the model, feed NFC taps
until the reader is wired in). Schedules are computed in the store's time zone from the
moment the demo starts, so every scenario fires whenever it is run:

- planned: a weekend sale window (the demo adds today's window as a preview day);
- anticipated: a big-match campaign saved ``scheduled`` in advance, dated today, that
  starts a few seconds into the demo;
- location: zone entry and dwell offers, and a tap on a product's shelf tag;
- predictive: two campaigns ranked by the trained propensity model, variants picked by
  Thompson sampling, lead scores raised by repeated visits and dwell;
- interaction: offers answering an NFC tap or a QR scan of a shelf label, reported by
  the app over MQTT (the QR scan also counted by HQ's short link);
- flash: breaking news in a feed (served on 127.0.0.1) proposes a flash draft
  (hq.feeds), the demo's approver approves it at HQ's API, and it reaches every present
  opted-in shopper within seconds, within caps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import time
import urllib.request
import uuid
import zoneinfo
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from aislecast.apps.feed_server import FeedFiles, rss
from aislecast.kernel import topics
from aislecast.kernel.campaign import (
    Attribution,
    Audience,
    Caps,
    Creative,
    Schedule,
    Trigger,
    Window,
)
from aislecast.kernel.schema import SCHEMA_VERSION, Beacon, Campaign, InteractionReport, Store, Zone, encode
from edge.simstore import SimZone
from hq.campaigns import save_campaign
from hq.feed_rules import FeedRule, FeedSource, FlashTemplate
from hq.learning import set_profile, train
from hq.service import HqService

__all__ = ["DEMO_POSITION", "SCENARIOS", "Scenario", "setup_store", "tap"]

SetupFn = Callable[[HqService, str, list[SimZone], str], Coroutine[Any, Any, None]]
DuringFn = Callable[[HqService, str, Any], Coroutine[Any, Any, None]]
TZ = "Europe/Berlin"
DEMO_POSITION = (52.5219, 13.4132)  # the demo store stands in Berlin (its passes' locations)
SEGMENTS = ("family", "student", "foodie")


async def _idle(service: HqService, store: str, state: Any) -> None:
    await asyncio.Event().wait()


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    setup: SetupFn
    during: DuringFn = _idle
    rotation_k: int = 9


def setup_store(service: HqService, store: str, zones: list[SimZone], beacon_uuid: str) -> None:
    service.upsert_store(Store(id=store, name="Aislecast Demo Market", tz=TZ,
                               latitude=DEMO_POSITION[0], longitude=DEMO_POSITION[1]))
    for i, z in enumerate(zones):
        service.upsert_zone(store, Zone(id=z.id, name=z.id.title(), kind=z.id if z.id in {
            "entrance", "checkout"} else "aisle", max_radius_m=z.radius_m, x=z.x, y=z.y))
        service.upsert_beacon(store, Beacon(id=f"b-{z.id}", zone=z.id, uuid=beacon_uuid,
                                            major=1, minor=i + 1))


def _from_now(hours: float, *, offset_h: float = 0.0) -> list[Window]:
    """Local-time windows covering ``offset_h`` .. ``offset_h + hours`` from this minute,
    split at midnight, so a demo started at any hour (23:59 included) has its window."""
    start = dt.datetime.now(zoneinfo.ZoneInfo(TZ)).replace(second=0, microsecond=0)
    start += dt.timedelta(hours=offset_h)
    end = start + dt.timedelta(hours=hours)
    windows: list[Window] = []
    day = start
    while day < end:
        midnight = dt.datetime.combine(day.date() + dt.timedelta(days=1), dt.time(), day.tzinfo)
        stop = min(end, midnight)
        stop_txt = "24:00" if stop == midnight else f"{stop.hour:02d}:{stop.minute:02d}"
        windows.append(Window(f"{day.hour:02d}:{day.minute:02d}", stop_txt,
                              dates=[day.date().isoformat()]))
        day = midnight
    return windows


def _sold_as(cid: str) -> Attribution:
    """Lift counts the till simulator's lines of the campaign's own category (named by
    its id, aislecast.apps.till_sim), not the staples every basket holds."""
    return Attribution(categories=[cid])


def _coupon(cid: str, title: str, body: str, code: str) -> Creative:
    return Creative(id=cid, title=title, body=body, format="coupon", coupon_code=code)


async def _planned(service: HqService, store: str, zones: list[SimZone], uuid_: str) -> None:
    setup_store(service, store, zones, uuid_)
    # the weekend window, plus a preview from now, so the demo fires on any day and hour
    windows = [Window("08:00", "22:00", days=[6, 7]), *_from_now(2.0)]
    await save_campaign(service, Campaign(
        id="weekend-sale", name="Weekend sale", stores=[store], scenario="planned",
        trigger=Trigger(kind="enter", zones=["entrance"]),
        triggers=[Trigger(kind="enter", zones=["drinks", "produce"])],
        schedule=Schedule(windows=windows), validity_s=3600, holdout_pct=10.0,
        attribution=_sold_as("weekend-sale"),
        creatives=[_coupon("a", "Weekend sale: 20 % off everything", "Until Sunday 22:00.",
                           "WKND20")],
        # quiet hours are shown, twelve hours away, so they never silence the demo itself
        caps=Caps(per_shopper=1, per_day=2, quiet=_from_now(2.0, offset_h=12.0)),
    ), push=False)


async def _anticipated(service: HqService, store: str, zones: list[SimZone], uuid_: str) -> None:
    setup_store(service, store, zones, uuid_)
    await save_campaign(service, Campaign(
        id="big-match", name="Big match night", stores=[store], scenario="anticipated",
        status="scheduled", trigger=Trigger(kind="enter"),
        schedule=Schedule(start=time.time() + 2.0, windows=_from_now(2.0)), validity_s=1800,
        countdown=True, priority=3,
        creatives=[_coupon("a", "Match night: beer crate -25 %", "Kick-off tonight.", "GOAL25")],
    ), push=False)


async def _location(service: HqService, store: str, zones: list[SimZone], uuid_: str) -> None:
    setup_store(service, store, zones, uuid_)
    offers = {
        "bakery": ("Warm croissants, 2 for 1", "Fresh from the oven, next 15 minutes only."),
        "dairy": ("Greek yoghurt -30 %", "Today in the dairy aisle."),
        "drinks": ("Cold brew: buy 3 pay 2", "Stock up for the weekend."),
        "produce": ("Strawberries 1.99", "Local, picked this morning."),
    }
    for zone, (title, body) in offers.items():
        await save_campaign(service, Campaign(
            id=f"loc-{zone}", name=f"{zone} welcome", stores=[store], scenario="location",
            trigger=Trigger(kind="enter", zones=[zone]), validity_s=900,
            creatives=[_coupon("a", title, body, f"{zone[:4].upper()}15")],
            caps=Caps(per_shopper=1), holdout_pct=10.0, priority=1,
            attribution=_sold_as(f"loc-{zone}"),
        ), push=False)
    await save_campaign(service, Campaign(
        id="loc-dwell-dairy", name="cheese counter", stores=[store], scenario="location",
        trigger=Trigger(kind="dwell", zones=["dairy"], min_dwell_s=4.0), priority=2,
        creatives=[Creative(id="a", title="Ask for a free cheese tasting", format="button")],
    ), push=False)
    await save_campaign(service, Campaign(
        id="obj-coffee-tag", name="coffee shelf tag", stores=[store], scenario="location",
        trigger=Trigger(kind="tap", tags=["tag-coffee"]), priority=2,
        creatives=[_coupon("a", "Barista beans -2 EUR", "The pack you just tapped.", "BEAN2")],
    ), push=False)


async def _taps(service: HqService, store: str, state: Any,
                kinds: tuple[str, ...] = ("tap",)) -> None:
    """Until the NFC reader is wired in: present shoppers tap/scan a tag every 2 s."""
    i = 0
    while True:
        await asyncio.sleep(2.0)
        gw = state.gateway
        if gw is None:
            continue
        for inbox, zone in list(gw.parts.presence.present().items()):
            tap(gw, kinds[i % len(kinds)], inbox, zone, "tag-coffee")
            i += 1


def tap(gw: Any, kind: str, inbox: str, zone: str | None, tag: str) -> str:
    """A shopper's tap/scan on ``tag``, through the gateway's public interaction path
    (the same one NFC reader taps and app reports take); returns the decision reason."""
    d = gw.interaction(kind, inbox, zone, [tag], {"tag": tag, "source": "demo"})
    return "none" if d is None else str(d.reason)


async def _predictive(service: HqService, store: str, zones: list[SimZone], uuid_: str) -> None:
    setup_store(service, store, zones, uuid_)
    for cid, zone_list, fmt in (("pred-snacks", ["drinks", "produce"], "coupon"),
                                ("pred-recipes", ["drinks", "produce", "bakery"], "landing")):
        variants = [Creative(id=v, title=f"{cid} {v}", format=fmt, url="https://ex.invalid/r",
                             coupon_code="SNACK10" if fmt == "coupon" else None)
                    for v in ("a", "b", "c")]
        await save_campaign(service, Campaign(
            id=cid, name=cid, stores=[store], scenario="predictive", priority=1,
            trigger=Trigger(kind="enter", zones=zone_list),
            triggers=[Trigger(kind="dwell", zones=zone_list, min_dwell_s=3.0)],
            creatives=variants, caps=Caps(per_shopper=1, min_gap_s=5.0), holdout_pct=10.0,
            attribution=_sold_as(cid),
            audience=Audience(segments=list(SEGMENTS)),
        ), push=False)


async def _learn(service: HqService, store: str, state: Any) -> None:
    """Give shoppers segments, then retrain and republish the bundle every 4 s."""
    for i, p in enumerate(state.phones):
        set_profile(service, p.inbox, [SEGMENTS[i % len(SEGMENTS)]], "gold" if i % 2 else "")
    while True:
        train(service)
        await service.publish_bundle(store)
        await asyncio.sleep(4.0)


async def _interaction(service: HqService, store: str, zones: list[SimZone], uuid_: str) -> None:
    setup_store(service, store, zones, uuid_)
    await save_campaign(service, Campaign(
        id="touch-coffee", name="tap or scan the coffee label", stores=[store],
        scenario="interaction", trigger=Trigger(kind="tap", tags=["tag-coffee"]),
        triggers=[Trigger(kind="scan", tags=["tag-coffee"])], caps=Caps(per_shopper=2),
        creatives=[Creative(id="a", title="Origin story + 10 % off", format="landing",
                            url="https://ex.invalid/coffee")],
    ), push=False)


async def _interactions(service: HqService, store: str, state: Any) -> None:
    """Every 2 s each shopper in the store taps the coffee shelf tag or scans its QR label.

    The real path: the app publishes an InteractionReport (its rotating token, the tag id)
    on ``px/v1/stores/{store}/interactions`` and the gateway decides on it
    (gateway/taps.py); a scan first follows the label's HQ short link, which HQ counts.
    """

    link = await state.hq.shortlinks.mint("https://ex.invalid/coffee", tag="tag-coffee",
                                          store=store, campaign="touch-coffee")
    i = 0
    while True:
        await asyncio.sleep(2.0)
        gw = state.gateway
        present = gw.parts.presence.present() if gw is not None else {}
        for phone in [p for p in state.phones if p.inbox in present]:
            kind: Literal["tap", "scan"] = "scan" if i % 2 else "tap"
            i += 1
            if kind == "scan":
                await asyncio.to_thread(_follow, state.hq.http_port, f"/s/{link.code}?src=qr")
            report = InteractionReport(v=SCHEMA_VERSION, id=uuid.uuid4().hex, kind=kind,
                                       token=phone.token().hex(), tag="tag-coffee", ts=time.time(),
                                       code=link.code)
            await phone.link.publish(topics.interactions(store, phone.inbox), encode(report), qos=1)


def _follow(port: int, path: str) -> int:
    """GET a short link on HQ like a phone's browser would, without following the redirect."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"user-agent": "aislecast-demo"})
        return conn.getresponse().status
    finally:
        conn.close()


async def _flash_setup(service: HqService, store: str, zones: list[SimZone], uuid_: str) -> None:
    setup_store(service, store, zones, uuid_)


_NEWS = rss("Stadtnachrichten", [("demo-rain-1", "Starker Regen ab dem Nachmittag",
                                    "Der Wetterdienst erwartet Regen bis zum Abend.")],
            language="de")
_RAIN = FeedRule(name="rain", keywords=["regen", "rain"], sentiment_min=-0.5,
                 flash=FlashTemplate(title="Breaking: umbrellas -50 % for 30 minutes",
                                     stores=[], format="coupon", coupon_code="RAIN50",
                                     validity_s=1800))


def _api(port: int, token: str, method: str, path: str) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}" if method == "POST" else None,
                                 method=method, headers={"content-type": "application/json",
                                                         "authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - HQ on 127.0.0.1
        return json.loads(resp.read())


async def _proposed(port: int, token: str) -> str:
    """The first flash draft waiting for approval, as HQ's approval queue lists it."""
    for _ in range(600):  # a minute: the demo's feed is polled every half second
        pending = await asyncio.to_thread(_api, port, token, "GET", "/api/approvals")
        if pending:
            return str(pending[0]["campaign"]["id"])
        await asyncio.sleep(0.1)
    raise RuntimeError("no flash draft proposed from the demo's news feed within a minute")


async def _fire_flash(service: HqService, store: str, state: Any) -> None:
    """Breaking news: after 2 s a local news feed served on 127.0.0.1 says rain; HQ's
    feed watcher matches the rain rule and proposes a flash draft (hq.feeds), the demo's
    approver approves it over HQ's HTTP API, and the phones present get it in seconds."""
    await asyncio.sleep(2.0)
    port, token = state.hq.http_port, state.credentials.approver_token
    rule = msgspec.structs.replace(_RAIN, flash=msgspec.structs.replace(_RAIN.flash, stores=[store]))
    async with FeedFiles({"/news.rss": _NEWS}) as feed:
        t0 = time.monotonic()
        state.hq.feeds.add(sources=[FeedSource(name="city-news", url=feed.url("/news.rss"))],
                           rules=[rule])
        try:
            state.log.append(f"news feed served at {feed.url('/news.rss')}")
            cid = await _proposed(port, token)
            state.log.append(f"flash draft {cid} proposed in {time.monotonic() - t0:.1f} s; "
                             "approving")
            await asyncio.to_thread(_api, port, token, "POST", f"/api/campaigns/{cid}/approve")
            state.log.append(f"flash {cid} approved by demo-approver: live")
            await asyncio.Event().wait()
        finally:  # the feed goes away with the scenario: HQ stops polling it first
            state.hq.feeds.remove("city-news")


SCENARIOS: dict[str, Scenario] = {
    "planned": Scenario("planned", "weekend sale window (planned)", _planned),
    "anticipated": Scenario("anticipated", "big match armed in advance, fires on the day",
                            _anticipated),
    "location": Scenario("location", "zone entry/dwell offers and product tag taps",
                         _location, _taps),
    "predictive": Scenario("predictive", "propensity ranking and bandit variants", _predictive,
                           _learn),
    "interaction": Scenario("interaction", "NFC tap or QR scan of a shelf label", _interaction,
                            _interactions),
    "flash": Scenario("flash", "breaking news in a feed proposes a flash; an approver sends it",
                      _flash_setup, _fire_flash),
}
