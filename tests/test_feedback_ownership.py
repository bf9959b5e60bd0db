"""HQ takes feedback only on offers a gateway published to that inbox (hq.ownership).

Real HQ, real Mosquitto, the reference phone client; the "gateway" is a plain MQTT
client publishing event batches in the wire format, so the test decides when HQ hears
of an offer.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiomqtt

from aislecast.apps.phone import Phone, PhoneBehaviour
from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.ids import new_id
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import (
    SCHEMA_VERSION,
    Event,
    EventBatch,
    Feedback,
    FeedbackAck,
    Offer,
    decode,
    encode,
)
from aislecast.kernel.tokens import new_identity_key
from hq.analytics import campaign_stats
from hq.db import HqDb
from hq.ingest import Ingest
from hq.ownership import FeedbackHold
from hq.router import Reply
from hq.server import HqServer
from tests.harness import until

STORE, GW, CAMPAIGN = "s1", "g1", "c1"


def _offer(oid: str, inbox: str) -> Offer:
    now = time.time()
    return Offer(v=SCHEMA_VERSION, id=oid, campaign=CAMPAIGN, variant="a", store=STORE,
                 inbox=inbox, issued_at=now, expires_at=now + 600, title="t")


def _published(pairs: list[tuple[str, str]]) -> bytes:
    """A gateway's batch saying each (offer, inbox) was published."""
    return encode(EventBatch(v=SCHEMA_VERSION, store=STORE, gateway=GW, batch=new_id(), events=[
        Event(id=new_id(), kind="offer_published", ts=time.time(), store=STORE, gateway=GW,
              campaign=CAMPAIGN, offer=oid, inbox=inbox) for oid, inbox in pairs]))


def _phone(mqtt: MqttSettings, inbox: str) -> Phone:
    phone = Phone(mqtt, inbox=inbox, identity_key=new_identity_key(), rotation_k=9,
                  behaviour=PhoneBehaviour(open_p=0.0))
    phone.ack_timeout_s = 0.3  # resend quickly: the tests wait on acks
    return phone


def _redemptions(hq: HqServer, inbox: str | None = None) -> int:
    if inbox is not None:
        row = hq.db.one("SELECT count(*) FROM events WHERE kind = 'offer_redeemed' AND inbox = ?",
                        (inbox,))
        return int(row[0]) if row else 0
    stats = {s.campaign: s for s in campaign_stats(hq.db)}
    return stats[CAMPAIGN].redemptions if CAMPAIGN in stats else 0


async def test_forty_forged_redemptions_are_refused_and_the_real_one_counts(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    mqtt = MqttSettings(port=broker.port)
    victims = [f"o-v{i}" for i in range(20)]
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                        mqtt=mqtt, http_port=0, learn_every_s=0) as hq, \
            MqttLink(mqtt, client_id="gw-test") as gw, \
            _phone(mqtt, "victim") as victim, _phone(mqtt, "evil") as evil:
        hq.ingest.hold.hold_s = 0.5
        await gw.wait_connected(10)
        await gw.publish(topics.gateway_events(STORE, GW),
                         _published([(o, "victim") for o in victims]), qos=1)
        await until(lambda: hq.ingest.stats.by_kind.get("offer_published", 0) == 20)
        await victim.link.wait_connected(10)
        await evil.link.wait_connected(10)
        # the witness: the shopper the offer went to redeems it, and that counts
        await victim.feedback(_offer(victims[0], "victim"), "redeemed")
        # the attacker: 20 redemptions of offers published to someone else, 20 of offers
        # nobody published
        for oid in victims:
            await evil.feedback(_offer(oid, "evil"), "redeemed")
        for i in range(20):
            await evil.feedback(_offer(f"o-made-up-{i}", "evil"), "redeemed")
        await until(lambda: not victim.unacked and not evil.unacked)
        refused = hq.ingest.stats.feedback_refused
        assert refused == {"not_delivered_to_inbox": 20, "offer_unknown": 20}
        assert _redemptions(hq, "evil") == 0
        assert _redemptions(hq, "victim") == 1
        assert _redemptions(hq) == 1
        # every one acknowledged (an honest phone stops resending); a resend that crossed
        # the first ack in flight is acknowledged again, so on a slow machine there are more
        assert evil.stats.feedback_acked >= 40 and not evil.unacked
        # resends of refused feedback are acknowledged again, never counted twice
        assert sum(refused.values()) == 40
        text = hq.metrics.exposition().decode()
        assert 'aislecast_hq_ingest_feedback_refused_total{reason="offer_unknown"} 20.0' in text


