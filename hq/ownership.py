"""Whose feedback HQ believes: only feedback on an offer published to that very inbox.

A phone's feedback names an offer, a campaign and a store, all of which the phone could
make up; the broker's ACL pins only the inbox (the topic ends in it). What HQ trusts is
the gateways' ``offer_published`` events: the gateway writes one when the broker took an
offer for an inbox. So a feedback message is

- **accepted** when an ``offer_published`` event of its campaign names its offer and its
  inbox (the stored event takes the store from that event, not from the phone);
- **refused at once** when that offer was published, but to another inbox;
- **held** when HQ has never heard of the offer: the phone got it before the gateway's
  batch reached HQ (the batch goes out every 20 ms, the offer is on the phone in about
  one). Held feedback is not acknowledged, so the phone keeps it and resends it (every
  10 s, :mod:`aislecast.apps.phone`); it is stored the moment the batch arrives at this
  worker, or on a resend once any worker stored the batch. After :data:`FEEDBACK_HOLD_S`
  without the offer it is **refused** as unknown.

A refusal is acknowledged like a stored feedback (same :class:`FeedbackAck`, the wire
format has no refusal field), so a confused but honest phone stops resending; the
reason is counted and logged at HQ. What HQ holds is bounded overall and per inbox;
dropping a held message loses nothing, since the phone still has it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from aislecast.kernel.schema import Feedback
from hq.db import HqDb
from hq.purposes import lacking

__all__ = [
    "FEEDBACK_HELD_MAX",
    "FEEDBACK_HELD_PER_INBOX",
    "FEEDBACK_HOLD_S",
    "Delivered",
    "FeedbackHold",
    "Held",
    "RefusalReason",
    "delivered_to",
]

# How long feedback on an offer HQ has not heard of waits for the offer's batch. The
# batch follows the offer by ~20 ms normally; a gateway whose link to the broker dropped
# right after the broker took the offer resends it after its reconnect backoff (capped
# near a minute), so five minutes covers that with room. The phone resends every 10 s.
FEEDBACK_HOLD_S: Final = 300.0
# Held feedback per HQ worker (~300 bytes each), and per inbox: one phone has a few
# offers in flight at a time, so 32 unexplained ones is a phone making them up.
FEEDBACK_HELD_MAX: Final = 10_000
FEEDBACK_HELD_PER_INBOX: Final = 32
# Refusals remembered, so a resend is acknowledged again without a second count or log.
_REFUSED_MAX: Final = 10_000

RefusalReason = Literal["not_delivered_to_inbox", "offer_unknown", "lead_form_invalid"]


@dataclass(frozen=True, slots=True)
class Delivered:
    """The gateway's word that ``offer`` of ``campaign`` went to ``inbox`` in ``store``."""

    store: str
    campaign: str


_PUBLISHED = ("SELECT inbox, store FROM events WHERE offer = ? AND kind = 'offer_published'"
              " AND campaign = ?")


def delivered_to(db: HqDb, fb: Feedback) -> Delivered | RefusalReason | None:
    """What HQ's events say about ``fb``'s offer: delivered to its inbox, delivered to
    someone else (a refusal reason), or nothing yet (None). On the ``events (offer)``
    index (migration 2): one offer has a handful of events."""
    rows = db.query(_PUBLISHED, (fb.offer, fb.campaign))
    for inbox, store in rows:
        if inbox == fb.inbox:
            return Delivered(store=str(store), campaign=fb.campaign)
    # an offer to a shopper without analytics was stored without the inbox (hq.purposes):
    # their own feedback on it (its random id known only to their phone) is theirs
    anon = [str(store) for inbox, store in rows if inbox is None]
    if anon and lacking(db, [fb.inbox], "analytics"):
        return Delivered(store=anon[0], campaign=fb.campaign)
    return "not_delivered_to_inbox" if rows else None


@dataclass(slots=True)
class Held:
    """Feedback waiting for its offer: the latest message and every id it came under."""

    fb: Feedback
    since: float
    ids: list[str] = field(default_factory=list)


class FeedbackHold:
    """Bounded memory of held and refused feedback, keyed by the stored event's id
    (one per offer, inbox and kind, see :mod:`hq.ingest`)."""

    def __init__(self, *, hold_s: float = FEEDBACK_HOLD_S, max_held: int = FEEDBACK_HELD_MAX,
                 per_inbox: int = FEEDBACK_HELD_PER_INBOX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_s = hold_s
        self.max_held = max_held
        self.per_inbox = per_inbox
        self.clock = clock
        self._held: OrderedDict[str, Held] = OrderedDict()  # oldest first
        self._by_offer: dict[tuple[str, str], set[str]] = {}  # (offer, inbox) -> keys
        self._per_inbox: dict[str, int] = {}
        self._refused: OrderedDict[str, RefusalReason] = OrderedDict()
        self.evicted = 0  # held entries pushed out by newer ones (their phones resend)

    def __len__(self) -> int:
        return len(self._held)

    def refused(self, key: str) -> RefusalReason | None:
        return self._refused.get(key)

    def refuse(self, key: str, reason: RefusalReason) -> None:
        self._drop(key)
        self._refused[key] = reason
        while len(self._refused) > _REFUSED_MAX:
            self._refused.popitem(last=False)

    def hold(self, key: str, fb: Feedback) -> tuple[Held | None, bool]:
        """Hold ``fb`` (or note a resend of one held); returns the entry, or None when
        there is no room (the phone keeps it), and whether it is new."""
        entry = self._held.get(key)
        if entry is not None:
            entry.fb = fb
            if fb.id not in entry.ids and len(entry.ids) < 8:
                entry.ids.append(fb.id)
            return entry, False
        if self._per_inbox.get(fb.inbox, 0) >= self.per_inbox:
            return None, False
        if len(self._held) >= self.max_held:
            self._drop(next(iter(self._held)))
            self.evicted += 1
        entry = Held(fb=fb, since=self.clock(), ids=[fb.id])
        self._held[key] = entry
        self._by_offer.setdefault((fb.offer, fb.inbox), set()).add(key)
        self._per_inbox[fb.inbox] = self._per_inbox.get(fb.inbox, 0) + 1
        return entry, True

    def overdue(self, entry: Held) -> bool:
        return self.clock() - entry.since >= self.hold_s

    def release(self, offer: str, inbox: str) -> list[Held]:
        """The held feedback on ``offer`` for ``inbox`` (its batch just arrived), removed."""
        out = []
        for key in sorted(self._by_offer.get((offer, inbox), ())):
            entry = self._held.get(key)
            if entry is not None:
                out.append(entry)
            self._drop(key)
        return out

    def take(self, key: str) -> Held | None:
        entry = self._held.get(key)
        self._drop(key)
        return entry

    def expired(self) -> Iterator[tuple[str, Held]]:
        """Held entries past the hold, oldest first; the caller refuses each."""
        while self._held:
            key, entry = next(iter(self._held.items()))
            if not self.overdue(entry):
                return
            yield key, entry
            if key in self._held:  # the caller did not refuse it: do not loop forever
                self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._held.pop(key, None)
        if entry is None:
            return
        fb = entry.fb
        keys = self._by_offer.get((fb.offer, fb.inbox))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_offer[(fb.offer, fb.inbox)]
        left = self._per_inbox.get(fb.inbox, 1) - 1
        if left > 0:
            self._per_inbox[fb.inbox] = left
        else:
            self._per_inbox.pop(fb.inbox, None)
