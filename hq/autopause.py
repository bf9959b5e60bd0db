"""Auto-pause: a campaign's own rules pause it, through the same path as the console's
pause button, within seconds.

A campaign lists its rules in ``auto_pause`` (:class:`~aislecast.kernel.campaign.PauseRule`):

- ``dismiss_rate``: ``offer_dismissed`` per ``offer_delivered`` above ``above`` once
  there are ``after`` deliveries;
- ``ctr_floor``: ``offer_clicked`` per ``offer_delivered`` below ``below`` once there
  are ``after`` deliveries;
- ``budget_pace``: the share of the budget spent (offers decided for an impressions
  budget, redemptions for a redemptions budget) minus the share of the schedule
  elapsed, above ``ahead_by``;
- ``code_refusals``: more than ``refusals`` of the campaign's till codes refused in the
  last ``within_s`` seconds (``code_refusals``, written by :mod:`hq.till`): ``used``
  (a code copied or shared), ``foreign_store`` (verified under another store's key: a
  code carried to the wrong store, or a leaked one) and ``forged`` where the serial
  names an offer this store published but the tag fails (a misprinted or altered
  code). A code's letters do not name its campaign (the campaign is only inside the
  tag), so a made-up code is not pinned on any campaign; nor is ``unknown_till`` (no
  code was checked). ``expired`` is left out: it is a shopper coming late, a matter
  of the campaign's validity, not of fraud or misprints.

The rates count the campaign's events since its last auto-pause, resume or edit by a
person (the newest ``campaign.auto_pause``, ``campaign.resume``, ``campaign.save`` or
``campaign.update`` in the audit log): a campaign resumed after a pause is judged
afresh, not re-paused on the numbers that paused it. Budget pace is cumulative: a
campaign still ahead of its budget is paused again after a resume until the rule or
the budget changes.

:class:`AutoPauser` runs as HQ's ``hq-autopause`` task on every worker, every
``every_s``. Each round reads the campaigns off the event loop; only the leader
(:mod:`hq.leader`) judges and pauses: :meth:`hq.service.HqService.pause_campaign`
stores the campaign paused with ``paused_by`` (rule, time, numbers, reason) and sends
the signed delta to its stores' gateways; the action is written to the audit log
(actor ``hq:auto-pause``, action ``campaign.auto_pause``, the campaign before and
after). Every worker raises a ``campaign_auto_paused`` alert (:mod:`hq.alerts`) for
each campaign paused by a rule until a person resumes or edits it.

See docs/architecture.md#auto-pause.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aislecast.kernel.campaign import Campaign, PausedBy, PauseRule
from aislecast.kernel.counters import by, count
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import decode
from hq.alerts import Condition
from hq.audit import AuditLog
from hq.db import HqDb
from hq.service import HqService

__all__ = ["ACTION", "ACTOR", "AUTOPAUSE_EVERY_S", "AutoPauseStats", "AutoPauser", "Verdict",
           "judge", "numbers_of", "rules_since"]

log = get_logger(__name__)

AUTOPAUSE_EVERY_S: Final = 3.0
ACTOR: Final = "hq:auto-pause"
ACTION: Final = "campaign.auto_pause"
# a person's change restarts the count, as does an auto-pause
_RESTARTS: Final = (ACTION, "campaign.resume", "campaign.save", "campaign.update")


@dataclass(slots=True)
class AutoPauseStats:
    rounds: int = count("auto-pause rounds judged by the leader")
    paused: dict[str, int] = by("rule", "campaigns paused by an auto-pause rule, by rule kind")
    failures: int = count("auto-pause rounds or pauses that failed (logged)")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule that fired, with the numbers it saw."""

    rule: PauseRule
    numbers: dict[str, float]
    reason: str


def rules_since(db: HqDb, cid: str) -> float:
    """When the rules' event counts start for ``cid`` (0: the campaign's beginning)."""
    marks = ", ".join("?" * len(_RESTARTS))
    row = db.one(f"SELECT max(ts) FROM audit WHERE object = ? AND action IN ({marks})",  # noqa: S608
                 (f"campaign:{cid}", *_RESTARTS))
    return float(row[0]) if row and row[0] is not None else 0.0


def numbers_of(db: HqDb, c: Campaign, since: float, now: float | None = None) -> dict[str, float]:
    """What the rules look at: feedback since ``since``, the budget spent ever, and the
    refused codes in a ``code_refusals`` rule's window (since ``since`` at most)."""
    got = {str(k): int(n) for k, n in db.query(
        "SELECT kind, count(*) FROM events WHERE campaign = ? AND ts > ? AND kind IN"
        " ('offer_delivered', 'offer_clicked', 'offer_dismissed') GROUP BY kind", (c.id, since))}
    n: dict[str, float] = {"deliveries": got.get("offer_delivered", 0),
                           "clicks": got.get("offer_clicked", 0),
                           "dismissals": got.get("offer_dismissed", 0), "since": since}
    if c.budget.kind != "none":
        sql = ("SELECT count(*) FROM events WHERE campaign = ? AND kind = 'decision'"
               " AND reason = 'offer'" if c.budget.kind == "impressions" else
               "SELECT count(*) FROM events WHERE campaign = ? AND kind = 'offer_redeemed'")
        row = db.one(sql, (c.id,))
        n["budget_spent"] = int(row[0]) if row else 0
    rule = next((r for r in c.auto_pause if r.kind == "code_refusals"), None)
    if rule is not None and rule.within_s is not None:
        start = max(since, (time.time() if now is None else now) - rule.within_s)
        refused = {str(k): int(m) for k, m in db.query(
            "SELECT reason, count(*) FROM code_refusals WHERE campaign = ? AND ts > ?"
            " GROUP BY reason", (c.id, start))}
        n |= {"refusals": sum(refused.values()), "within_s": rule.within_s,
              **{f"refused_{k}": float(m) for k, m in sorted(refused.items())}}
    return n


