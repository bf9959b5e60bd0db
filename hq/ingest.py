"""HQ ingest: event batches from gateways and feedback from phones, idempotent by id.

Every payload is untrusted: anything that does not decode is counted per topic kind and
dropped. Each batch is inserted in one transaction with ``ON CONFLICT DO NOTHING``, so
a QoS 1 redelivery or a gateway replaying its outbox never double-counts.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.counters import by, count
from aislecast.kernel.logs import get_logger
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
from hq.router import Reply

__all__ = ["Ingest", "IngestStats"]

log = get_logger(__name__)

_MAX_REF = 128  # longest offer/campaign/store/feedback id accepted from a phone

_INSERT = (
    "INSERT INTO events(id, kind, ts, store, gateway, campaign, variant, offer, inbox, zone,"
    " reason, holdout, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO NOTHING"
)


@dataclass(slots=True)
class IngestStats:
    batches: int = count("event batches from gateways accepted")
    events_ingested: int = count("events stored for the first time")
    duplicates: int = count("events already stored (QoS 1 redeliveries, outbox resends)")
    feedback: int = count("feedback messages from phones accepted")
    bad_payloads: dict[str, int] = by("kind", "payloads dropped as undecodable or inconsistent")
    by_kind: dict[str, int] = by("kind", "events stored, per event kind")


def _row(e: Event) -> tuple[object, ...]:
    return (e.id, e.kind, e.ts, e.store, e.gateway, e.campaign, e.variant, e.offer, e.inbox,
            e.zone, e.reason, None if e.holdout is None else int(e.holdout),
            msgspec.json.encode(e).decode())


class Ingest:
    def __init__(self, db: HqDb) -> None:
        self.db = db
        self.stats = IngestStats()
        self.listeners: list[Callable[[list[Event]], None]] = []

    def _bad(self, what: str, err: Exception) -> None:
        self.stats.bad_payloads[what] = self.stats.bad_payloads.get(what, 0) + 1
        log.warning("bad payload dropped", kind=what, error=str(err)[:200])

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

    async def on_events(self, msg: aiomqtt.Message) -> Reply | None:
        """A gateway's event batch; returns its end-to-end acknowledgement."""
        topic = msg.topic.value
        payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
        m = topics.parse(topic)
        if m is not None and m.kind is topics.Kind.GATEWAY_EVENTS:
            try:
                batch = decode(payload, EventBatch)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self._bad("events", exc)
                return None
            if batch.store != m.store or batch.gateway != m.gateway:
                self._bad("events", ValueError("batch store/gateway do not match the topic"))
                return None
            self.stats.batches += 1
            stored = await self.astore_events([e for e in batch.events if e.store == batch.store])
            if batch.batch is None:
                return None
            ack = BatchAck(v=SCHEMA_VERSION, batch=batch.batch, stored=stored)
            return Reply(topics.gateway_acks(batch.store, batch.gateway), encode(ack))
        self._bad("topic", ValueError(f"unexpected topic {topic}"))
        return None

    async def on_feedback(self, msg: aiomqtt.Message) -> Reply | None:
        """A phone's feedback; returns the acknowledgement that lets the phone forget it."""
        topic = msg.topic.value
        payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
        m = topics.parse(topic)
        if m is not None and m.kind is topics.Kind.FEEDBACK:
            try:
                fb = decode(payload, Feedback)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self._bad("feedback", exc)
                return None
            if fb.inbox != m.inbox:
                self._bad("feedback", ValueError("feedback inbox does not match the topic"))
                return None
            if max(len(fb.offer), len(fb.campaign), len(fb.store), len(fb.id)) > _MAX_REF:
                self._bad("feedback", ValueError("feedback reference too long"))
                return None
            self.stats.feedback += 1
            # One row per (offer, inbox, kind), under an id the phone cannot choose: a phone
            # could otherwise pre-empt a gateway's event ids or inflate a campaign's counts.
            key = hashlib.sha256(f"{fb.offer}|{fb.inbox}|{fb.kind}".encode()).hexdigest()[:32]
            await self.astore_events([Event(id=f"fb{key}", kind=f"offer_{fb.kind}", ts=fb.ts,  # type: ignore[arg-type]
                                     store=fb.store, campaign=fb.campaign, offer=fb.offer,
                                     inbox=fb.inbox)])
            # stored (or already there): the phone may forget it
            return Reply(topics.feedback_ack(fb.inbox), encode(FeedbackAck(v=SCHEMA_VERSION, ids=[fb.id])))
        self._bad("topic", ValueError(f"unexpected topic {topic}"))
        return None
