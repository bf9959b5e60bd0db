"""HQ ingest: event batches from gateways and feedback from phones, idempotent by id.

Every payload is untrusted: anything that does not decode is counted per topic kind and
dropped. Each batch is inserted in one transaction with ``ON CONFLICT DO NOTHING``, so
a QoS 1 redelivery or a gateway replaying its outbox never double-counts; the hourly
rollups of the events stored are added in that transaction (:mod:`hq.rollups`).
Batches that wait together in HQ's inbound queue are stored as one transaction, in a
worker thread on either database (:meth:`Ingest.on_events_many`, up to
:data:`hq.router.GROUP_MAX` of them), and each is acked when it commits.

Feedback is stored only for an offer a gateway reported published to the sending inbox
(:mod:`hq.ownership`: accepted, held until the offer's batch arrives, or refused with a
reason that is counted in ``feedback_refused`` and logged once with the inbox). A
``lead`` feedback must also fit its campaign's lead form (:mod:`hq.leads`); it becomes a
``lead_submitted`` event and a ``leads`` row holding its fields.

The shoppers of the events stored are marked seen in the events' stores
(:class:`hq.scope.SeenBook`, at most hourly per shopper and store): what keeps a store
receiving a shopper who does not have it as a home store.

The events of a shopper who does not grant ``analytics`` are stored without their inbox
(:func:`hq.purposes.anonymous`): counted and rolled up as any, linked to nobody.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.counters import by, count, gauge
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
from hq.leads import LeadRow, form_problem, store_lead
from hq.ownership import Delivered, FeedbackHold, RefusalReason, delivered_to
from hq.purposes import anonymous, lacking
from hq.rollups import OfferMemo, store_batch
from hq.router import Reply
from hq.scope import SeenBook

__all__ = ["Ingest", "IngestStats"]

log = get_logger(__name__)

R = TypeVar("R")

@dataclass(slots=True)
class IngestStats:
    batches: int = count("event batches from gateways accepted")
    events_ingested: int = count("events stored for the first time")
    duplicates: int = count("events already stored (QoS 1 redeliveries, outbox resends)")
    feedback: int = count("feedback messages from phones accepted")
    feedback_refused: dict[str, int] = by("reason", (
        "feedback refused (not stored, acknowledged so the phone stops resending), per reason"))
    feedback_held: int = count("feedback on an offer HQ had not yet heard published: held unacked")
    feedback_released: int = count("held feedback stored when its offer_published batch came")
    feedback_hold_dropped: int = count("feedback not held for lack of room (its phone resends it)")
    feedback_holding: int = gauge("feedback held now, waiting for its offer's batch")
    bad_payloads: dict[str, int] = by("kind", "payloads dropped as undecodable or inconsistent")
    by_kind: dict[str, int] = by("kind", "events stored, per event kind")
    group_retries: int = count("groups of event batches whose shared transaction failed,"
                               " stored again one batch at a time")
    batch_errors: int = count("event batches not stored for a database error (not acked)")
    seen_marked: int = count("(shopper, store) visits written to shopper_stores (hq.scope)")
    seen_errors: int = count("visits not written to shopper_stores for a database error")
    anonymised: int = count("events stored without their inbox: the shopper does not grant"
                            " analytics (hq.purposes)")


class Ingest:
    def __init__(self, db: HqDb, *, hold: FeedbackHold | None = None,
                 reply: Callable[[Reply], None] | None = None) -> None:
        """``reply`` (HQ's ack sender) acknowledges held feedback the moment its batch
        stores it; without one the phone's next resend is acknowledged instead."""
        self.db = db
        self.stats = IngestStats()
        self.listeners: list[Callable[[list[Event]], None]] = []
        self.hold = FeedbackHold() if hold is None else hold
        self.offers = OfferMemo()  # the recent offers' trigger, variant, zone (hq.rollups)
        self.reply = reply
        self.seen = SeenBook(db)  # who was seen in which store (hq.scope)

    async def _db(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` on the loop for SQLite, in a worker thread for PostgreSQL."""
        if self.db.dialect == "postgresql":
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    def _bad(self, what: str, err: Exception) -> None:
        self.stats.bad_payloads[what] = self.stats.bad_payloads.get(what, 0) + 1
        log.warning("bad payload dropped", kind=what, error=str(err)[:200])

    def _store(self, events: list[Event], index: bool = False) -> list[Event]:
        """Insert ``events`` with their rollups (:func:`hq.rollups.store_batch`); returns
        the ones that were new (not stored before), as stored: those of a shopper who
        does not grant analytics without their inbox (:mod:`hq.purposes`). ``index``:
        may write SQLite's shoppers' index too (:mod:`hq.inbox_index`): off the loop only."""
        withheld = lacking(self.db, {e.inbox for e in events if e.inbox}, "analytics")
        kept = [anonymous(e) if e.inbox in withheld else e for e in events] if withheld else events
        fresh = store_batch(self.db, kept, self.offers, index=index)
        if withheld:
            anon = {e.id for e in events if e.inbox in withheld}
            self.stats.anonymised += sum(1 for e in fresh if e.id in anon)
        try:  # the events are stored: a failure here must not leave their batch unacked
            # where the shopper was seen (hq.scope) is what keeps offers reaching them,
            # not analytics: marked from the events as they came
            ids = {e.id for e in fresh}
            self.seen.events([e for e in events if e.id in ids])
        except Exception:
            self.stats.seen_errors += 1
            log.warning("shoppers seen not written", exc_info=True)
        self.stats.seen_marked = self.seen.written
        return fresh

    def store_events(self, events: list[Event], *, index: bool = False) -> int:
        """Store ``events`` now; ``index=True`` only off the event loop (see :meth:`_store`).
        HQ's MQTT groups index (:meth:`on_events_many`); the single events stored on the
        loop (feedback, a till's redemption, a short link's click) leave it to them."""
        return self._counted(events, self._store(events, index))

    async def astore_events(self, events: list[Event]) -> int:
        """As :meth:`store_events`; on PostgreSQL the insert (a network round trip per
        batch) runs in a worker thread so the loop keeps reading MQTT meanwhile. SQLite's
        local WAL insert (~1 ms a batch) stays on the loop."""
        return self._counted(events, await self._db(self._store, events))

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

    def _batch_of(self, msg: aiomqtt.Message) -> tuple[EventBatch, list[Event]] | None:
        """A gateway's event batch and its events of the batch's store (None: counted bad)."""
        topic = msg.topic.value
        payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
        m = topics.parse(topic)
        if m is None or m.kind is not topics.Kind.GATEWAY_EVENTS:
            self._bad("topic", ValueError(f"unexpected topic {topic}"))
            return None
        try:
            batch = decode(payload, EventBatch)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._bad("events", exc)
            return None
        if batch.store != m.store or batch.gateway != m.gateway:
            self._bad("events", ValueError("batch store/gateway do not match the topic"))
            return None
        self.stats.batches += 1
        return batch, [e for e in batch.events if e.store == batch.store]

    async def on_events(self, msg: aiomqtt.Message) -> Reply | None:
        """A gateway's event batch; returns its end-to-end acknowledgement."""
        return (await self.on_events_many([msg]))[0]

    async def on_events_many(self, msgs: list[aiomqtt.Message]) -> list[Reply | None]:
        """Event batches that were waiting together, stored in one transaction (the
        rollup rows they share upserted once); each batch's acknowledgement, in order,
        counts the events of it that were new. Should that transaction fail, each batch
        is stored alone, so one bad batch does not hold back the others' acks."""
        got = [self._batch_of(m) for m in msgs]
        batches = [b for b in got if b is not None]
        if len(batches) > 1:
            try:
                acks = await self._store_batches(batches)
            except Exception:
                self.stats.group_retries += 1
                log.warning("event batches stored one by one after their group failed",
                            batches=len(batches), exc_info=True)
                acks = [await self._alone(b) for b in batches]
        else:
            acks = await self._store_batches(batches) if batches else []
        it = iter(acks)
        return [None if b is None else next(it) for b in got]

    async def _alone(self, batch: tuple[EventBatch, list[Event]]) -> Reply | None:
        try:
            return (await self._store_batches([batch]))[0]
        except Exception:
            self.stats.batch_errors += 1
            log.exception("event batch not stored (not acknowledged: the gateway resends it)",
                          batch=(batch[0].batch or "")[:64])
            return None

    async def _store_batches(self, batches: list[tuple[EventBatch, list[Event]]]
                             ) -> list[Reply | None]:
        events = [e for _, evs in batches for e in evs]
        stored = await asyncio.to_thread(self._store, events, True)  # may write the index
        self._counted(events, stored)
        fresh = {e.id for e in stored}
        await self._release(events)
        out: list[Reply | None] = []
        for batch, evs in batches:
            mine = {e.id for e in evs} & fresh
            fresh -= mine  # an event in two of the batches is the first one's
            if batch.batch is None:
                out.append(None)
                continue
            ack = BatchAck(v=SCHEMA_VERSION, batch=batch.batch, stored=len(mine))
            out.append(Reply(topics.gateway_acks(batch.store, batch.gateway), encode(ack)))
        return out

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
            return await self._judge(fb)
        self._bad("topic", ValueError(f"unexpected topic {topic}"))
        return None

    # ---- feedback ownership (hq.ownership) ---------------------------------------------
    async def _judge(self, fb: Feedback) -> Reply | None:
        key = _event_id(fb)
        await self._expire()
        if self.hold.refused(key) is not None:  # a resend of a refused one: ack again, once counted
            return _ack(fb, [fb.id])
        found = await self._db(delivered_to, self.db, fb)
        if isinstance(found, Delivered) and fb.kind == "lead" and \
                (why := await self._db(form_problem, self.db, fb)) is not None:
            log.info("lead refused", campaign=fb.campaign[:64], why=why)
            found = "lead_form_invalid"
        if isinstance(found, Delivered):
            held = self.hold.take(key)
            await self._accept(fb, found)
            return _ack(fb, sorted({fb.id, *(held.ids if held else [])}))
        if found is not None:
            self._refuse(key, fb, found)
            return _ack(fb, [fb.id])
        entry, new = self.hold.hold(key, fb)
        self.stats.feedback_hold_dropped += self.hold.evicted
        self.hold.evicted = 0
        self.stats.feedback_holding = len(self.hold)
        if entry is None:
            self.stats.feedback_hold_dropped += 1
        elif new:
            self.stats.feedback_held += 1
            log.debug("feedback held until its offer's batch arrives", inbox=fb.inbox,
                      offer=fb.offer[:64])
        elif self.hold.overdue(entry):
            self._refuse(key, fb, "offer_unknown")
            return _ack(fb, entry.ids)
        return None  # not acknowledged: the phone resends it

    async def _accept(self, fb: Feedback, d: Delivered) -> None:
        # One row per (offer, inbox, kind), under an id the phone cannot choose: a phone
        # could otherwise pre-empt a gateway's event ids or inflate a campaign's counts.
        # The store is the gateway's, from the offer_published event.
        self.stats.feedback += 1
        kind = "lead_submitted" if fb.kind == "lead" else f"offer_{fb.kind}"
        eid = _event_id(fb)
        if fb.kind == "lead":  # the form (personal data) in leads, the event without it
            await self._db(store_lead, self.db, LeadRow(
                id=eid, ts=fb.ts, campaign=d.campaign, store=d.store, offer=fb.offer,
                inbox=fb.inbox, fields=dict(fb.fields or {})))
        await self.astore_events([Event(id=eid, kind=kind, ts=fb.ts,  # type: ignore[arg-type]
                                        store=d.store, campaign=d.campaign, offer=fb.offer,
                                        inbox=fb.inbox)])

    def _refuse(self, key: str, fb: Feedback, reason: RefusalReason) -> None:
        self.hold.refuse(key, reason)
        self.stats.feedback_refused[reason] = self.stats.feedback_refused.get(reason, 0) + 1
        self.stats.feedback_holding = len(self.hold)
        log.warning("feedback refused", inbox=fb.inbox, reason=reason, kind=fb.kind,
                    offer=fb.offer[:64], campaign=fb.campaign[:64])

    async def _release(self, events: list[Event]) -> None:
        """Store the held feedback on offers this batch reports published."""
        for e in events:
            if e.kind != "offer_published" or e.offer is None or e.inbox is None:
                continue
            for held in self.hold.release(e.offer, e.inbox):
                if held.fb.campaign != e.campaign:
                    continue  # a made-up campaign: stays unknown, refused on its next resend
                if held.fb.kind == "lead" and \
                        (await self._db(form_problem, self.db, held.fb)) is not None:
                    self._refuse(_event_id(held.fb), held.fb, "lead_form_invalid")
                    if self.reply is not None:
                        self.reply(_ack(held.fb, held.ids))
                    continue
                await self._accept(held.fb, Delivered(store=e.store, campaign=e.campaign))
                self.stats.feedback_released += 1
                if self.reply is not None:
                    self.reply(_ack(held.fb, held.ids))
        self.stats.feedback_holding = len(self.hold)

    async def _expire(self) -> None:
        for key, entry in list(self.hold.expired()):
            self._refuse(key, entry.fb, "offer_unknown")
            if self.reply is not None:
                self.reply(_ack(entry.fb, entry.ids))


def _event_id(fb: Feedback) -> str:
    key = hashlib.sha256(f"{fb.offer}|{fb.inbox}|{fb.kind}".encode()).hexdigest()[:32]
    return f"fb{key}"


def _ack(fb: Feedback, ids: list[str]) -> Reply:
    """The ack goes to the broker of the store the phone says it is in: its topic names no
    store, and a phone that lies about it only loses its own ack (and resends)."""
    return Reply(topics.feedback_ack(fb.inbox), encode(FeedbackAck(v=SCHEMA_VERSION, ids=ids)),
                 store=fb.store)
