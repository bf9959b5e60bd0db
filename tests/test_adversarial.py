"""The threat list, tried on the authenticated stack: each attempt refused AND counted,
while legitimate traffic in the same run loses nothing.

One run (:func:`test_every_attempt_is_refused_and_counted_while_shoppers_lose_nothing`)
on :func:`tests.harness.authenticated_stack`: HQ, its credential registry rendered into a
real Mosquitto, gateway ``gw-1`` serving a walking shopper, a quiet peer ``gw-2``. The
attempts run one after the other between a shopper served before them and one served
after; each names its counter. The list:

- anonymous connect: the broker (CONNACK 135) and HQ (401); HQ counts
  ``auth_refusals{no_credential}``.
- wrong role: HQ (403, ``auth_refusals{wrong_role}``), the broker's ACL (PUBACK 0x87,
  the link's ``denied``).
- cross-store publish: the ACL; the gateway link's ``denied`` (its own alarm).
- client-id takeover: ``use_username_as_clientid``; the victim's link shows no disconnect.
- revoked gateway: kicked, then CONNACK 135; HQ's ``broker_sync`` renders, and its peers'
  bundle drops it.
- replayed or expired token: HQ (401, ``auth_refusals{bad_token}``); a revoked broker
  password gets CONNACK 135.
- CSRF and cross-origin changes: HQ (403, ``auth_refusals{csrf}``, ``{cross_origin}``).
- open redirect: HQ (422 at minting, 410 when followed; ``links_refused{route,reason}``).
- oversize HTTP body: HQ (413, ``auth_refusals{body_too_large}``).
- oversize MQTT publish: the broker (DISCONNECT 0x95 past ``max_packet_size``); the
  sender's link ``disconnects``.
- forged feedback: HQ's ownership check (``feedback_refused{not_delivered_to_inbox}``)
  and the ACL.
- forged peer messages: the gateway (``bad_payloads{peer_sender}``), HQ
  (``bad_payloads{events}``) and the ACL.

Mosquitto 2.0.11 keeps no counter of refused logins or denied publishes (``$SYS`` has
none, and its log says so only at notice and debug level, which the product config
leaves off), so those are counted where the refusal is seen: the reason code the client
gets, and our own components' link counters.

A gateway id that is not provisioned cannot write under the product's ACL at all; that
the gateway refuses it anyway when a broker lets it through is
:func:`test_an_unprovisioned_peer_behind_a_permissive_broker_is_dropped_and_counted`,
on a test-only broker with no ACL. The deeper single-threat tests stay beside their
code: every TLS listener's takeover and oversize refusal (tests/test_broker_tls.py),
forty forged redemptions (tests/test_feedback_ownership.py), the landing URL rules
(tests/test_shortlink_hosts.py), the console's CSRF in a browser (tests/test_console.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import httpx
import pytest
from prometheus_client import generate_latest

from aislecast.kernel import topics
from aislecast.kernel.acl import gateway_username
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.errors import PublishDenied
from aislecast.kernel.ids import new_id
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import SCHEMA_VERSION, Event, EventBatch, Feedback, encode
from edge.scanner import AdvertCallback, Scanner
from edge.sim_scanner import SimScanner
from edge.simstore import SimShopper, SimStore, default_zones
from gateway.app import Gateway
from gateway.metrics import registry
from hq.accounts import Accounts
from hq.auth import CSRF_HEADER, SESSION_COOKIE
from hq.broker_auth import try_login, wait_for_login
from hq.consent import PURPOSES
from hq.landing import LandingHosts
from hq.service import Enrollment
from hq.shortlinks import ShortLink
from tests.harness import STORE, Stack, authenticated_stack, bearer, enter_campaign, stack, until

CAMPAIGN = "c-entrance"
_LANDING = "shop.example"


def peer_batch(store: str, named: str, inbox: str, *, campaign: str = CAMPAIGN) -> bytes:
    """An event batch in gateway ``named``'s name with one offer decision for ``inbox``:
    what a peer's cap charge looks like on the wire."""
    ev = Event(id=new_id(), kind="decision", ts=time.time(), store=store, gateway=named,
               inbox=inbox, campaign=campaign, reason="offer")
    return encode(EventBatch(v=SCHEMA_VERSION, store=store, gateway=named, batch=new_id(),
                             events=[ev]))


def charges(gw: Gateway, inbox: str, campaign: str = CAMPAIGN) -> int:
    return gw.parts.decider.ledger.lifetime_count(inbox, campaign)