def judge(c: Campaign, n: dict[str, float], now: float) -> Verdict | None:
    """The first of ``c``'s rules that fires on the numbers ``n`` at ``now``, if any."""
    deliveries = n.get("deliveries", 0.0)
    for r in c.auto_pause:
        if r.kind == "dismiss_rate" and r.above is not None and deliveries >= max(r.after, 1):
            rate = n.get("dismissals", 0.0) / deliveries
            if rate > r.above:
                return Verdict(r, n | {"dismiss_rate": round(rate, 4)},
                               f"dismiss rate {rate:.1%} above {r.above:.1%} after "
                               f"{deliveries:.0f} deliveries")
        elif r.kind == "ctr_floor" and r.below is not None and deliveries >= max(r.after, 1):
            ctr = n.get("clicks", 0.0) / deliveries
            if ctr < r.below:
                return Verdict(r, n | {"ctr": round(ctr, 4)},
                               f"CTR {ctr:.1%} below {r.below:.1%} after {deliveries:.0f} deliveries")
        elif (r.kind == "budget_pace" and r.ahead_by is not None and c.budget.total > 0
              and c.schedule.start is not None and c.schedule.end is not None):
            spent = n.get("budget_spent", 0.0) / c.budget.total
            span = c.schedule.end - c.schedule.start
            elapsed = min(1.0, max(0.0, (now - c.schedule.start) / span))
            if spent - elapsed > r.ahead_by:
                return Verdict(r, n | {"spent_share": round(spent, 4),
                                       "elapsed_share": round(elapsed, 4)},
                               f"{spent:.0%} of the budget spent at {elapsed:.0%} of the "
                               f"schedule (more than {r.ahead_by:.0%} ahead)")
        elif r.kind == "code_refusals" and r.refusals is not None and r.within_s is not None:
            refused = n.get("refusals", 0.0)
            if refused > r.refusals:
                why = ", ".join(f"{n[k]:.0f} {k.removeprefix('refused_')}" for k in sorted(n)
                                if k.startswith("refused_"))
                return Verdict(r, n, f"{refused:.0f} till codes refused ({why}) in "
                                     f"{r.within_s / 60:g} min, more than {r.refusals}")
    return None


def _round(db: HqDb, now: float, judging: bool) -> tuple[list[Campaign], list[tuple[Campaign, Verdict]]]:
    """Off the loop: every campaign, and (when ``judging``) the live ones' verdicts."""
    campaigns = [decode(body, Campaign) for (body,) in db.query("SELECT body FROM campaigns")]
    fired = []
    for c in campaigns:
        if judging and c.status == "live" and c.auto_pause:
            v = judge(c, numbers_of(db, c, rules_since(db, c.id), now), now)
            if v is not None:
                fired.append((c, v))
    return campaigns, fired


@dataclass
class AutoPauser:
    """``await AutoPauser(service, audit, leading=election.leading.is_set).run()``."""

    service: HqService
    audit: AuditLog
    leading: Callable[[], bool]
    every_s: float = AUTOPAUSE_EVERY_S
    clock: Callable[[], float] = time.time
    stats: AutoPauseStats = field(default_factory=AutoPauseStats)
    _conditions: list[Condition] = field(default_factory=list)

    def conditions(self) -> list[Condition]:
        """The alerts of campaigns paused by a rule (as of the last round)."""
        return list(self._conditions)

    async def check(self) -> list[Campaign]:
        """One round; returns the campaigns it paused."""
        judging = self.leading()
        now = self.clock()
        campaigns, fired = await self.service.db.offload(_round, now, judging)
        done = []
        if judging:
            self.stats.rounds += 1
            for c, v in fired:
                paused = await self._pause(c, v, now)
                if paused is not None:
                    done.append(paused)
        latest = {c.id: c for c in campaigns} | {c.id: c for c in done}
        self._conditions = [_condition(c) for c in latest.values()
                            if c.status == "paused" and c.paused_by is not None]
        return done

    async def _pause(self, c: Campaign, v: Verdict, now: float) -> Campaign | None:
        reason = f"auto-paused by rule {v.rule.kind}: {v.reason}"
        try:
            after = await self.service.pause_campaign(
                c.id, paused_by=PausedBy(v.rule, now, v.numbers, reason))
        except Exception:
            self.stats.failures += 1
            log.exception("auto-pause: pause not published", campaign=c.id, rule=v.rule.kind)
            after = self.service.get_campaign(c.id)  # stored paused even if a delta failed
            if after.status != "paused":
                return None
        self.audit.record(ACTOR, ACTION, f"campaign:{c.id}", before=c, after=after)
        self.stats.paused[v.rule.kind] = self.stats.paused.get(v.rule.kind, 0) + 1
        log.warning("campaign auto-paused", campaign=c.id, rule=v.rule.kind, reason=v.reason)
        return after

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a database hiccup must not end HQ: next round
                self.stats.failures += 1
                log.exception("auto-pause round failed")
            await asyncio.sleep(self.every_s)


def _condition(c: Campaign) -> Condition:
    assert c.paused_by is not None
    return Condition(f"campaign:{c.id}", "campaign_auto_paused", "warning",
                     f"campaign {c.id} ({c.name}) was {c.paused_by.reason}; fix it and resume it "
                     "in the console (or change the rule)")
