"""The gateway decision engine: every rule, with a reason, on a fixed clock."""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo
from pathlib import Path

import msgspec
import pytest

from aislecast.kernel.campaign import (
    ArmStats,
    Audience,
    Budget,
    Campaign,
    Caps,
    Creative,
    Model,
    Profile,
    Schedule,
    Trigger,
    Window,
)
from aislecast.kernel.schema import SCHEMA_VERSION, Event, EventBatch, Offer, decode, encode
from gateway.decisions import (
    DecisionEngine,
    PeerBatchRefused,
    TriggerEvent,
    apply_peer_batch,
    in_holdout,
)
from gateway.storage import open_db

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
# Saturday 2025-06-14 12:00 in Berlin
SAT_NOON = dt.datetime(2025, 6, 14, 12, 0, tzinfo=BERLIN).timestamp()


def camp(cid: str = "c1", **kw: object) -> Campaign:
    base: dict[str, object] = {"id": cid, "name": cid, "stores": ["s1"],
                               "creatives": [Creative(id="a", title="A")]}
    base.update(kw)
    return Campaign(**base)  # type: ignore[arg-type]


def engine(tmp_path: Path, *campaigns: Campaign, model: Model | None = None,
           gateway: str = "gw-1", name: str = "gw.sqlite") -> DecisionEngine:
    e = DecisionEngine(open_db(tmp_path / name), "s1", gateway=gateway, rng=random.Random(1))
    e.load(list(campaigns), [], tz="Europe/Berlin", zones=["entrance", "bakery", "dairy"],
           model=model)
    return e


def trig(kind: str = "enter", zone: str | None = "bakery", ts: float = SAT_NOON, **kw: object
         ) -> TriggerEvent:
    return TriggerEvent(kind, kw.pop("inbox", "i1"), zone, ts, visit=kw.pop("visit", "v1"),  # type: ignore[arg-type]
                        **kw)  # type: ignore[arg-type]


def test_offer_and_default_cap_per_visit(tmp_path: Path) -> None:
    e = engine(tmp_path, camp(trigger=Trigger(zones=["bakery"])))
    d = e.decide(trig())
    assert d.reason == "offer" and d.offer is not None
    assert d.offer.expires_at == SAT_NOON + 900
    assert e.decide(trig()).reason == "cap_per_visit"
    assert e.decide(trig(visit="v2")).reason == "offer"
    assert e.decide(trig(zone="dairy")).reason == "no_campaign"
    assert e.decide(trig(kind="bogus")).reason == "unknown_trigger"


def test_the_countdown_flag_reaches_the_offer(tmp_path: Path) -> None:
    """A time-limited campaign's offer says so, on the wire too (the wallet's countdown)."""
    e = engine(tmp_path, camp("t", trigger=Trigger(zones=["bakery"]), countdown=True),
               camp("p", trigger=Trigger(zones=["dairy"])))
    timed, plain = e.decide(trig()).offer, e.decide(trig(zone="dairy")).offer
    assert timed is not None and plain is not None
    assert timed.countdown and not plain.countdown
    assert decode(encode(timed), Offer).countdown
    assert b"countdown" not in encode(plain)  # omitted by default: older phones see no change


def test_windows_in_store_time_zone(tmp_path: Path) -> None:
    weekend = Schedule(windows=[Window("09:00", "20:00", days=[6, 7])])
    e = engine(tmp_path, camp(schedule=weekend))
    assert e.decide(trig()).reason == "offer"
    # 21:00 Berlin is 19:00 UTC: outside the window although UTC is inside 09-20
    late = dt.datetime(2025, 6, 14, 21, 0, tzinfo=BERLIN).timestamp()
    assert e.decide(trig(ts=late, visit="v2")).reason == "outside_window"
    monday = dt.datetime(2025, 6, 16, 12, 0, tzinfo=BERLIN).timestamp()
    assert e.decide(trig(ts=monday, visit="v3")).reason == "outside_window"


