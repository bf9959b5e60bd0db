"""Turns what the gateway decides into outbox rows, with group commit.

Every presence event, decision, tap and health note becomes an :class:`Event`; offers
become outbox rows with their expiry. Everything recorded in one event-loop turn shares
one SQLite transaction, committed before any of its offers reaches the publisher
(docs/architecture.md#group-commit): at 1,000 offers/s that turns ~4,000 commits a second into a few hundred.
The cap charges and budget spends of those decisions, and the visits they started, are
written in the same transaction (``charges``, ``visits``), so after a crash an offer, its
charge and its visit exist together or not at all (docs/storage.md#caps-and-the-offer-commit).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from aislecast.kernel import topics
from aislecast.kernel.ids import new_id
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import Event, encode
from gateway.caps import CapLedger
from gateway.decisions import Decision
from gateway.outbox import Outbox, OutboxError, OutboxRow
from gateway.visits import VisitBook

__all__ = ["EventMaker", "EventRecorder", "EventRow", "OfferRow", "RecorderStats", "published_id"]

log = get_logger(__name__)

EventRow = tuple[str, str, bytes]  # (event id, topic, payload)
OfferRow = tuple[str, str, bytes, float]  # (offer id, topic, payload, expires_at)


class _Publisher(Protocol):
    def submit(self, row_seq: int, row: OutboxRow) -> None: ...

    def events_added(self) -> None: ...


@dataclass(slots=True)
class RecorderStats:
    decisions: int = 0
    offers: int = 0
    write_failures: int = 0  # group commits the outbox refused (disk full), retried


def published_id(offer_id: str) -> str:
    """The id of the ``offer_published`` event of ``offer_id`` (32 hex digits, as
    :func:`~aislecast.kernel.ids.new_id`)."""
    return hashlib.blake2b(b"offer_published:" + offer_id.encode(), digest_size=16).hexdigest()


class EventMaker:
    """Events of this gateway (id, time, store, gateway filled in), and the
    ``offer_published`` event the publisher commits with an offer's acknowledgement."""

    def __init__(self, *, store: str, gateway: str,
                 notify: Callable[[str, dict[str, Any]], None]) -> None:
        self.store = store
        self.gateway = gateway
        self.topic = topics.gateway_events(store, gateway)
        self._notify = notify

    def event(self, kind: str, *, eid: str | None = None, **fields: Any) -> EventRow:
        eid = eid or new_id()
        ev = Event(id=eid, kind=kind, ts=time.time(), store=self.store,  # type: ignore[arg-type]
                   gateway=self.gateway, **{k: v for k, v in fields.items() if v is not None})
        return eid, self.topic, encode(ev)

    def offer_acked(self, row: OutboxRow) -> list[EventRow]:
        """The broker took an offer: its ``offer_published`` event (same transaction as
        the offer row's removal, see :class:`gateway.publisher.OutboxPublisher`). Its id
        is derived from the offer's: an offer published again after a crash (PUBACK
        received, removal not yet committed) gives the same event, which the outbox and
        HQ's ingest then keep once."""
        offer = msgspec.json.decode(row.payload)
        self._notify("offer_published", {"inbox": offer.get("inbox"), "campaign": offer.get("campaign")})
        return [self.event("offer_published", eid=published_id(row.id), inbox=offer.get("inbox"),
                           campaign=offer.get("campaign"), variant=offer.get("variant"),
                           offer=row.id, zone=offer.get("zone"),
                           reason="till_code" if offer.get("redeem_code") else None)]


class EventRecorder:
    """Group commit of this loop turn's events and offers, with the cap charges of
    ``charges`` (the decision engine's ledger, which then leaves its writes to this
    commit) and the new visits of ``visits``, then the offers to ``publisher`` (None
    for offline tools: rows are durable, a publisher reads its backlog at start)."""

    def __init__(self, outbox: Outbox, events: EventMaker, publisher: _Publisher | None, *,
                 charges: CapLedger | None = None, visits: VisitBook | None = None) -> None:
        self.outbox = outbox
        self.charges = charges
        self.visits = visits
        if charges is not None:
            charges.defer_to_group_commit()
        self.events = events
        self.event = events.event
        self.publisher = publisher
        self.stats = RecorderStats()
        self._offers: list[OfferRow] = []
        self._rows: list[EventRow] = []
        self._scheduled = False
        self.closed = False

    def decision(self, d: Decision, rows: list[EventRow], offers: list[OfferRow]) -> None:
        """Append the ``decision`` event (with its reason) and the offer, if any."""
        self.stats.decisions += 1
        t = d.trigger
        rows.append(self.event("decision", inbox=t.inbox, zone=t.zone, campaign=d.campaign,
                               variant=d.variant, offer=d.offer.id if d.offer else None,
                               reason=d.reason, holdout=True if d.holdout else None,
                               detail={"trigger": t.kind}))  # HQ's rollups: per trigger
        if d.offer is not None:
            self.stats.offers += 1
            offers.append((d.offer.id, topics.offers(t.inbox), encode(d.offer), d.offer.expires_at))

    def commit(self, offers: list[OfferRow], rows: list[EventRow]) -> None:
        """Queue for this loop turn's transaction (or commit now when no loop runs)."""
        self._offers += offers
        self._rows += rows
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # offline tools and benches: commit right away
            self.flush()
            return
        self._scheduled = True

    def flush(self) -> None:
        self._scheduled = False
        if self.closed:
            return
        offers, self._offers = self._offers, []
        rows, self._rows = self._rows, []
        taken = self.charges.take() if self.charges is not None else None
        if not offers and not rows and not taken:
            return
        new = self.visits.take_new() if self.visits is not None else None

        def also(cur: sqlite3.Cursor) -> None:
            if taken:
                taken.write(cur)
            if new:
                new.write(cur)

        try:
            seqs = self.outbox.add(offers=offers, events=rows, also=also)
        except OutboxError as exc:
            # keep them for the next turn; never hand an uncommitted offer to the publisher
            self._offers[:0], self._rows[:0] = offers, rows
            if taken and self.charges is not None:
                self.charges.give_back(taken)
            if new and self.visits is not None:
                self.visits.give_back(new)
            self.stats.write_failures += 1
            n = self.stats.write_failures
            if n == 1 or n % 100 == 0:
                log.error("%s (failures=%d)", exc, n)  # noqa: TRY400
            return
        if self.publisher is None:
            return  # rows are durable; the publisher reads its backlog when it starts
        for (oid, topic, payload, exp), seq in zip(offers, seqs, strict=True):
            self.publisher.submit(seq, OutboxRow(seq, oid, "offer", topic, payload, exp, 0))
        self.publisher.events_added()
