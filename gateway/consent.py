"""Consent and erasure deltas at the gateway (docs/architecture.md#consent-and-data-rights).

HQ sends four kinds of consent news in a signed :class:`~aislecast.kernel.schema.BundleDelta`:

* ``opt_ins`` with ``tokens``: shoppers enrolled or opted back in, with the token tables
  the next bundle will carry for them; they resolve at once (:meth:`IdentityResolver.admit`),
  and with their ``profiles`` (a first visit: cut as the bundle's model cuts them) the
  audience rules and ranking see them at once too;
* ``opt_outs``: shoppers who withdrew offers (as before);
* ``unprofiled``: shoppers who withdrew personalisation: their profile and local lead
  boost are dropped from the ranking at once, and they are decided for as anonymous
  shoppers (audience rules do not match them, untargeted campaigns do) until a delta
  brings their profile again (granted again) or a newer bundle's model;
* ``erased``: shoppers whose data is erased at HQ; every trace of them goes from this
  gateway's memory and SQLite file: cap charges, visits, presence tracks, unsent offers
  (deleted) and unsent events (kept, without the pseudonym: HQ counts them anonymously).

A bundle built before such a delta reaches the gateway may arrive after it (the next
periodic bundle is built from the database a moment earlier). Its tables would undo the
delta, so :class:`ConsentOverlay` keeps every consent delta newer than the applied
bundle's ``delta_seq`` and applies them again on top of each bundle: the shopper never
flaps between known and unknown. Once a bundle built after the delta arrives, the delta
is dropped; that bundle agrees with it.

What the purge cannot edit: the signed envelopes of the last bundle and of the deltas
since (table ``bundle`` and ``deltas``) still hold the pseudonym until the next bundle
replaces them (HQ republishes every few minutes); they are needed to start offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from aislecast.kernel import topics
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import BundleDelta, Profile
from gateway.caps import CapLedger
from gateway.identity import IdentityResolver
from gateway.outbox import Outbox
from gateway.presence import PresenceEngine
from gateway.visits import VisitBook

__all__ = ["ConsentOverlay", "ConsentStats", "Purged"]

log = get_logger(__name__)


class _OptOuts(Protocol):
    def opt_out(self, inboxes: list[str]) -> None: ...
    def opt_in(self, inboxes: list[str]) -> None: ...
    def add_profiles(self, profiles: dict[str, Profile]) -> None: ...
    def unprofile(self, inboxes: list[str]) -> int: ...


@dataclass(slots=True)
class Purged:
    """What one erasure removed from this gateway."""

    cap_charges: int = 0
    visits: int = 0
    offers: int = 0
    events_anonymised: int = 0


@dataclass(slots=True)
class ConsentStats:
    admitted: int = 0  # shoppers admitted by deltas
    erased: int = 0  # shoppers purged
    reapplied: int = 0  # consent deltas applied again on top of an older bundle
    unprofiled: int = 0  # shoppers whose withdrawal of personalisation a delta brought
    profiles_dropped: int = 0  # profiles those deltas removed from the ranking
    last_purge: Purged = field(default_factory=Purged)


def _is_consent(d: BundleDelta) -> bool:
    return bool(d.opt_ins or d.erased or d.opt_outs or d.unprofiled)


@dataclass(slots=True)
class ConsentOverlay:
    identity: IdentityResolver
    decider: _OptOuts
    ledger: CapLedger
    visits: VisitBook
    presence: PresenceEngine
    outbox: Outbox
    stats: ConsentStats = field(default_factory=ConsentStats)
    _newer: dict[int, BundleDelta] = field(default_factory=dict)  # seq -> consent delta

    def delta(self, d: BundleDelta) -> None:
        """Apply a delta's consent news (at arrival, or replayed from the file on start)."""
        if not _is_consent(d):
            return
        self._newer[d.seq] = d
        self._apply(d, purge=True)

    def bundle(self, delta_seq: int) -> None:
        """A bundle was loaded: deltas it includes are dropped, newer ones applied again."""
        self._newer = {s: d for s, d in self._newer.items() if s > delta_seq}
        for seq in sorted(self._newer):
            self.stats.reapplied += 1
            self._apply(self._newer[seq], purge=False)

    def _apply(self, d: BundleDelta, *, purge: bool) -> None:
        if d.opt_ins:
            self.identity.admit(d.opt_ins, d.tokens)
            self.decider.opt_in(d.opt_ins)
            self.decider.add_profiles({i: p for i, p in d.profiles.items() if i in d.opt_ins})
            self.stats.admitted += len(d.opt_ins) if purge else 0
        if d.unprofiled:
            dropped = self.decider.unprofile(d.unprofiled)
            if purge:
                self.stats.unprofiled += len(d.unprofiled)
                self.stats.profiles_dropped += dropped
        if d.opt_outs:
            self.identity.opt_out(d.opt_outs)
            self.decider.opt_out(d.opt_outs)
        if d.erased:
            self.identity.forget(d.erased)
            self.decider.opt_out(d.erased)
            if purge:
                for inbox in d.erased:
                    self.purge(inbox)

    def purge(self, inbox: str) -> Purged:
        """Every row and track of ``inbox`` on this gateway, gone (see the module doc)."""
        self.presence.forget(inbox)
        offers, events = self.outbox.forget(inbox, topics.offers(inbox))
        p = Purged(cap_charges=self.ledger.forget(inbox), visits=self.visits.forget(inbox),
                   offers=offers, events_anonymised=events)
        self.stats.erased += 1
        self.stats.last_purge = p
        log.info("erased shopper purged", cap_charges=p.cap_charges, visits=p.visits,
                 offers=p.offers, events_anonymised=p.events_anonymised)
        return p
