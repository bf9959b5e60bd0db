"""Turns what the gateway decides into outbox rows, with group commit.

Every presence event, decision, tap and health note becomes an :class:`Event`; offers
become outbox rows with their expiry. Everything recorded in one event-loop turn shares
one SQLite transaction, committed before any of its offers reaches the publisher
(docs/architecture.md#group-commit): at 1,000 offers/s that turns ~4,000 commits a second into a few hundred.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from aislecast.kernel import topics
from aislecast.kernel.ids import new_id
from aislecast.kernel.schema import Event, encode
from gateway.decisions import Decision
from gateway.outbox import Outbox, OutboxError, OutboxRow

__all__ = ["EventRecorder", "EventRow", "OfferRow"]

log = logging.getLogger("aislecast.gateway.recorder")

EventRow = tuple[str, str, bytes]  # (event id, topic, payload)
OfferRow = tuple[str, str, bytes, float]  # (offer id, topic, payload, expires_at)


class _Publisher(Protocol):
    def submit(self, row_seq: int, row: OutboxRow) -> None: ...

    def events_added(self) -> None: ...


class _Counters(Protocol):
    decisions: int
    offers: int


class EventRecorder:
    def __init__(self, outbox: Outbox, *, store: str, gateway: str, counters: _Counters,
                 notify: Callable[[str, dict[str, Any]], None]) -> None:
        self.outbox = outbox
        self.store = store
        self.gateway = gateway
        self.topic = topics.gateway_events(store, gateway)
        self.counters = counters
        self.publisher: _Publisher | None = None  # set once the publisher exists
        self._notify = notify
        self._offers: list[OfferRow] = []
        self._rows: list[EventRow] = []
        self._scheduled = False
        self.closed = False
        self.write_failures = 0

    def event(self, kind: str, **fields: Any) -> EventRow:
        eid = new_id()
        ev = Event(id=eid, kind=kind, ts=time.time(), store=self.store,  # type: ignore[arg-type]
                   gateway=self.gateway, **{k: v for k, v in fields.items() if v is not None})
        return eid, self.topic, encode(ev)

    def decision(self, d: Decision, rows: list[EventRow], offers: list[OfferRow]) -> None:
        """Append the ``decision`` event (with its reason) and the offer, if any."""
        self.counters.decisions += 1
        t = d.trigger
        rows.append(self.event("decision", inbox=t.inbox, zone=t.zone, campaign=d.campaign,
                               variant=d.variant, offer=d.offer.id if d.offer else None,
                               reason=d.reason, holdout=True if d.holdout else None))
        if d.offer is not None:
            self.counters.offers += 1
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
        if not offers and not rows:
            return
        try:
            seqs = self.outbox.add(offers=offers, events=rows)
        except OutboxError as exc:
            # keep them for the next turn; never hand an uncommitted offer to the publisher
            self._offers[:0], self._rows[:0] = offers, rows
            self.write_failures += 1
            if self.write_failures == 1 or self.write_failures % 100 == 0:
                log.error("%s (failures=%d)", exc, self.write_failures)  # noqa: TRY400
            return
        if self.publisher is None:
            return  # rows are durable; the publisher reads its backlog when it starts
        for (oid, topic, payload, exp), seq in zip(offers, seqs, strict=True):
            self.publisher.submit(seq, OutboxRow(seq, oid, "offer", topic, payload, exp, 0))
        self.publisher.events_added()

    def offer_acked(self, row: OutboxRow) -> list[EventRow]:
        """The broker took an offer: its ``offer_published`` event (same transaction as
        the offer row's removal, see :class:`gateway.publisher.OutboxPublisher`)."""
        offer = msgspec.json.decode(row.payload)
        self._notify("offer_published", {"inbox": offer.get("inbox"), "campaign": offer.get("campaign")})
        return [self.event("offer_published", inbox=offer.get("inbox"),
                           campaign=offer.get("campaign"), variant=offer.get("variant"),
                           offer=row.id, zone=offer.get("zone"))]