def test_dated_window_armed_in_advance(tmp_path: Path) -> None:
    match_day = Schedule(windows=[Window("18:00", "23:00", dates=["2025-06-14"])])
    e = engine(tmp_path, camp(schedule=match_day, status="scheduled"))
    assert e.decide(trig()).reason == "outside_window"
    kick_off = dt.datetime(2025, 6, 14, 18, 30, tzinfo=BERLIN).timestamp()
    assert e.decide(trig(ts=kick_off)).reason == "offer"


def test_absolute_schedule_and_expiry_clipped(tmp_path: Path) -> None:
    e = engine(tmp_path, camp(schedule=Schedule(start=SAT_NOON - 10, end=SAT_NOON + 60)))
    d = e.decide(trig())
    assert d.offer is not None and d.offer.expires_at == SAT_NOON + 60
    assert e.decide(trig(ts=SAT_NOON + 60, visit="v2")).reason == "outside_schedule"


def test_dwell_tap_and_tags(tmp_path: Path) -> None:
    e = engine(tmp_path,
               camp("dw", trigger=Trigger(kind="dwell", min_dwell_s=20, zones=["dairy"])),
               camp("tp", trigger=Trigger(kind="tap", tags=["tag-cheese"])))
    assert e.decide(trig("dwell", "dairy", dwell_s=5)).reason == "dwell_too_short"
    assert e.decide(trig("dwell", "dairy", dwell_s=25)).campaign == "dw"
    assert e.decide(trig("tap", None, tag="tag-milk")).reason == "tag_not_targeted"
    assert e.decide(trig("tap", None, tag="tag-cheese")).campaign == "tp"


def test_audience_and_consent(tmp_path: Path) -> None:
    model = Model(profiles={"gold": Profile(segments=["family"], tier="gold", visits=5,
                                            consents=["offers", "personalised"])})
    c = camp(audience=Audience(segments=["family"], loyalty_tiers=["gold"], min_visits=3,
                               purposes=["personalised"]))
    e = engine(tmp_path, c, model=model)
    assert e.decide(trig(inbox="nobody")).reason == "audience_unknown_shopper"
    assert e.decide(trig(inbox="gold")).reason == "offer"
    e.opt_out(["gold"])
    assert e.decide(trig(inbox="gold", visit="v9")).reason == "no_consent"


def test_caps_quiet_hours_and_gap(tmp_path: Path) -> None:
    caps = Caps(per_shopper=5, per_day=2, min_gap_s=60, quiet=[Window("12:00", "12:30")])
    e = engine(tmp_path, camp(caps=caps), camp("c2", caps=Caps(per_visit_all=1)))
    d = e.decide(trig())  # 12:00 local: c1 is in quiet hours, c2 is not
    assert (d.reason, d.campaign) == ("offer", "c2")
    t1 = SAT_NOON + 3600
    assert e.decide(trig(ts=t1, visit="x")).campaign == "c1"
    d = e.decide(trig(ts=t1 + 10, visit="x"))  # c1: gap of 60 s; c2: one offer per visit
    assert (d.reason, d.campaign) == ("cap_min_gap", "c1")
    assert e.decide(trig(ts=t1 + 100, visit="x")).reason == "offer"  # c1 per_day: 2nd today
    assert e.decide(trig(ts=t1 + 200, visit="y")).campaign == "c2"  # c1 hit its day cap


def test_caps_survive_restart(tmp_path: Path) -> None:
    c = camp(caps=Caps(per_campaign=1))
    first = engine(tmp_path, c)
    assert first.decide(trig()).reason == "offer"
    first.flush()
    again = engine(tmp_path, c)  # same SQLite file: a restarted gateway
    assert again.decide(trig(visit="v2")).reason == "cap_per_campaign"


def test_budget_grants_per_gateway(tmp_path: Path) -> None:
    c = camp(budget=Budget("impressions", 10, grants={"gw-1": 2, "*": 0}),
             caps=Caps(per_shopper=100))
    e = engine(tmp_path, c)
    assert [e.decide(trig(inbox=f"i{i}")).reason for i in range(3)] == [
        "offer", "offer", "budget_spent"]
    other = engine(tmp_path, c, gateway="gw-9", name="gw9.sqlite")
    assert other.decide(trig()).reason == "budget_spent"