@dataclass
class Run:
    st: Stack
    http: httpx.AsyncClient
    gw1: Gateway
    gw2: Gateway
    shopper: Enrollment  # served before the attempts
    offer_id: str  # the offer gw-1 published to that shopper

    @property
    def port(self) -> int:
        return self.st.mqtt.port

    @property
    def refusals(self) -> dict[str, int]:
        stats = self.st.hq.app.state.auth_stats.refusals
        assert isinstance(stats, dict)
        return stats

    def attacker(self, client_id: str | None = None) -> MqttLink:
        """A phone with its own valid login (an enrolled shopper turned attacker)."""
        e = self.st.hq.service.enroll(list(PURPOSES), [STORE])
        return MqttLink(self.st.phone_settings(e), client_id=client_id or e.inbox, clean_start=True)


async def _denied(link: MqttLink, topic: str, payload: bytes = b"{}") -> None:
    with pytest.raises(PublishDenied) as err:
        await link.publish(topic, payload, qos=1)
    assert err.value.reason_code == 0x87


# ---- the attempts ------------------------------------------------------------------------
async def anonymous_connect(r: Run) -> None:
    assert not await try_login("127.0.0.1", r.port, "", "")
    assert not await try_login("127.0.0.1", r.port, "0123456789abcdef", "guessed")
    before = r.refusals.get("no_credential", 0)
    resp = await r.http.get("/api/campaigns")
    assert resp.status_code == 401 and resp.json()["reason"] == "no_credential"
    assert r.refusals["no_credential"] == before + 1


async def wrong_role(r: Run) -> None:
    before = r.refusals.get("wrong_role", 0)
    for role, method, path in (("wallet", "GET", "/api/audit"), ("store_staff", "POST", "/api/flash"),
                               ("broker_sync", "GET", "/api/campaigns"),
                               ("analyst", "POST", f"/api/campaigns/{CAMPAIGN}/pause")):
        token = r.st.token(role, stores=[STORE] if role == "store_staff" else None)
        resp = await r.http.request(method, path, headers=bearer(token), json={})
        assert resp.status_code == 403 and resp.json()["reason"] == "wrong_role", (role, resp.text)
    assert r.refusals["wrong_role"] == before + 4
    # a phone writing as HQ (a bundle) or as a gateway (events): the broker's ACL
    async with r.attacker() as phone:
        await phone.wait_connected(10)
        await _denied(phone, topics.bundle(STORE))
        await _denied(phone, topics.gateway_events(STORE, "gw-1"), peer_batch(STORE, "gw-1", "x"))
        assert phone.stats.denied == 2


async def cross_store_publish(r: Run) -> None:
    link = r.gw1.link
    before = link.stats.denied
    await _denied(link, topics.gateway_events("store-other", "gw-1"), peer_batch("store-other", "gw-1", "x"))
    await _denied(link, topics.bundle(STORE))  # nor HQ's bundle in its own store
    await _denied(link, topics.gateway_events(STORE, "gw-2"), peer_batch(STORE, "gw-2", "x"))
    assert link.stats.denied == before + 3


async def client_id_takeover(r: Run) -> None:
    victim = r.st.phone(r.shopper)  # the shopper served before: online again
    async with victim:
        await victim.link.wait_connected(10)
        drops = victim.link.stats.disconnects
        async with r.attacker(client_id=r.shopper.inbox) as atk:  # the victim's client id
            await atk.wait_connected(10)
            await _denied(atk, topics.feedback(r.shopper.inbox))  # it is itself, not the victim
            await asyncio.sleep(0.3)  # a takeover would have kicked the victim by now
        assert victim.link.connected.is_set() and victim.link.stats.disconnects == drops


async def replayed_or_expired_token(r: Run) -> None:
    accounts = Accounts(r.st.hq.db)
    tid, revoked = accounts.issue_token("wallet", name="stolen")
    ok = await r.http.get("/api/me", headers=bearer(revoked))
    assert ok.status_code == 200  # the witness: it worked before
    accounts.revoke_token(tid)
    _, expired = accounts.issue_token("wallet", name="old", ttl_s=0.05)
    await asyncio.sleep(0.1)
    before = r.refusals.get("bad_token", 0)
    for secret in (revoked, expired, revoked[:-4] + "AAAA"):
        resp = await r.http.get("/api/me", headers=bearer(secret))
        assert resp.status_code == 401 and resp.json()["reason"] == "bad_token"
    assert r.refusals["bad_token"] == before + 3
    # a shopper's broker password replayed after the opt-out that revoked it
    e = r.st.hq.service.enroll(list(PURPOSES), [STORE])
    await wait_for_login("127.0.0.1", r.port, e.inbox, e.broker_password or "")  # it worked
    await r.st.hq.service.opt_out(e.inbox)
    async with asyncio.timeout(10):
        while await try_login("127.0.0.1", r.port, e.inbox, e.broker_password or ""):
            await asyncio.sleep(0.05)


