"""First visits (gateway.first_visit, hq.first_visit): a shopper of another store walks in,
the gateway reports the token it cannot resolve, HQ admits the shopper there in seconds.
On the real stack (authenticated broker: the ACL lets the gateway report and HQ read),
and HQ's lookup, refusals and rate limit on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from aislecast.kernel.campaign import Audience, Model, Profile
from aislecast.kernel.schema import Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from aislecast.kernel.tokens import eid_for, epoch_start
from edge.simstore import SimShopper
from gateway.first_visit import RETRY_S
from gateway.first_visit import FirstVisits as GatewayFirstVisits
from gateway.identity import IdentityResolver
from hq.db import HqDb
from hq.first_visit import FirstVisits, TokenBucket
from hq.scope import shoppers_of, stores_of
from hq.service import Enrollment, HqService
from tests.harness import STORE, authenticated_stack, enter_campaign, until

_until = functools.partial(until, timeout=15.0)
OTHER = "store-b"


def _inboxes(tables: list) -> set[str]:  # type: ignore[type-arg]
    return {i for t in tables for i in t.tokens.values()}


@pytest.mark.slow
async def test_a_shopper_of_another_store_resolves_there_within_seconds(tmp_path: Path) -> None:
    async with authenticated_stack(tmp_path, [enter_campaign("entrance")]) as st:
        st.hq.service.upsert_store(Store(OTHER, "Store B"))
        e = st.hq.service.enroll(["offers"], [OTHER])
        bundle = await st.hq.service.publish_bundle(STORE)
        assert e.inbox not in _inboxes(bundle.token_tables)  # scoped: B's shopper is not in A's
        gw = await st.start_gateway()
        async with st.phone(e) as phone:
            await phone.link.wait_connected(10)
            heard = time.monotonic()
            st.sim.add_shopper(SimShopper(e.inbox, phone.token, [("entrance", 20.0)],
                                          start=time.monotonic()))
            await _until(lambda: phone.stats.offers_received >= 1)
            took = time.monotonic() - heard
        fv = st.hq.first_visits.stats
        assert fv.admitted == 1 and fv.reports >= 1  # the positive witness, at HQ
        assert gw.parts.first_visits.stats.reported >= 1 and gw.parts.consent.stats.admitted >= 1
        assert gw.parts.identity.resolve(phone.token(time.time()).hex(), time.time()) == e.inbox
        assert stores_of(st.hq.db, e.inbox) == [OTHER, STORE]  # seen: A's next bundles carry them
        assert e.inbox in _inboxes(st.hq.service.build_bundle(STORE).token_tables)
        async with httpx.AsyncClient(base_url=st.url, headers=st.admin) as http:
            text = (await http.get("/metrics")).text
        assert "aislecast_hq_first_visit_admitted_total 1.0" in text  # in HQ's metrics
        print(f"first visit: token heard -> offer on the phone in {took:.2f} s")


@pytest.mark.slow
async def test_a_first_visit_matches_an_audience_rule_at_once(tmp_path: Path) -> None:
    """The admitting delta carries the shopper's cut profile: a campaign for segment
    "families" reaches a first visitor of that segment before the store's next bundle."""
    families = msgspec.structs.replace(enter_campaign("entrance", cid="fam"),
                                       audience=Audience(segments=["families"]))
    async with authenticated_stack(tmp_path, [families]) as st:
        svc = st.hq.service
        svc.upsert_store(Store(OTHER, "Store B"))
        e = svc.enroll(["offers", "personalisation"], [OTHER])  # a profile: hq.purposes
        svc.model = Model(profiles={e.inbox: Profile(segments=["families", "vegan"], tier="gold")})
        bundle = await svc.publish_bundle(STORE)
        assert bundle.model is not None and e.inbox not in bundle.model.profiles  # scoped
        gw = await st.start_gateway()
        async with st.phone(e) as phone:
            await phone.link.wait_connected(10)
            st.sim.add_shopper(SimShopper(e.inbox, phone.token, [("entrance", 20.0)],
                                          start=time.monotonic()))
            await _until(lambda: phone.stats.offers_received >= 1)
        held = gw.parts.bundles.current
        assert held is not None and held.model is not None
        assert e.inbox not in held.model.profiles  # the gateway's bundle lacks it: the delta
        p = gw.parts.decider.ranker.profile(e.inbox)
        # cut as bundles cut it: "vegan" and the tier are targeted by no campaign
        assert p is not None and p.segments == ["families"] and p.tier == ""


