"""Alerts: what a person must act on, raised at HQ from the gateways' state reports and
from HQ's own components' failure counters.

An :class:`AlertWatch` judges, every ``every_s`` (and whenever ``GET /api/alerts`` is
asked), the conditions that are true now:

- per gateway, from :class:`hq.board.GatewayBoard`: its retained state says
  ``offline`` (``gateway_offline``, critical), or no state report arrived for
  ``stale_after_s`` (``gateway_stale``, critical), or the gateway's own health judgement
  (:func:`gateway.health.live_judgement`, carried in :class:`GatewayState` as
  ``problem`` and ``warning``) names a problem (``gateway_problem``, critical) or a
  warning (``gateway_warning``, warning);
- per campaign paused by one of its auto-pause rules (:mod:`hq.autopause`, passed in as
  one of ``sources``): ``campaign_auto_paused`` (warning) until a person resumes it;
- per HQ worker, from :class:`CounterRule`: a failure counter rose (broker files not
  synced, keyring reload failed, a bundle not republished, leadership lost). It clears
  once the matching success counter rises after the failure, or after ``quiet_s``
  without a new failure.

The :class:`AlertBook` opens an alert once per (source, kind), logs the opening once
(error for critical, warning otherwise) and counts it, updates ``last_seen`` while the
condition holds, and clears it when the condition goes away; cleared alerts are kept
for ``keep_cleared_s``. Metrics: ``aislecast_hq_alerts_opened_total{kind}``,
``aislecast_hq_alerts_cleared_total{kind}`` and ``aislecast_hq_alerts_open{severity}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgspec
from fastapi import APIRouter, Request, Response

from aislecast.kernel.counters import by, gauges_by
from aislecast.kernel.logs import get_logger
from hq.board import GatewayBoard
from hq.broker_sync import SyncStats
from hq.deps import PrincipalDep, json_answer, state_of
from hq.leader import LeaderStats
from hq.openapi import json_response
from hq.tasks import KeyWatcherStats, RepublisherStats

__all__ = ["ALERTS_EVERY_S", "Alert", "AlertBook", "AlertStats", "AlertWatch", "Condition",
           "CounterRule", "Severity", "alerts_router", "component_rules"]

log = get_logger(__name__)

Severity = Literal["warning", "critical"]
ALERTS_EVERY_S: Final = 5.0
KEEP_CLEARED_S: Final = 3600.0
# a gateway reports every health_every_s (10 s by default): three missed reports
STALE_AFTER_S: Final = 30.0
QUIET_S: Final = 300.0  # an HQ failure counter that stopped rising this long is healed


class Alert(msgspec.Struct, kw_only=True):
    id: str  # "{source}/{kind}", stable while it is open and after it clears
    severity: Severity
    source: str  # "gateway:{store}/{gateway}" or "hq:{worker}"
    kind: str
    message: str  # what is wrong and the fix
    first_seen: float
    last_seen: float
    cleared_at: float | None = None
    store: str | None = None  # the store it belongs to (store staff see their stores')


class AlertsPage(msgspec.Struct, kw_only=True):
    now: float
    alerts: list[Alert]


@dataclass(frozen=True, slots=True)
class Condition:
    """Something wrong now, as a rule sees it."""

    source: str
    kind: str
    severity: Severity
    message: str
    store: str | None = None


@dataclass(slots=True)
class AlertStats:
    opened: dict[str, int] = by("kind", "alerts opened, by kind")
    cleared: dict[str, int] = by("kind", "alerts cleared (their condition went away), by kind")
    open: dict[str, int] = gauges_by("severity", "alerts open now, by severity")


class AlertBook:
    """Open, update and clear alerts from the set of conditions true at each check."""

    def __init__(self, *, keep_cleared_s: float = KEEP_CLEARED_S) -> None:
        self.keep_cleared_s = keep_cleared_s
        self.stats = AlertStats(open={"warning": 0, "critical": 0})
        self._alerts: dict[str, Alert] = {}

    def update(self, conditions: Iterable[Condition], now: float) -> None:
        seen: set[str] = set()
        for c in conditions:
            aid = f"{c.source}/{c.kind}"
            seen.add(aid)
            a = self._alerts.get(aid)
            if a is None or a.cleared_at is not None:
                self._alerts[aid] = Alert(id=aid, severity=c.severity, source=c.source, kind=c.kind,
                                          message=c.message, first_seen=now, last_seen=now,
                                          store=c.store)
                self.stats.opened[c.kind] = self.stats.opened.get(c.kind, 0) + 1
                emit = log.error if c.severity == "critical" else log.warning
                emit("alert opened", alert=aid, severity=c.severity, message=c.message)
            else:
                a.last_seen, a.message, a.severity = now, c.message, c.severity
        for aid, a in list(self._alerts.items()):
            if a.cleared_at is None and aid not in seen:
                a.cleared_at = now
                self.stats.cleared[a.kind] = self.stats.cleared.get(a.kind, 0) + 1
                log.info("alert cleared", alert=aid, open_s=round(now - a.first_seen, 1))
            elif a.cleared_at is not None and now - a.cleared_at > self.keep_cleared_s:
                del self._alerts[aid]
        for sev in ("warning", "critical"):
            self.stats.open[sev] = sum(1 for a in self._alerts.values()
                                       if a.cleared_at is None and a.severity == sev)

    def alerts(self) -> list[Alert]:
        """Open alerts first (critical before warning), then cleared ones; newest first."""
        return sorted(self._alerts.values(),
                      key=lambda a: (a.cleared_at is not None, a.severity != "critical",
                                     -(a.cleared_at or a.first_seen)))


@dataclass(slots=True)
class CounterRule:
    """An HQ failure counter: open while it rises, healed by ``successes`` rising after
    the last failure or by ``quiet_s`` without one."""

    kind: str
    severity: Severity
    message: str
    failures: Callable[[], int]
    successes: Callable[[], int] = lambda: 0
    _last: int = 0  # counters start at 0 with the worker: failures before a check count
    _failed_at: float | None = None
    _successes_then: int = 0

    def failing(self, now: float, quiet_s: float) -> bool:
        n = self.failures()
        if n > self._last:
            self._last, self._failed_at, self._successes_then = n, now, self.successes()
        if self._failed_at is None:
            return False
        if self.successes() > self._successes_then or now - self._failed_at > quiet_s:
            self._failed_at = None
        return self._failed_at is not None


def component_rules(*, keys: KeyWatcherStats, republisher: RepublisherStats, leader: LeaderStats,
                    broker_sync: SyncStats | None = None) -> list[CounterRule]:
    """The rules over one HQ worker's components."""
    rules = [
        CounterRule("keyring_reload_failing", "critical",
                    "HQ could not read the keyring after a change and signs with the old keys: "
                    "check the key file's permissions and `aislecast hq keys list`",
                    lambda: keys.failures, lambda: keys.changes),
        CounterRule("bundle_republish_failing", "critical",
                    "HQ could not publish store bundles: gateways keep their last one until its "
                    "tokens run out; check HQ's broker link (mqtt metrics, the broker's log)",
                    lambda: republisher.failures),
        CounterRule("leadership_lost", "warning",
                    "this HQ worker lost the leader lock (its database connection broke) and "
                    "follows; if it repeats, check PostgreSQL and the network to it",
                    lambda: leader.lost, lambda: leader.elected)]
    if broker_sync is not None:
        rules.append(CounterRule(
            "broker_sync_failing", "critical",
            "HQ could not write the broker's password/ACL files or reload the broker (pid file "
            "missing or stale): new and revoked logins wait; check [broker] auth_dir and that "
            "mosquitto runs with its pid_file",
            lambda: broker_sync.reload_failures + broker_sync.render_failures,
            lambda: broker_sync.reloads))
    return rules