async def csrf_and_cross_origin(r: Run) -> None:
    accounts = Accounts(r.st.hq.db)
    accounts.add_user("mk-csrf", "marketer", password="a long enough password")  # noqa: S106
    session = accounts.open_session("mk-csrf")
    cookies = {SESSION_COOKIE: session.cookie}
    path = "/api/campaigns/c-other/pause"
    async with httpx.AsyncClient(base_url=r.st.url, cookies=cookies) as browser:
        before = dict(r.refusals)
        forged = await browser.post(path)  # another site's form: the cookie, no header
        assert forged.status_code == 403 and forged.json()["reason"] == "csrf"
        other = await browser.post(path, headers={CSRF_HEADER: session.csrf,
                                                   "Origin": "https://evil.example"})
        assert other.status_code == 403 and other.json()["reason"] == "cross_origin"
        assert r.refusals["csrf"] == before.get("csrf", 0) + 1
        assert r.refusals["cross_origin"] == before.get("cross_origin", 0) + 1
        mine = await browser.post(path, headers={CSRF_HEADER: session.csrf})
        assert mine.status_code == 200, mine.text  # the console's own call passes


async def open_redirect(r: Run) -> None:
    hosts = r.st.hq.landing_hosts
    assert hosts is not None
    marketer = bearer(r.st.token("marketer"))
    good = await r.http.post("/api/shortlinks", headers=marketer, json={"url": f"https://{_LANDING}/p"})
    assert good.status_code == 201, good.text
    for url in ("https://evil.example/", f"https://{_LANDING}@evil.example/"):
        bad = await r.http.post("/api/shortlinks", headers=marketer, json={"url": url})
        assert bad.status_code == 422, (url, bad.text)
    r.st.hq.shortlinks.add(ShortLink(code="Evil123", url="https://evil.example/x"))  # stored earlier
    gone = await r.http.get("/s/Evil123")
    assert gone.status_code == 410 and "location" not in gone.headers
    code = good.json()["code"]
    follow = await r.http.get(f"/s/{code}")
    assert follow.status_code == 302 and follow.headers["location"] == f"https://{_LANDING}/p"
    assert hosts.stats.refused == {("mint", "host_not_allowed"): 1, ("mint", "userinfo"): 1,
                                   ("follow", "host_not_allowed"): 1}


