"""HQ ingest: event batches from gateways and feedback from phones, idempotent by id.

Every payload is untrusted: anything that does not decode is counted per topic kind and
dropped. Each batch is inserted in one transaction with ``ON CONFLICT DO NOTHING``, so
a QoS 1 redelivery or a gateway replaying its outbox never double-counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiomqtt
import msgspec

from aislecast import topics
from aislecast.schema import (
    SCHEMA_VERSION,
    BatchAck,
    Event,
    EventBatch,
    Feedback,
    FeedbackAck,
    decode,
    encode,
)
from hq.db import HqDb

__all__ = ["Ingest", "IngestStats"]

log = logging.getLogger("aislecast.hq.ingest")

_INSERT = (
    "INSERT INTO events(id, kind, ts, store, gateway, campaign, variant, offer, inbox, zone,"
    " reason, holdout, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO NOTHING"
)


@dataclass(slots=True)
class IngestStats:
    batches: int = 0
    events_ingested: int = 0
    duplicates: int = 0
    feedback: int = 0
    bad_payloads: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)


def _row(e: Event) -> tuple[object, ...]:
    return (e.id, e.kind, e.ts, e.store, e.gateway, e.campaign, e.variant, e.offer, e.inbox,
            e.zone, e.reason, None if e.holdout is None else int(e.holdout),
            msgspec.json.encode(e).decode())


class Ingest:
    def __init__(self, db: HqDb) -> None:
        self.db = db
        self.stats = IngestStats()
        self.listeners: list[Callable[[list[Event]], None]] = []
        # publishes (topic, payload): HQ wires it to its MQTT link for batch acks
        self.ack: Callable[[str, bytes], Awaitable[None]] | None = None

    def _bad(self, what: str, err: Exception) -> None:
        self.stats.bad_payloads[what] = self.stats.bad_payloads.get(what, 0) + 1
        log.warning("bad payload dropped kind=%s error=%s", what, str(err)[:200])

    def store_events(self, events: list[Event]) -> int:
        return self._counted(events, self.db.executemany(_INSERT, [_row(e) for e in events]))

    async def astore_events(self, events: list[Event]) -> int:
        """As :meth:`store_events`; on PostgreSQL the insert (a network round trip per
        batch) runs in a worker thread so the loop keeps reading MQTT meanwhile. SQLite's
        local WAL insert (~1 ms a batch) stays on the loop."""
        rows = [_row(e) for e in events]
        if self.db.dialect == "postgresql":
            n = await asyncio.to_thread(self.db.executemany, _INSERT, rows)
        else:
            n = self.db.executemany(_INSERT, rows)
        return self._counted(events, n)

    def _counted(self, events: list[Event], n: int) -> int:
        self.stats.events_ingested += n
        self.stats.duplicates += len(events) - n
        for e in events:
            self.stats.by_kind[e.kind] = self.stats.by_kind.get(e.kind, 0) + 1
        for fn in self.listeners:
            fn(events)
        return n

    async def handle(self, msg: aiomqtt.Message) -> None:
        topic = msg.topic.value
        payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
        parts = topic.split("/")
        if len(parts) == 7 and parts[2] == "stores" and parts[6] == "events":
            try:
                batch = decode(payload, EventBatch)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self._bad("events", exc)
                return
            if batch.store != parts[3] or batch.gateway != parts[5]:
                self._bad("events", ValueError("batch store/gateway do not match the topic"))
                return
            self.stats.batches += 1
            stored = await self.astore_events([e for e in batch.events if e.store == batch.store])
            if batch.batch is not None and self.ack is not None:
                ack = BatchAck(v=SCHEMA_VERSION, batch=batch.batch, stored=stored)
                await self.ack(topics.gateway_acks(batch.store, batch.gateway), encode(ack))
        elif len(parts) == 5 and parts[2] == "shoppers" and parts[4] == "feedback":
            try:
                fb = decode(payload, Feedback)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self._bad("feedback", exc)
                return
            if fb.inbox != parts[3]:
                self._bad("feedback", ValueError("feedback inbox does not match the topic"))
                return
            self.stats.feedback += 1
            await self.astore_events([Event(id=fb.id, kind=f"offer_{fb.kind}", ts=fb.ts,  # type: ignore[arg-type]
                                     store=fb.store, campaign=fb.campaign, offer=fb.offer,
                                     inbox=fb.inbox)])
            if self.ack is not None:  # stored (or already there): the phone may forget it
                fb_ack = FeedbackAck(v=SCHEMA_VERSION, ids=[fb.id])
                await self.ack(topics.feedback_ack(fb.inbox), encode(fb_ack))
        else:
            self._bad("topic", ValueError(f"unexpected topic {topic}"))