def test_holdout_is_deterministic_and_not_messaged(tmp_path: Path) -> None:
    e = engine(tmp_path, camp(holdout_pct=50, caps=Caps(per_shopper=100)))
    inboxes = [f"s{i}" for i in range(400)]
    held = [i for i in inboxes if in_holdout(i, "c1", 50)]
    assert 150 < len(held) < 250
    for i in inboxes:
        d = e.decide(trig(inbox=i))
        assert (d.reason == "holdout") == (i in held)
        assert (d.offer is None) == (i in held)


def test_priority_then_propensity_then_bandit(tmp_path: Path) -> None:
    w = [0.0] * 20
    from aislecast.kernel.campaign import FEATURES  # noqa: PLC0415

    w[FEATURES.index("format:coupon")] = 3.0
    model = Model(weights=w, arms={"hi/a": ArmStats(1, 50), "hi/b": ArmStats(40, 2)})
    hi = camp("hi", priority=5, creatives=[Creative(id="a", title="A"),
                                           Creative(id="b", title="B")])
    banner = camp("p-banner", priority=1)
    coupon = camp("p-coupon", priority=1, creatives=[Creative(id="a", title="C", format="coupon",
                                                              coupon_code="X")])
    e = engine(tmp_path, hi, banner, coupon, model=model)
    picks = [e.decide(trig(inbox=f"s{i}")) for i in range(30)]
    assert all(d.campaign == "hi" for d in picks)
    assert sum(d.variant == "b" for d in picks) >= 27  # bandit exploits the better arm
    e2 = engine(tmp_path, banner, coupon, model=model, name="b.sqlite")
    assert e2.decide(trig()).campaign == "p-coupon"


def test_refuses_campaign_it_cannot_understand(tmp_path: Path) -> None:
    e = DecisionEngine(open_db(tmp_path / "g.sqlite"), "s1")
    bad = camp("bad", trigger=Trigger(kind="teleport", zones=["moon"]), engine=99)
    rej = e.load([bad, camp("ok")], [], tz="UTC", zones=["bakery"])
    assert [r.campaign for r in rej] == ["bad"]
    assert "teleport" in rej[0].reason and "moon" in rej[0].reason and "engine" in rej[0].reason
    assert e.decide(trig()).campaign == "ok"


def test_pause_and_upsert(tmp_path: Path) -> None:
    e = engine(tmp_path, camp())
    e.pause(["c1"])
    assert e.decide(trig()).reason == "no_campaign"
    e.upsert([camp("f", trigger=Trigger(kind="flash"))])
    assert e.decide(trig("flash")).campaign == "f"


def test_peer_gateway_charges(tmp_path: Path) -> None:
    c = camp(caps=Caps(per_campaign=1))
    e = engine(tmp_path, c)
    ev = Event(id="e1", kind="decision", ts=SAT_NOON, store="s1", gateway="gw-2", inbox="i1",
               campaign="c1", reason="offer")
    batch = encode(EventBatch(v=SCHEMA_VERSION, store="s1", gateway="gw-2", events=[ev]))
    assert apply_peer_batch(e, batch, "gw-1") == 1
    assert apply_peer_batch(e, batch, "gw-1") == 0  # idempotent
    with pytest.raises(PeerBatchRefused, match="peer_events"):
        apply_peer_batch(e, b"junk", "gw-1")
    # a batch on another gateway's topic, or naming another store, charges nothing
    with pytest.raises(PeerBatchRefused, match="peer_sender"):
        apply_peer_batch(e, batch, "gw-1", sender="gw-3")
    other = encode(EventBatch(v=SCHEMA_VERSION, store="s9", gateway="gw-2", events=[ev]))
    with pytest.raises(PeerBatchRefused, match="peer_sender"):
        apply_peer_batch(e, other, "gw-1", sender="gw-2")
    # the peer's offer belongs to the visit the shopper starts here now ...
    assert e.decide(trig()).reason == "cap_per_visit"
    # ... and to the campaign's lifetime count in every later visit
    assert e.decide(trig(visit="later", ts=SAT_NOON + 7200)).reason == "cap_per_campaign"
    assert msgspec.json.decode(batch)["gateway"] == "gw-2"
