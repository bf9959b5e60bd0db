"""Campaigns paused at HQ, remembered so a "no offer" decision can name the one it stopped.

HQ pauses a campaign with a delta (its id in ``paused``, or the campaign itself with
``status = "paused"``); the engine simply stops matching it, so without this book the
shopper's decision would say ``no_campaign`` although a campaign for exactly that
trigger exists and is on hold. A later bundle carries only live and scheduled
campaigns: every campaign it carries is live again. A delta that carries a campaign
with another status resumes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aislecast.kernel.campaign import Campaign
from gateway.decisions._engine import Decision

__all__ = ["PausedCampaigns"]


class PausedCampaigns:
    def __init__(self) -> None:
        self._paused: dict[str, Campaign] = {}

    def __len__(self) -> int:
        return len(self._paused)

    def __contains__(self, campaign_id: object) -> bool:
        return campaign_id in self._paused

    def bundle_applied(self, campaigns: Iterable[Campaign]) -> None:
        for c in campaigns:
            self._paused.pop(c.id, None)

    def delta_applied(self, known: Mapping[str, Campaign], paused: Iterable[str],
                      campaigns: Iterable[Campaign]) -> None:
        """``known``: the campaigns of the current bundle and the delta, by id."""
        self._paused |= {cid: known[cid] for cid in paused if cid in known}
        for c in campaigns:
            if c.status == "paused":
                self._paused[c.id] = c
            else:
                self._paused.pop(c.id, None)

    def why_none(self, d: Decision) -> Decision:
        """``no_campaign`` where a paused campaign would have matched becomes
        ``campaign_paused`` naming it; every other decision is returned as it is."""
        t = d.trigger
        if d.reason != "no_campaign" or not self._paused:
            return d
        for c in self._paused.values():
            if any(tr.kind == t.kind and (not tr.zones or t.zone in tr.zones)
                   for tr in c.all_triggers()):
                return Decision(t, "campaign_paused", c.id)
        return d
