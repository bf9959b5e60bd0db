"""Auto-pause (hq.autopause): the rules judged on their numbers, refused when malformed,
and end to end on a real broker: dismissals fed into HQ pause the campaign, a real
gateway applies the pause delta, and the audit log, the campaign and the alerts say why."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import msgspec
import pytest

from aislecast.apps.till_client import TillClient, TillRefusal
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.campaign import (
    Budget,
    Campaign,
    PauseRule,
    Schedule,
    check_campaign,
    check_hq_settings,
)
from aislecast.kernel.redeem import mint_code, offer_id_for
from aislecast.kernel.schema import Event, Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.audit import AuditLog
from hq.autopause import ACTION, ACTOR, AutoPauser, AutoPauseStats, judge, numbers_of, rules_since
from hq.db import HqDb
from hq.ingest import Ingest
from hq.redeem_keys import RedeemKeys
from hq.service import HqService
from hq.till import TillDesk, TillRefused
from tests.harness import STORE, enter_campaign, stack, until

OTHER = "store-o"


def _with(rules: list[PauseRule], **kw: object) -> Campaign:
    return msgspec.structs.replace(enter_campaign("entrance", cid="ap"), auto_pause=rules, **kw)


def test_rules_fire_on_their_numbers_only() -> None:
    dismiss = _with([PauseRule("dismiss_rate", above=0.5, after=50)])
    assert judge(dismiss, {"deliveries": 49, "dismissals": 49}, 0) is None  # too few yet
    assert judge(dismiss, {"deliveries": 50, "dismissals": 25}, 0) is None  # at, not above
    v = judge(dismiss, {"deliveries": 50, "dismissals": 26}, 0)
    assert v is not None and v.numbers["dismiss_rate"] == 0.52 and "52.0%" in v.reason
    ctr = _with([PauseRule("ctr_floor", below=0.01, after=200)])
    assert judge(ctr, {"deliveries": 200, "clicks": 2}, 0) is None
    v = judge(ctr, {"deliveries": 200, "clicks": 1}, 0)
    assert v is not None and v.rule.kind == "ctr_floor" and v.numbers["ctr"] == 0.005
    pace = _with([PauseRule("budget_pace", ahead_by=0.2)], budget=Budget("impressions", 100),
                 schedule=Schedule(start=1000.0, end=2000.0))
    assert judge(pace, {"budget_spent": 45}, 1250.0) is None  # 45 % spent at 25 %: 0.2 ahead
    v = judge(pace, {"budget_spent": 46}, 1250.0)
    assert v is not None and v.numbers["elapsed_share"] == 0.25 and v.numbers["spent_share"] == 0.46
    codes = _with([PauseRule("code_refusals", refusals=3, within_s=600)])
    assert judge(codes, {"refusals": 3, "refused_used": 3}, 0) is None  # at, not above
    v = judge(codes, {"refusals": 4, "refused_used": 3, "refused_forged": 1}, 0)
    assert v is not None and v.rule.kind == "code_refusals"
    assert v.reason == "4 till codes refused (1 forged, 3 used) in 10 min, more than 3"


def test_malformed_rules_and_attribution_are_refused() -> None:
    bad = _with([PauseRule("code_failures", above=3), PauseRule("dismiss_rate"),
                 PauseRule("ctr_floor", below=2.0), PauseRule("budget_pace", ahead_by=0.1)])
    assert check_campaign(bad) == []  # a gateway ignores HQ's settings
    problems = check_hq_settings(bad)
    assert any("auto_pause[0]: unknown kind 'code_failures'" in p for p in problems)
    assert "auto_pause[1]: needs above" in problems
    assert any(p.startswith("auto_pause[2].below: 2.0 is not a share") for p in problems)
    assert any("auto_pause[3]: budget_pace needs a budget and a schedule" in p for p in problems)
    codes = _with([PauseRule("code_refusals", refusals=3), PauseRule("code_refusals", refusals=0,
                                                                    within_s=90_000)])
    problems = check_hq_settings(codes)
    assert "auto_pause[0]: code_refusals needs refusals and within_s" in problems
    assert "auto_pause[1].refusals: 0 outside [1, 1000000] codes" in problems
    assert "auto_pause[1].within_s: 90000 outside (0, 86400] seconds" in problems
    assert "auto_pause: at most one code_refusals rule (one window per campaign)" in problems
    assert check_hq_settings(_with([PauseRule("code_refusals", refusals=3, within_s=600)])) == []
    c = msgspec.convert({"id": "x", "name": "x", "stores": ["s"], "creatives": [{"id": "a", "title": "A"}],
                         "attribution": {"window_s": 0, "min_per_arm": 3}}, Campaign)
    assert [p.split(":")[0] for p in check_hq_settings(c)] == ["attribution.window_s",
                                                           "attribution.min_per_arm"]


def _feedback(kind: str, n: int) -> list[Event]:
    now = time.time()
    return [Event(id=uuid.uuid4().hex, kind=kind, ts=now, store=STORE, gateway="gw-1",  # type: ignore[arg-type]
                  campaign="ap", variant="a", offer=f"o{i}", inbox=f"i{i}") for i in range(n)]


async def test_dismissals_pause_the_campaign_at_the_gateway(broker: MosquittoProcess,
                                                            tmp_path: Path) -> None:
    rule = PauseRule("dismiss_rate", above=0.5, after=50)
    async with stack(broker.port, tmp_path, [_with([rule])], autopause_every_s=0.1) as st:
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        await until(lambda: gw.parts.decider.live == 1)
        stats = st.hq.metrics.sources["autopause"]
        assert isinstance(stats, AutoPauseStats)
        api = httpx.AsyncClient(base_url=st.url, headers=st.admin, timeout=5)
        async with api:
            # a marketer cannot set paused_by: HQ drops it from the body
            body = msgspec.to_builtins(st.hq.service.get_campaign("ap"))
            body["paused_by"] = {"rule": {"kind": "ctr_floor"}, "at": 1.0, "reason": "forged"}
            r = await api.put("/api/campaigns/ap", json=body)
            assert r.status_code == 200 and r.json()["paused_by"] is None
            r = await api.put("/api/campaigns/ap", json=body | {"auto_pause": [{"kind": "code_failures"}]})
            assert r.status_code == 422 and "auto_pause[0]: unknown kind 'code_failures'" in r.text
            # 49 deliveries, all dismissed: below `after`, judged and left live
            st.hq.ingest.store_events(_feedback("offer_delivered", 49) + _feedback("offer_dismissed", 49))
            rounds = stats.rounds
            await until(lambda: stats.rounds >= rounds + 3)  # the witness: judged, and left
            assert st.hq.service.get_campaign("ap").status == "live"
            assert "ap" not in gw.parts.paused
            # the 50th delivery: 49 of 50 dismissed, above 50 %
            seq = gw.parts.bundles.delta_seq
            st.hq.ingest.store_events(_feedback("offer_delivered", 1))
            await until(lambda: "ap" in gw.parts.paused, timeout=10)  # the gateway applied it
            assert gw.parts.bundles.delta_seq > seq
            c = st.hq.service.get_campaign("ap")
            assert c.status == "paused" and c.paused_by is not None
            assert c.paused_by.rule == rule and c.paused_by.numbers["deliveries"] == 50
            assert c.paused_by.numbers["dismiss_rate"] == 0.98
            # visible to the marketer: the campaign's API, the alerts, the audit log
            got = (await api.get("/api/campaigns/ap")).json()
            assert got["status"] == "paused" and got["paused_by"]["rule"]["kind"] == "dismiss_rate"
            assert "dismiss rate 98.0% above 50.0%" in got["paused_by"]["reason"]
            alerts = (await api.get("/api/alerts")).json()["alerts"]
            [a] = [a for a in alerts if a["kind"] == "campaign_auto_paused"]
            assert a["source"] == "campaign:ap" and a["cleared_at"] is None
            [e] = (await api.get("/api/audit", params={"object": "campaign:ap"})).json()[1:]
            assert (e["actor"], e["action"]) == (ACTOR, ACTION)
            assert e["before"]["status"] == "live" and e["after"]["paused_by"]["numbers"]["dismissals"] == 49
            assert stats.paused == {"dismiss_rate": 1}
            assert b'aislecast_hq_autopause_paused_total{rule="dismiss_rate"} 1.0' in (
                st.hq.metrics.exposition())
            # resumed by a person: judged afresh on what comes after, not re-paused
            r = await api.post("/api/campaigns/ap/resume")
            assert r.status_code == 200 and r.json()["paused_by"] is None
            await until(lambda: "ap" not in gw.parts.paused, timeout=10)
            rounds = stats.rounds
            await until(lambda: stats.rounds >= rounds + 3)  # the witness: judged, and left
            assert st.hq.service.get_campaign("ap").status == "live"
            alerts = (await api.get("/api/alerts")).json()["alerts"]
            [a] = [a for a in alerts if a["kind"] == "campaign_auto_paused"]
            assert a["cleared_at"] is not None



async def test_only_the_leader_pauses_and_a_failed_delta_still_pauses(db: HqDb, tmp_path: Path) -> None:
    """On SQLite and PostgreSQL: a follower judges nothing; the leader pauses, and when
    the delta cannot be published (no broker link here) the campaign is still stored
    paused and the action audited, the failure counted."""
    svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    svc.upsert_campaign(_with([PauseRule("dismiss_rate", above=0.5, after=10)]))
    Ingest(db).store_events(_feedback("offer_delivered", 10) + _feedback("offer_dismissed", 6))
    audit = AuditLog(db)
    leading = False
    pauser = AutoPauser(svc, audit, lambda: leading)
    assert await pauser.check() == [] and pauser.stats.rounds == 0  # a follower: not judged
    assert svc.get_campaign("ap").status == "live"
    leading = True
    [c] = await pauser.check()
    assert c.status == "paused" and c.paused_by is not None and pauser.stats.failures == 1
    assert svc.get_campaign("ap").paused_by == c.paused_by
    [e] = audit.entries(obj="campaign:ap")
    assert (e.actor, e.action, e.after["paused_by"]["numbers"]["dismissals"]) == (ACTOR, ACTION, 6)
    assert [x.kind for x in pauser.conditions()] == ["campaign_auto_paused"]
    # counts restart at the pause: the same dismissals do not count again
    since = rules_since(db, "ap")
    assert since == e.ts and numbers_of(db, c, since)["dismissals"] == 0


def _flip(code: str) -> str:
    """One letter of the tag changed: a well-formed code whose tag no longer verifies."""
    return code[:-1] + ("A" if code[-1] != "A" else "B")


def test_refusals_are_pinned_on_the_campaign_they_can_be(db: HqDb, tmp_path: Path) -> None:
    """On SQLite and PostgreSQL: used, foreign and misprinted codes are stored against
    their campaign; junk, made-up and expired codes are counted but pinned on none; the
    rule's window and the restart mark bound what it counts."""
    svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    for s in (STORE, OTHER):
        svc.upsert_store(Store(id=s, name=s, tz="UTC"))
    rule = PauseRule("code_refusals", refusals=3, within_s=600)
    c = _with([rule], stores=[STORE, OTHER])
    svc.upsert_campaign(c)
    keys = RedeemKeys(b"\x11" * 32)
    desk = TillDesk(db, lambda: keys)
    now = time.time()

    def code(store: str, serial: bytes, expires: float = now + 600, key_of: str = "") -> str:
        return mint_code(keys.of(key_of or store), store=store, campaign="ap", variant="a",
                         serial=serial, expires_at=expires)

    def refused(text: str, txn: str, at: float = now) -> str:
        with pytest.raises(TillRefused) as err:
            desk.redeem(text, store=STORE, till="till:1", txn=txn, now=at)
        return err.value.reason

    good = code(STORE, b"\x01" * 5)
    desk.redeem(good, store=STORE, till="till:1", txn="t1", now=now - 900)  # the witness
    assert refused(good, "t2", now - 700) == "used"  # outside the 600 s window
    assert refused(good, "t3") == "used"
    assert refused(code(OTHER, b"\x02" * 5), "t4") == "foreign_store"
    Ingest(db).store_events([Event(id="pub", kind="offer_published", ts=now, store=STORE,
                                   campaign="ap", variant="a", offer=offer_id_for(b"\x03" * 5, "0" * 22),
                                   inbox="i", reason="till_code")])
    assert refused(_flip(code(STORE, b"\x03" * 5)), "t5") == "forged"  # a misprint of a real one
    # not pinned on the campaign: junk, a made-up serial, a code minted with the wrong key, expired
    assert refused("not-a-code", "t6") == "forged"
    assert refused(_flip(code(STORE, b"\x04" * 5)), "t7") == "forged"
    assert refused(code(STORE, b"\x05" * 5, key_of=OTHER), "t8") == "forged"
    assert refused(code(STORE, b"\x06" * 5, expires=now - 120), "t9") == "expired"
    assert desk.stats.refused == {"used": 2, "foreign_store": 1, "forged": 4, "expired": 1}
    assert desk.stats.attributed == {"used": 2, "foreign_store": 1, "forged": 1}
    assert db.query("SELECT count(*) FROM code_refusals WHERE campaign = 'ap'") == [(4,)]
    n = numbers_of(db, c, 0.0, now)
    assert (n["refusals"], n["refused_used"], n["refused_foreign_store"], n["refused_forged"]) == (
        3, 1, 1, 1)
    assert judge(c, n, now) is None  # 3, not more than 3
    assert numbers_of(db, c, 0.0, now + 1_000)["refusals"] == 0  # the window moved on
    assert numbers_of(db, c, now, now)["refusals"] == 0  # a resume at `now` restarts the count