def _service(db: HqDb, tmp_path: Path) -> tuple[HqService, list[tuple[str, list[str]]]]:
    svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    for s in ("A", "B"):
        svc.upsert_store(Store(s, s))
    sent: list[tuple[str, list[str]]] = []

    async def publish_delta(store: str, **fields: object) -> None:
        opt_ins = list(fields.get("opt_ins") or [])  # type: ignore[call-overload]
        assert _inboxes(fields["tokens"]) == set(opt_ins)  # type: ignore[arg-type]
        sent.append((store, opt_ins))

    svc.publish_delta = publish_delta  # type: ignore[assignment,method-assign]
    return svc, sent


def _token(svc: HqService, e: Enrollment, now: float) -> str:
    k = svc.rotation_k
    return eid_for(bytes.fromhex(e.identity_key), epoch_start(int(now) >> k, k), k).hex()


async def test_hq_admits_consenting_shoppers_to_the_reporting_store_only(
        db: HqDb, tmp_path: Path) -> None:
    svc, sent = _service(db, tmp_path)
    fv = FirstVisits(svc)
    now = time.time()
    b = svc.enroll(["offers"], ["B"])
    quitter = svc.enroll(["offers"], ["B"])
    db.execute("UPDATE shoppers SET opted_out = 1, consents = '' WHERE inbox = ?", (quitter.inbox,))
    analytics = svc.enroll(["analytics"])
    got = await fv.admit("A", [_token(svc, b, now), _token(svc, quitter, now),
                               _token(svc, analytics, now), "00" * 8, _token(svc, b, now)])
    assert got == [b.inbox] and sent == [("A", [b.inbox])]
    assert fv.stats.admitted == 1 and fv.stats.unknown == 1 and fv.stats.tokens == 4
    assert fv.stats.not_admitted == {"opted_out": 1, "no_offers_consent": 1}
    assert shoppers_of(db, "A") == [b.inbox]
    # a shopper enrolled after the table was built is found (the enrolment listener), and
    # one the token of the next epoch names too
    late = svc.enroll(["offers"])
    assert await fv.admit("A", [_token(svc, late, now + (1 << svc.rotation_k))]) == [late.inbox]
    # one enrolled by another HQ worker (no listener here) is pulled in on a miss
    other = HqService(db, svc.signer).enroll(["offers"])
    fv.table._pull_due = 0.0  # the next miss may pull now
    assert await fv.admit("B", [_token(svc, other, now)]) == [other.inbox]
    # the three epochs around now and the next, built in one pass
    assert fv.stats.table_builds == 4 and fv.stats.table_tokens == 4 * 5


async def test_first_visit_lookups_are_rate_limited_and_refusals_counted(
        db: HqDb, tmp_path: Path) -> None:
    svc, _ = _service(db, tmp_path)
    fv = FirstVisits(svc, rate=1.0, burst=3)
    now = time.time()
    shoppers = [svc.enroll(["offers"]) for _ in range(5)]
    got = await fv.admit("A", [_token(svc, e, now) for e in shoppers])
    assert got == sorted(e.inbox for e in shoppers[:3])  # the witness: the burst admitted
    assert fv.stats.rate_limited == 2 and fv.stats.tokens == 3
    bucket = TokenBucket(50.0, 512, now=0.0)
    assert bucket.take(600, now=0.0) == 512 and bucket.take(100, now=1.0) == 50


def test_the_gateway_reports_an_unknown_token_once_per_retry_interval() -> None:
    ident = IdentityResolver()
    fv = GatewayFirstVisits("s", "g", retry_s=RETRY_S)
    ident.on_unknown = fv.note
    for _ in range(5):
        assert ident.resolve("ab" * 8, time.time()) is None
    assert ident.resolve("short", time.time()) is None  # not a token: not reported
    assert fv.take() == ["ab" * 8] and fv.take() == []
    ident.resolve("ab" * 8, time.time())
    assert fv.take() == []  # reported within RETRY_S: not again
    fv.failed(["ab" * 8])  # the report was not sent: may be collected again at once
    ident.resolve("ab" * 8, time.time())
    for i in range(300):
        fv.note(f"{i:016x}")
    first = fv.take()
    assert len(first) == 256 and first[0] == "ab" * 8 and len(fv.take()) == 45
    assert fv.stats.unknown_tokens == 302
