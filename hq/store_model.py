"""The ranking model as one store's bundle carries it: the store's shoppers only.

HQ trains one :class:`~aislecast.kernel.campaign.Model` for the chain (:mod:`hq.learning`):
weights, bandit arms and a :class:`~aislecast.kernel.campaign.Profile` per opted-in
shopper. A store's gateways need the weights and arms, and the profiles of the shoppers
the store receives (:mod:`hq.scope`) who grant ``personalisation`` (the caller passes
only those, :mod:`hq.purposes`), nobody else's.

What the gateway reads of a profile: ranking (:mod:`gateway.ranking`,
:func:`aislecast.kernel.campaign.features`) reads ``segments`` (matched against the
campaign's audience segments), ``visits`` and ``lead``; the audience rules
(``gateway.decisions``) read ``segments``, ``tier``, ``visits`` and ``consents``. So
within a profile the cut keeps only what this store's campaigns can use:

* ``segments``: those some campaign of the chain targets (a segment no campaign names
  never matches anything; the chain's campaigns, not the store's, because a campaign
  reaches a store by delta between bundles);
* ``tier``: kept only when some campaign of the chain targets loyalty tiers;
* ``visits``, ``lead`` and ``consents`` as they are (small numbers and a short list).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import msgspec

from aislecast.kernel.campaign import Campaign, Model, Profile

__all__ = ["Targeted", "store_model", "targeted"]


class Targeted(msgspec.Struct, frozen=True):
    """What the chain's campaigns target: the profile fields worth shipping."""

    segments: frozenset[str]
    tiers: bool


def targeted(campaigns: Iterable[Campaign]) -> Targeted:
    segs: set[str] = set()
    tiers = False
    for c in campaigns:
        segs.update(c.audience.segments)
        tiers = tiers or bool(c.audience.loyalty_tiers)
    return Targeted(frozenset(segs), tiers)


def _cut(p: Profile, t: Targeted) -> Profile:
    segs = [s for s in p.segments if s in t.segments]
    tier = p.tier if t.tiers else ""
    if len(segs) == len(p.segments) and tier == p.tier:
        return p
    return Profile(segments=segs, tier=tier, visits=p.visits, lead=p.lead, consents=p.consents)


def store_model(model: Model | None, inboxes: Collection[str], t: Targeted) -> Model | None:
    """``model`` with the profiles of ``inboxes`` only, each cut to what ``t`` targets."""
    if model is None:
        return None
    profiles = model.profiles
    mine = {i: _cut(profiles[i], t) for i in inboxes if i in profiles}
    return msgspec.structs.replace(model, profiles=mine)