async def test_feedback_that_beats_its_batch_is_counted_exactly_once(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    mqtt = MqttSettings(port=broker.port)
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                        mqtt=mqtt, http_port=0, learn_every_s=0) as hq, \
            MqttLink(mqtt, client_id="gw-test") as gw, _phone(mqtt, "shopper") as phone:
        await gw.wait_connected(10)
        await phone.link.wait_connected(10)
        offer = _offer("o-race", "shopper")
        await phone.feedback(offer, "delivered")  # the phone had the offer before HQ did
        await phone.feedback(offer, "redeemed")
        await until(lambda: hq.ingest.stats.feedback_held == 2)
        await until(lambda: phone.stats.feedback_resent >= 2)  # not acked: it keeps resending
        assert _redemptions(hq) == 0
        assert len(phone.unacked) == 2
        await gw.publish(topics.gateway_events(STORE, GW), _published([("o-race", "shopper")]),
                         qos=1)
        await until(lambda: not phone.unacked)
        await phone.feedback(offer, "redeemed")  # the same redemption again, under a new id
        await until(lambda: not phone.unacked)
        rows = hq.db.query("SELECT kind, store FROM events WHERE offer = 'o-race'"
                           " AND kind != 'offer_published' ORDER BY kind")
        assert rows == [("offer_delivered", STORE), ("offer_redeemed", STORE)]
        assert _redemptions(hq) == 1
        assert hq.ingest.stats.feedback_released == 2
        assert hq.ingest.stats.feedback_refused == {}
        assert hq.ingest.stats.feedback_holding == 0


def _msg(topic: str, payload: bytes) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, qos=1, retain=False, mid=1, properties=None)


def _fb(fid: str, offer: str, inbox: str, campaign: str = CAMPAIGN) -> aiomqtt.Message:
    return _msg(topics.feedback(inbox), encode(Feedback(
        v=SCHEMA_VERSION, id=fid, offer=offer, campaign=campaign, store="made-up", inbox=inbox,
        kind="opened", ts=time.time())))


async def test_held_feedback_is_acked_when_its_batch_lands_and_refused_after_the_hold(
    tmp_path: Path
) -> None:
    clock = [0.0]
    replies: list[Reply] = []
    ingest = Ingest(HqDb(f"sqlite:///{tmp_path}/hq.sqlite"), reply=replies.append,
                    hold=FeedbackHold(hold_s=60, per_inbox=3, clock=lambda: clock[0]))
    assert await ingest.on_feedback(_fb("f1", "o1", "a")) is None  # unknown yet: held, no ack
    assert await ingest.on_feedback(_fb("f2", "o2", "a", campaign="other")) is None
    for i in range(3, 6):  # one inbox holds at most per_inbox
        await ingest.on_feedback(_fb(f"f{i}", f"o{i}", "a"))
    assert ingest.stats.feedback_held == 3
    assert ingest.stats.feedback_hold_dropped == 2
    await ingest.on_events(_msg(topics.gateway_events(STORE, GW),
                                _published([("o1", "a"), ("o2", "a")])))
    # o1 stored and acked now; o2's feedback named another campaign: not released
    assert [decode(r.payload, FeedbackAck).ids for r in replies] == [["f1"]]
    assert ingest.db.query("SELECT store, campaign FROM events WHERE kind = 'offer_opened'") == [
        (STORE, CAMPAIGN)]  # the gateway's store, not the phone's "made-up"
    clock[0] = 61.0
    await ingest.on_feedback(_fb("f9", "o9", "b"))  # any message sweeps the overdue ones
    assert ingest.stats.feedback_refused == {"offer_unknown": 1}  # f3 (o3 for inbox a)
    assert [decode(r.payload, FeedbackAck).ids for r in replies[1:]] == [["f3"]]
    ack = await ingest.on_feedback(_fb("f3", "o3", "a"))  # its resend: acked, not recounted
    assert ack is not None and decode(ack.payload, FeedbackAck).ids == ["f3"]
    assert ingest.stats.feedback_refused == {"offer_unknown": 1}
    assert ingest.stats.feedback == 1
