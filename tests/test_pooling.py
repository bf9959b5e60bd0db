"""Two gateways pooling sightings: one owner per shopper, handover to the nearer one."""

from __future__ import annotations

from aislecast.kernel import topics
from aislecast.kernel.presence_schema import SightingSummary
from aislecast.kernel.schema import decode
from gateway.pooling import SightingPool
from gateway.presence import PresenceEngine

RADII = {"entrance": 4.0, "checkout": 4.0}


def _pair() -> tuple[SightingPool, SightingPool]:
    return (SightingPool(PresenceEngine(RADII, gateway="gw-1"), "st", "gw-1"),
            SightingPool(PresenceEngine(RADII, gateway="gw-2"), "st", "gw-2"))


def _exchange(a: SightingPool, b: SightingPool, ts: float) -> None:
    for src, dst in ((a, b), (b, a)):
        for payload in src.build(ts, 1.7e9):
            assert dst.ingest(src.gateway, payload, ts) is not None


def test_topic_and_payload() -> None:
    a, _ = _pair()
    assert a.topic == "px/v1/stores/st/gateways/gw-1/presence"
    assert topics.parse(a.topic) == topics.TopicMatch(topics.Kind.GATEWAY_PRESENCE, "st", "gw-1")
    a.engine.observe("inbox-1", "entrance", -55, -59, 0.0)
    (payload,) = a.build(0.5, 1.7e9)
    msg = decode(payload, SightingSummary)
    assert msg.kind == "sighting_summary" and msg.gateway == "gw-1"
    (s,) = msg.sightings
    assert (s.inbox, s.zone, s.claimed) == ("inbox-1", "entrance", True)
    assert len(payload) < 160


def test_walking_from_one_gateway_to_the_other_hands_over_once() -> None:
    a, b = _pair()
    owners: set[tuple[str, ...]] = set()
    for i in range(300):  # 60 s at 5 Hz: entrance (gw-1) -> checkout (gw-2)
        t = i * 0.2
        near, far = (-55, -85) if t < 30 else (-85, -55)
        a.engine.observe("x", "entrance", near, -59, t)
        b.engine.observe("x", "checkout", far, -59, t + 0.01)
        if i % 5 == 0:
            _exchange(a, b, t + 0.02)
        who = tuple(p.gateway for p in (a, b) if p.engine.zone_of("x") is not None)
        assert len(who) <= 1, f"both claim at t={t}"
        owners.add(who)
    assert a.engine.zone_of("x") is None and b.engine.zone_of("x") == "checkout"
    assert ("gw-1",) in owners


def test_bad_and_foreign_payloads_are_counted() -> None:
    a, _ = _pair()
    assert a.ingest("gw-2", b"not json", 0.0) is None
    assert a.ingest("gw-2",
                    b'{"v":1,"store":"other","gateway":"gw-2","ts":0,"sightings":[]}', 0.0) is None
    assert a.ingest("gw-2",
                    b'{"v":1,"store":"st","gateway":"gw-2","ts":0,'
                    b'"sightings":[["x","entrance",-3,true,0]]}', 0.0) is None
    assert a.ingest("gw-1", b"anything", 0.0) == []  # our own echo
    assert a.stats.bad == 3
