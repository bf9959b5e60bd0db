"""HQ ingest: event batches from gateways and feedback from phones, idempotent by id.

Every payload is untrusted: anything that does not decode is counted per topic kind and
dropped. Each batch is inserted in one transaction with ``ON CONFLICT DO NOTHING``, so
a QoS 1 redelivery or a gateway replaying its outbox never double-counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.schema import (
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

_MAX_REF = 128  # longest offer/campaign/store/feedback id accepted from a phone

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

    def _store(self, events: list[Event]) -> list[Event]:
        """Insert ``events``; returns the ones that were new (not stored before)."""
        if not events:
            return []
        ids = [e.id for e in events]
        marks = ",".join("?" * len(ids))
        seen = {r[0] for r in self.db.query(
            f"SELECT id FROM events WHERE id IN ({marks})", ids)}  # noqa: S608 - placeholders only
        fresh = {e.id: e for e in events if e.id not in seen}  # also dedupes within a batch
        self.db.executemany(_INSERT, [_row(e) for e in fresh.values()])
        return list(fresh.values())

    def store_events(self, events: list[Event]) -> int:
        return self._counted(events, self._store(events))

    async def astore_events(self, events: list[Event]) -> int:
        """As :meth:`store_events`; on PostgreSQL the insert (a network round trip per
        batch) runs in a worker thread so the loop keeps reading MQTT meanwhile. SQLite's
        local WAL insert (~1 ms a batch) stays on the loop."""
        if self.db.dialect == "postgresql":
            fresh = await asyncio.to_thread(self._store, events)
        else:
            fresh = self._store(events)
        return self._counted(events, fresh)

    def _counted(self, events: list[Event], fresh: list[Event]) -> int:
        """Counts what was stored: redeliveries and resends are duplicates, not events."""
        self.stats.events_ingested += len(fresh)
        self.stats.duplicates += len(events) - len(fresh)
        for e in fresh:
            self.stats.by_kind[e.kind] = self.stats.by_kind.get(e.kind, 0) + 1
        if fresh:
            for fn in self.listeners:
                fn(fresh)
        return len(fresh)

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
            if max(len(fb.offer), len(fb.campaign), len(fb.store), len(fb.id)) > _MAX_REF:
                self._bad("feedback", ValueError("feedback reference too long"))
                return
            self.stats.feedback += 1
            # One row per (offer, inbox, kind), under an id the phone cannot choose: a phone
            # could otherwise pre-empt a gateway's event ids or inflate a campaign's counts.
            key = hashlib.sha256(f"{fb.offer}|{fb.inbox}|{fb.kind}".encode()).hexdigest()[:32]
            await self.astore_events([Event(id=f"fb{key}", kind=f"offer_{fb.kind}", ts=fb.ts,  # type: ignore[arg-type]
                                     store=fb.store, campaign=fb.campaign, offer=fb.offer,
                                     inbox=fb.inbox)])
            if self.ack is not None:  # stored (or already there): the phone may forget it
                fb_ack = FeedbackAck(v=SCHEMA_VERSION, ids=[fb.id])
                await self.ack(topics.feedback_ack(fb.inbox), encode(fb_ack))
        else:
            self._bad("topic", ValueError(f"unexpected topic {topic}"))