async def test_refused_codes_pause_the_campaign_at_the_gateway(broker: MosquittoProcess,
                                                               tmp_path: Path) -> None:
    """A real HQ and gateway: refusals through the till API pause the campaign within
    seconds, through the pause delta, audited and shown; what is not the campaign's
    (junk, expired) never counts."""
    rule = PauseRule("code_refusals", refusals=2, within_s=600)
    async with stack(broker.port, tmp_path, [_with([rule])], autopause_every_s=0.1) as st:
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        await until(lambda: gw.parts.decider.live == 1)
        stats = st.hq.metrics.sources["autopause"]
        assert isinstance(stats, AutoPauseStats)
        key = st.hq.service.build_bundle(STORE).redeem_key
        assert key is not None
        now = time.time()

        def code(serial: bytes, expires: float = now + 600) -> str:
            return mint_code(bytes.fromhex(key or ""), store=STORE, campaign="ap", variant="a",
                             serial=serial, expires_at=expires)

        till = TillClient(st.url, st.token("till", stores=[STORE]))

        async def refusal(text: str, txn: str) -> str:
            with pytest.raises(TillRefusal) as err:
                await asyncio.to_thread(till.redeem, text, txn)
            return err.value.reason

        good = code(b"\x01" * 5)
        await asyncio.to_thread(till.redeem, good, "t1")  # the witness: a good code
        assert [await refusal(good, "t2"), await refusal(good, "t3")] == ["used", "used"]
        assert await refusal("not-a-code", "t4") == "forged"
        assert await refusal(code(b"\x02" * 5, now - 120), "t5") == "expired"
        rounds = stats.rounds
        await until(lambda: stats.rounds >= rounds + 3)  # the witness: judged, and left
        assert st.hq.service.get_campaign("ap").status == "live" and "ap" not in gw.parts.paused
        # the third of the campaign's: more than 2 in 10 minutes
        seq = gw.parts.bundles.delta_seq
        assert await refusal(good, "t6") == "used"
        await until(lambda: "ap" in gw.parts.paused, timeout=10)  # the gateway applied it
        assert gw.parts.bundles.delta_seq > seq
        api = httpx.AsyncClient(base_url=st.url, headers=st.admin, timeout=5)
        async with api:
            got = (await api.get("/api/campaigns/ap")).json()
            assert got["status"] == "paused" and got["paused_by"]["rule"]["kind"] == "code_refusals"
            assert got["paused_by"]["numbers"]["refused_used"] == 3
            assert "3 till codes refused (3 used) in 10 min, more than 2" in got["paused_by"]["reason"]
            alerts = (await api.get("/api/alerts")).json()["alerts"]
            assert [a["source"] for a in alerts if a["kind"] == "campaign_auto_paused"] == [
                "campaign:ap"]
            [e] = (await api.get("/api/audit", params={"object": "campaign:ap"})).json()
            assert (e["actor"], e["action"]) == (ACTOR, ACTION)
            assert e["after"]["paused_by"]["numbers"]["refusals"] == 3
            assert stats.paused == {"code_refusals": 1}
            assert b'aislecast_hq_till_attributed_total{reason="used"} 3.0' in (
                st.hq.metrics.exposition())
            # resumed: the same refusals do not pause it again
            assert (await api.post("/api/campaigns/ap/resume")).status_code == 200
            await until(lambda: "ap" not in gw.parts.paused, timeout=10)
            rounds = stats.rounds
            await until(lambda: stats.rounds >= rounds + 3)
            assert st.hq.service.get_campaign("ap").status == "live"
