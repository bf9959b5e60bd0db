"""PresenceEngine unit tests: hysteresis, dwell, absence exit, bad input, clock jumps."""

from __future__ import annotations

from gateway.presence import PresenceEngine, PresenceParams

RADII = {"a": 4.0, "b": 4.0}
TX = -59


def _kinds(events: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(e.kind, e.zone) for e in events]


def test_enter_dwell_and_exit_after_absence() -> None:
    eng = PresenceEngine(RADII, PresenceParams(absence_s=6.0, dwell_every_s=5.0))
    assert _kinds(eng.observe("s", "a", -55, TX, 0.0)) == [("enter", "a")]
    for i in range(1, 30):
        eng.observe("s", "a", -55, TX, i * 0.2)
    assert eng.zone_of("s") == "a" and eng.present() == {"s": "a"}
    assert _kinds(eng.tick(5.0)) == [("dwell", "a")]
    assert eng.tick(10.0) == []
    out = eng.tick(5.8 + 6.1)
    assert _kinds(out) == [("exit", "a")]
    assert 5.5 < out[0].dwell_s < 6.0
    assert eng.present() == {} and len(eng) == 0


def test_hysteresis_keeps_zone_until_clearly_nearer() -> None:
    eng = PresenceEngine(RADII, PresenceParams(hysteresis=0.2))
    eng.observe("s", "a", -60, TX, 0.0)
    eng.observe("s", "b", -61, TX, 0.1)
    for i in range(2, 40):  # b only slightly stronger than a: no switch
        t = i * 0.1
        eng.observe("s", "a", -61, TX, t)
        eng.observe("s", "b", -60, TX, t + 0.05)
    assert eng.zone_of("s") == "a"
    events = []
    for i in range(40, 80):  # b clearly nearer: switch once
        t = i * 0.1
        events += eng.observe("s", "a", -68, TX, t)
        events += eng.observe("s", "b", -52, TX, t + 0.05)
    assert _kinds(events) == [("exit", "a"), ("enter", "b")]


def test_out_of_radius_never_enters() -> None:
    eng = PresenceEngine({"a": 2.0})
    for i in range(20):
        assert eng.observe("s", "a", -80, TX, i * 0.2) == []  # ~14 m at n = 2.5
    assert eng.zone_of("s") is None


def test_bad_input_is_counted_and_dropped() -> None:
    eng = PresenceEngine(RADII)
    assert eng.observe("s", "a", 127, TX, 0.0) == []
    assert eng.observe("s", "a", -128, TX, 0.0) == []
    assert eng.observe("s", "nowhere", -50, TX, 0.0) == []
    assert eng.observe("s", "a", -50, TX, float("nan")) == []
    assert eng.dropped == {"rssi": 2, "zone": 1, "ts": 1}
    assert eng.zone_of("s") is None


def test_clock_going_backwards_shifts_state() -> None:
    eng = PresenceEngine(RADII, PresenceParams(absence_s=6.0))
    for i in range(10):
        eng.observe("s", "a", -55, TX, 1000.0 + i * 0.2)
    # the monotonic clock restarts near zero (a new process feeding a persisted engine)
    assert eng.observe("s", "a", -55, TX, 5.0) == []
    assert eng.dropped["clock_back"] == 1
    assert eng.zone_of("s") == "a"
    assert eng.tick(6.0) == []  # not an instant exit, not stuck forever either
    assert _kinds(eng.tick(12.5)) == [("exit", "a")]


def test_huge_gap_closes_old_visit_first() -> None:
    eng = PresenceEngine(RADII, PresenceParams(absence_s=6.0))
    eng.observe("s", "a", -55, TX, 0.0)
    out = eng.observe("s", "b", -55, TX, 3600.0)  # the ticker never ran in between
    assert _kinds(out) == [("exit", "a"), ("enter", "b")]
    assert eng.dropped["gap"] == 1


def test_peer_with_nearer_evidence_takes_the_shopper() -> None:
    eng = PresenceEngine(RADII, gateway="gw-1")
    eng.observe("s", "a", -65, TX, 0.0)
    assert eng.zone_of("s") == "a"
    out = eng.observe_peer("gw-2", "s", "b", 0.6, claimed=False, ts=0.5)
    assert _kinds(out) == [("exit", "a")]
    assert eng.zone_of("s") is None
    # our own weak evidence does not take it back while the peer's is fresh
    for i in range(10):
        assert eng.observe("s", "a", -65, TX, 0.6 + i * 0.1) == []


def test_two_claims_resolve_to_exactly_one_owner() -> None:
    a = PresenceEngine(RADII, gateway="gw-a")
    b = PresenceEngine(RADII, gateway="gw-b")
    a.observe("s", "a", -60, TX, 0.0)
    b.observe("s", "b", -60, TX, 0.0)  # equal evidence, both claim
    sa, sb = a.summaries(0.1), b.summaries(0.1)
    assert sa[0].claimed and sb[0].claimed
    for s in sb:
        a.observe_peer("gw-b", s.shopper, s.zone, s.distance_m, claimed=s.claimed, ts=0.2)
    for s in sa:
        b.observe_peer("gw-a", s.shopper, s.zone, s.distance_m, claimed=s.claimed, ts=0.2)
    owners = [e for e in (a, b) if e.zone_of("s") is not None]
    assert owners == [a]  # tie -> smaller gateway id keeps it


def test_one_euro_smoother_also_works() -> None:
    eng = PresenceEngine(RADII, PresenceParams(smoother="one_euro"))
    assert _kinds(eng.observe("s", "b", -55, TX, 0.0)) == [("enter", "b")]