async def oversize_http(r: Run) -> None:
    before = r.refusals.get("body_too_large", 0)
    big = b'{"id": "' + b"x" * (2 << 20) + b'"}'
    resp = await r.http.post("/api/campaigns", headers=r.st.admin | {"content-type": "application/json"},
                             content=big)
    assert resp.status_code == 413 and resp.json()["reason"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it is read
        for _ in range(40):
            yield b"x" * 65536

    resp = await r.http.post("/api/campaigns", headers=r.st.admin, content=chunks())
    assert resp.status_code == 413
    assert r.refusals["body_too_large"] == before + 2


async def oversize_mqtt(r: Run) -> None:
    async with r.attacker() as phone:
        await phone.wait_connected(10)
        inbox = phone.client_id
        with pytest.raises(aiomqtt.MqttError):
            await phone.publish(topics.feedback(inbox), b"x" * (10 << 20), qos=1, timeout=10)
        await until(lambda: phone.stats.disconnects >= 1, timeout=10)  # the broker dropped it


async def forged_feedback(r: Run) -> None:
    refused = r.st.hq.ingest.stats.feedback_refused
    before = refused.get("not_delivered_to_inbox", 0)
    e = r.st.hq.service.enroll(list(PURPOSES), [STORE])
    evil = r.st.phone(e)
    async with evil:
        await evil.link.wait_connected(10)
        published = r.st.hq.db.one("SELECT inbox FROM events WHERE offer = ? AND kind = 'offer_published'",
                                   (r.offer_id,))
        assert published == (r.shopper.inbox,)  # the victim's offer, its id learnt somehow
        await evil.link.publish(topics.feedback(e.inbox), encode(_feedback_for(r, e.inbox)), qos=1)
        await _denied(evil.link, topics.feedback(r.shopper.inbox), encode(_feedback_for(r, r.shopper.inbox)))
        await until(lambda: refused.get("not_delivered_to_inbox", 0) == before + 1)


def _feedback_for(r: Run, inbox: str) -> Feedback:
    """Redeeming the first shopper's offer, in ``inbox``'s name."""
    return Feedback(v=SCHEMA_VERSION, id=new_id(), offer=r.offer_id, campaign=CAMPAIGN, store=STORE,
                    inbox=inbox, kind="redeemed", ts=time.time())


async def forged_peer_messages(r: Run) -> None:
    bad, hq_bad = r.gw1.parts.counters.bad_payloads, r.st.hq.ingest.stats.bad_payloads
    before, hq_before = bad.get("peer_sender", 0), hq_bad.get("events", 0)
    own = topics.gateway_events(STORE, "gw-2")
    # gw-2's own topic, but a batch in gw-1's name (and one in another store's)
    await r.gw2.link.publish(own, peer_batch(STORE, "gw-1", "forged000000001"), qos=1)
    await r.gw2.link.publish(own, peer_batch("store-other", "gw-2", "forged000000002"), qos=1)
    # an unprovisioned gateway's topic: the ACL refuses it outright
    await _denied(r.gw2.link, topics.gateway_events(STORE, "gw-9"), peer_batch(STORE, "gw-9", "f3"))
    # the witness, sent last (in order on one link): gw-2's real charge applies at gw-1
    await r.gw2.link.publish(own, peer_batch(STORE, "gw-2", "peerwitness00001"), qos=1)
    await until(lambda: charges(r.gw1, "peerwitness00001") == 1)
    assert bad.get("peer_sender", 0) == before + 2
    assert charges(r.gw1, "forged000000001") == 0 and charges(r.gw1, "forged000000002") == 0
    await until(lambda: hq_bad.get("events", 0) >= hq_before + 2)  # HQ drops them too


async def revoked_gateway(r: Run) -> None:
    sync = r.st.hq.broker_sync
    assert sync is not None
    renders = sync.stats.renders
    assert r.st.hq.service.credentials.revoke(gateway_username(STORE, "gw-2"))
    await until(lambda: not r.gw2.link.connected.is_set(), timeout=5)  # kicked
    await until(lambda: "Not authorized" in r.gw2.link.stats.last_error, timeout=10)  # refused
    assert sync.stats.renders > renders
    # and its peers stop listening to it: the republished bundle no longer lists it
    await until(lambda: (b := r.gw1.parts.bundles.current) is not None and b.gateways == ["gw-1"])
    assert r.gw1.link.connected.is_set()


ATTEMPTS: list[tuple[str, Callable[[Run], Awaitable[None]]]] = [
    ("anonymous connect", anonymous_connect),
    ("wrong role", wrong_role),
    ("cross-store publish", cross_store_publish),
    ("client-id takeover", client_id_takeover),
    ("replayed or expired token", replayed_or_expired_token),
    ("CSRF and cross-origin change", csrf_and_cross_origin),
    ("open redirect", open_redirect),
    ("oversize HTTP body", oversize_http),
    ("oversize MQTT publish", oversize_mqtt),
    ("forged feedback", forged_feedback),
    ("forged peer messages", forged_peer_messages),
    ("revoked gateway", revoked_gateway),  # last: it ends gw-2
]


def _quiet(cb: AdvertCallback) -> Scanner:
    """A scanner over an empty store: gw-2 hears nobody (it is only a peer here)."""
    return SimScanner(SimStore(default_zones(), seed=5), cb)


async def _serve(st: Stack, gw: Gateway, e: Enrollment) -> None:
    """Walk ``e``'s phone into the entrance once the bundle resolving its token is in."""
    version = (await st.hq.service.publish_bundle(STORE)).version
    await until(lambda: gw.parts.bundles.version >= version)
    st.sim.add_shopper(SimShopper(e.inbox, st.phone(e).token, [("entrance", 2.0)],
                                  start=time.monotonic(), speed_mps=5.0))


async def test_every_attempt_is_refused_and_counted_while_shoppers_lose_nothing(tmp_path: Path) -> None:
    other = enter_campaign("checkout", cid="c-other")
    hosts = LandingHosts([_LANDING])
    async with authenticated_stack(tmp_path, [enter_campaign("entrance", cid=CAMPAIGN), other],
                                   landing_hosts=hosts) as st, \
            httpx.AsyncClient(base_url=st.url) as http:
        await st.hq.service.publish_bundle(STORE)
        gw1 = await st.start_gateway("gw-1")
        gw2 = await st.start_gateway("gw-2", scanner=_quiet)
        await until(lambda: (b := gw1.parts.bundles.current) is not None
                    and b.gateways == ["gw-1", "gw-2"])

        first = st.hq.service.enroll(list(PURPOSES), [STORE])
        phone = st.phone(first)
        async with phone:
            await phone.link.wait_connected(10)
            await _serve(st, gw1, first)
            await until(lambda: phone.stats.offers_received >= 1 and phone.stats.opened >= 1
                        and not phone.unacked)
        run = Run(st, http, gw1, gw2, first, next(iter(phone.offers)))

        for name, attempt in ATTEMPTS:
            try:
                await attempt(run)
            except Exception as exc:  # name the threat whose defence failed
                raise AssertionError(f"attempt {name!r} was not refused and counted") from exc

        # a shopper after all that is served as before, and nothing legitimate was lost
        second = st.hq.service.enroll(list(PURPOSES), [STORE])
        later = st.phone(second)
        async with later:
            await later.link.wait_connected(10)
            await _serve(st, gw1, second)
            await until(lambda: later.stats.offers_received >= 1 and later.stats.opened >= 1
                        and not later.unacked)
        received = phone.stats.offers_received + later.stats.offers_received
        assert received == gw1.parts.publisher.stats.offers_published == 2
        assert st.hq.ingest.stats.feedback_refused == {"not_delivered_to_inbox": 1}
        kinds = st.hq.ingest.stats.by_kind  # both shoppers' deliveries and opens stored
        assert kinds["offer_delivered"] == kinds["offer_opened"] == 2, kinds
        await until(lambda: len(gw1.parts.outbox) == 0)  # every batch acknowledged by HQ
        text = st.hq.metrics.exposition().decode()
        for reason in ("no_credential", "wrong_role", "bad_token", "csrf", "cross_origin",
                       "body_too_large"):
            assert f'aislecast_hq_auth_refusals_total{{reason="{reason}"}}' in text, reason


async def test_an_unprovisioned_peer_behind_a_permissive_broker_is_dropped_and_counted(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    """The product's ACL never lets gw-9 write (above); a test-only broker with no ACL
    does, and the gateway still takes cap charges only from the bundle's gateways."""
    async with stack(broker.port, tmp_path, [enter_campaign("entrance", cid=CAMPAIGN)]) as st:
        for gw in ("gw-1", "gw-2"):  # provisioned at HQ; this broker checks no logins
            st.hq.service.credentials.issue_gateway(STORE, gw)
        await st.hq.service.publish_bundle(STORE)
        gw1 = await st.start_gateway("gw-1")
        await until(lambda: (b := gw1.parts.bundles.current) is not None
                    and b.gateways == ["gw-1", "gw-2"])
        bad = gw1.parts.counters.bad_payloads
        async with MqttLink(MqttSettings(port=broker.port), client_id="forger", clean_start=True) as link:
            await link.wait_connected(10)
            await link.publish(topics.gateway_events(STORE, "gw-9"),
                               peer_batch(STORE, "gw-9", "unprovisioned01"), qos=1)
            await link.publish(topics.gateway_presence(STORE, "gw-9"), b'{"v": 1}', qos=0)
            await link.publish(topics.gateway_events(STORE, "gw-2"),
                               peer_batch(STORE, "gw-9", "mismatched00001"), qos=1)
            # the positive witness, last on the same link: a provisioned peer's charge
            await link.publish(topics.gateway_events(STORE, "gw-2"),
                               peer_batch(STORE, "gw-2", "legitimate00001"), qos=1)
            await until(lambda: charges(gw1, "legitimate00001") == 1)
        assert charges(gw1, "unprovisioned01") == 0 and charges(gw1, "mismatched00001") == 0
        assert bad.get("peer_sender") == 1
        await until(lambda: bad.get("peer_unprovisioned", 0) == 2)  # the QoS 0 summary too
        text = generate_latest(registry(gw1.sources)).decode()
        assert 'peer_unprovisioned"} 2.0' in text, text[:2000]