def _gateway_conditions(board: GatewayBoard, now: float, stale_after_s: float) -> Iterator[Condition]:
    for v in board.views():
        src, name = f"gateway:{v.store}/{v.gateway}", f"gateway {v.store}/{v.gateway}"
        if v.status == "offline":
            yield Condition(src, "gateway_offline", "critical",
                            f"{name} is offline (it stopped or lost the broker): check its host "
                            "(`systemctl status aislecast-gateway`, `aislecast gateway health`)",
                            v.store)
        elif v.state_at is not None and now - v.state_at > stale_after_s:
            yield Condition(src, "gateway_stale", "critical",
                            f"{name} sent no state report for {now - v.state_at:.0f} s: it is "
                            "stuck or cut off from the broker (check `aislecast gateway health` "
                            "on its host)", v.store)
        else:
            if v.problem:
                yield Condition(src, "gateway_problem", "critical", f"{name}: {v.problem}", v.store)
            if v.warning:
                yield Condition(src, "gateway_warning", "warning", f"{name}: {v.warning}", v.store)


class AlertWatch:
    """The checks behind ``GET /api/alerts``: :meth:`check` now, :meth:`run` periodically."""

    def __init__(self, board: GatewayBoard, rules: Sequence[CounterRule] = (), *, source: str = "hq",
                 stale_after_s: float = STALE_AFTER_S, quiet_s: float = QUIET_S,
                 every_s: float = ALERTS_EVERY_S, clock: Callable[[], float] = time.time,
                 book: AlertBook | None = None,
                 sources: Sequence[Callable[[], Iterable[Condition]]] = ()) -> None:
        self.board, self.rules, self.source = board, list(rules), source
        self.sources = list(sources)  # more conditions, e.g. hq.autopause's paused campaigns
        self.stale_after_s, self.quiet_s, self.every_s = stale_after_s, quiet_s, every_s
        self.clock = clock
        self.book = book or AlertBook()

    @property
    def stats(self) -> AlertStats:
        return self.book.stats

    def check(self) -> list[Alert]:
        now = self.clock()
        conditions = list(_gateway_conditions(self.board, now, self.stale_after_s))
        conditions += [Condition(self.source, r.kind, r.severity, r.message)
                       for r in self.rules if r.failing(now, self.quiet_s)]
        conditions += [c for source in self.sources for c in source()]
        self.book.update(conditions, now)
        return self.book.alerts()

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self.every_s)


def alerts_router() -> APIRouter:
    """``GET /api/alerts`` from ``app.state.alerts``: store staff see their stores' only."""
    router = APIRouter()

    @router.get("/api/alerts", openapi_extra=json_response(
        AlertsPage, "open alerts, then recently cleared ones"))
    async def alerts(request: Request, p: PrincipalDep) -> Response:
        watch = state_of(request, "alerts", AlertWatch)
        shown = [a for a in watch.check() if p.sees(a.store)]  # HQ's own: unscoped roles
        return json_answer(AlertsPage(now=watch.clock(), alerts=shown))

    return router
