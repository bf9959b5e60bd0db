"""HQ ingest: a phone cannot pre-empt or inflate events; counts are of stored events."""

from __future__ import annotations

import time
from pathlib import Path

import aiomqtt

from aislecast.kernel import topics
from aislecast.kernel.ids import new_id
from aislecast.kernel.schema import SCHEMA_VERSION, Event, EventBatch, Feedback, encode
from hq.analytics import campaign_stats
from hq.db import HqDb
from hq.ingest import Ingest


def _msg(topic: str, payload: bytes) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, qos=1, retain=False, mid=1, properties=None)


def _fb(fid: str, offer: str, kind: str) -> bytes:
    return encode(Feedback(v=SCHEMA_VERSION, id=fid, offer=offer, campaign="c1", store="s1",
                           inbox="evil", kind=kind, ts=time.time()))  # type: ignore[arg-type]


async def test_phone_cannot_preempt_gateway_event_ids_or_inflate_counts(tmp_path: Path) -> None:
    ingest = Ingest(HqDb(f"sqlite:///{tmp_path}/hq.sqlite"))
    victim_id = new_id()  # an id the gateway is about to use; a phone could guess it
    await ingest.on_feedback(_msg(topics.feedback("evil"), _fb(victim_id, "o9", "redeemed")))
    for i in range(5):  # the same redemption reported again under fresh ids
        await ingest.on_feedback(_msg(topics.feedback("evil"), _fb(f"x{i}", "o9", "redeemed")))
    batch = EventBatch(v=SCHEMA_VERSION, store="s1", gateway="g1", batch="b1", events=[
        Event(id=victim_id, kind="offer_published", ts=time.time(), store="s1", campaign="c1",
              offer="o9", inbox="evil")])  # the held redemption is stored as this arrives
    await ingest.on_events(_msg(topics.gateway_events("s1", "g1"), encode(batch)))
    assert ingest.db.query("SELECT kind FROM events WHERE id = ?", (victim_id,)) == [
        ("offer_published",)]
    stats = {s.campaign: s for s in campaign_stats(ingest.db)}
    assert stats["c1"].redemptions == 1
    assert stats["c1"].impressions == 1


async def test_by_kind_counts_stored_events_not_redeliveries(tmp_path: Path) -> None:
    ingest = Ingest(HqDb(f"sqlite:///{tmp_path}/hq.sqlite"))
    ev = Event(id="e1", kind="zone_enter", ts=1.0, store="s1", inbox="i", zone="z")
    for b in ("b1", "b2"):  # a gateway resend after an ack timeout
        batch = EventBatch(v=SCHEMA_VERSION, store="s1", gateway="g1", batch=b, events=[ev, ev])
        await ingest.on_events(_msg(topics.gateway_events("s1", "g1"), encode(batch)))
    assert ingest.stats.by_kind == {"zone_enter": 1}
    assert ingest.stats.events_ingested == 1
    assert ingest.stats.duplicates == 3
