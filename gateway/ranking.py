"""Ranking at the gateway: predicted propensity and Thompson sampling across variants.

The bundle's :class:`~aislecast.kernel.campaign.Model` carries logistic-regression weights over
:data:`~aislecast.kernel.campaign.FEATURES` (trained at HQ from opens, clicks and redemptions),
per-inbox profiles, and per-variant Beta posteriors of the click rate. Campaigns tied on
priority are ordered by predicted propensity; within the winner, each variant draws from
its posterior with the model's prediction as a prior worth ``PRIOR_STRENGTH`` pseudo
trials, and the highest draw wins: new variants get explored, good ones exploited.
"""

from __future__ import annotations

import math
import random
import time
from typing import Final

import msgspec

from aislecast.kernel.campaign import FEATURES, ArmStats, Campaign, Creative, Model, Profile, features

__all__ = ["BOOST_KEEP_S", "PRIOR_STRENGTH", "Ranker"]

# How many pseudo-trials the model's prediction is worth in a variant's Beta prior: small,
# so a few dozen real outcomes shipped from HQ dominate it.
PRIOR_STRENGTH = 4.0
_NO_ARM = ArmStats()
#: A shopper's local lead boost is forgotten this long after their last dwell here, so a
#: gateway that sees a thousand new shoppers a day holds a day's boosts, not every one since
#: it started (the soak, issue 14). Looked at once per :data:`_PRUNE_EVERY_S`.
BOOST_KEEP_S: Final = 86_400.0
_PRUNE_EVERY_S: Final = 600.0


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class Ranker:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.model = Model()
        self._boost: dict[str, float] = {}  # inbox -> lead raised by dwell seen here
        self._boost_at: dict[str, float] = {}  # inbox -> wall time of that dwell's last raise
        self._prune_at = float("-inf")
        self._base: dict[tuple[str, str], float] = {}
        self._shopper_w: tuple[float, float, float] | None = None
        # withdrew personalisation (a delta, gateway.consent): ranked as anonymous
        self._unprofiled: set[str] = set()

    def set_model(self, model: Model | None) -> None:
        """A bundle's model; it is the truth as of the bundle, so earlier withdrawals are
        forgotten here (gateway.consent applies newer deltas again right after)."""
        self.model = model or Model()
        self._base = {}
        self._shopper_w = None
        self._unprofiled = set()

    def add_profiles(self, profiles: dict[str, Profile]) -> None:
        """Shoppers admitted by a delta, with their profiles, on top of the model's (the
        next bundle's model replaces them all). HQ sends a profile only for a shopper who
        grants personalisation, so one sent ends an earlier withdrawal."""
        if profiles:
            self._unprofiled.difference_update(profiles)
            self.model = msgspec.structs.replace(self.model,
                                                 profiles={**self.model.profiles, **profiles})

    def unprofile(self, inboxes: list[str]) -> int:
        """Shoppers who withdrew personalisation: their profile and local lead boost go,
        and they are ranked and targeted as an anonymous shopper from now on (until a
        profile comes again); returns the profiles dropped."""
        self._unprofiled.update(inboxes)
        for inbox in inboxes:
            self.forget(inbox)
        gone = [i for i in inboxes if i in self.model.profiles]
        if gone:
            self.model = msgspec.structs.replace(self.model, profiles={
                i: p for i, p in self.model.profiles.items() if i not in self._unprofiled})
        return len(gone)

    def unprofiled(self) -> int:
        return len(self._unprofiled)

    def profile(self, inbox: str) -> Profile | None:
        if inbox in self._unprofiled:
            return None
        p = self.model.profiles.get(inbox)
        boost = self._boost.get(inbox)
        if boost is None:
            return p
        base = p or Profile()
        lead = 1.0 - (1.0 - base.lead) * (1.0 - boost)
        return Profile(base.segments, base.tier, base.visits, lead, base.consents)

    def observe_dwell(self, inbox: str, dwell_s: float) -> None:
        """Dwell in this store raises the lead score locally (1 - e^(-dwell/300 s))."""
        if inbox in self._unprofiled:
            return
        now = time.time()
        b = 1.0 - math.exp(-dwell_s / 300.0)
        if b > self._boost.get(inbox, 0.0):
            self._boost[inbox] = b
        self._boost_at[inbox] = now
        if now >= self._prune_at:
            self.prune(now)

    def prune(self, now: float) -> int:
        """Forget boosts of shoppers with no dwell here for :data:`BOOST_KEEP_S`; how many."""
        self._prune_at = now + _PRUNE_EVERY_S
        stale = [i for i, at in self._boost_at.items() if at < now - BOOST_KEEP_S]
        for inbox in stale:
            self.forget(inbox)
        return len(stale)

    def boosted(self) -> int:
        """Shoppers whose lead is raised locally (bounded by :meth:`prune`)."""
        return len(self._boost)

    def forget(self, inbox: str) -> None:
        self._boost.pop(inbox, None)
        self._boost_at.pop(inbox, None)

    def propensity(self, c: Campaign, v: Creative, p: Profile | None) -> float:
        """sigmoid(w . features): the campaign/variant part is cached per model, the
        shopper part (lead, segment match, visits) is added per call."""
        w = self.model.weights
        if not w:
            return 0.5
        key = (c.id, v.id)
        base = self._base.get(key)
        if base is None:
            x = features(c, v, None)
            base = self._base[key] = sum(wi * xi for wi, xi in zip(w, x, strict=False))
        if p is None:
            return _sigmoid(base)
        sw = self._shopper_w
        if sw is None:
            def at(name: str) -> float:
                i = FEATURES.index(name)
                return w[i] if i < len(w) else 0.0

            sw = self._shopper_w = (at("lead"), at("segment_match"), at("log_visits"))
        wl, ws, wv = sw
        z = base + wl * p.lead + wv * math.log1p(p.visits)
        if ws and p.segments and c.audience.segments and \
                not set(p.segments).isdisjoint(c.audience.segments):
            z += ws
        return _sigmoid(z)

    def best(self, cands: list[Campaign], p: Profile | None) -> Campaign:
        """The candidate with the highest predicted propensity (its best variant's)."""
        if len(cands) == 1 or not self.model.weights:
            return cands[0]
        return max(cands, key=lambda c: max(self.propensity(c, v, p) for v in c.creatives))

    def variant(self, c: Campaign, p: Profile | None) -> Creative:
        if len(c.creatives) == 1:
            return c.creatives[0]
        arms = self.model.arms
        best, best_draw = c.creatives[0], -1.0
        for v in c.creatives:
            a = arms.get(f"{c.id}/{v.id}", _NO_ARM)
            prior = self.propensity(c, v, p)
            draw = self.rng.betavariate(a.alpha + PRIOR_STRENGTH * prior,
                                        a.beta + PRIOR_STRENGTH * (1.0 - prior))
            if draw > best_draw:
                best, best_draw = v, draw
        return best
