"""Tokens the gateway cannot resolve, reported to HQ so a first visit is admitted in seconds.

A store's bundle carries only its own shoppers (home stores, recent visits: HQ's
``hq.scope``). A shopper seen here for the first time has a token no table of this
gateway holds; :class:`FirstVisits` collects such tokens
(:attr:`gateway.identity.IdentityResolver.on_unknown`) and the gateway's ticker sends
them to HQ on ``stores/{store}/gateways/{gateway}/unknown`` (an
:class:`~aislecast.kernel.schema.UnknownTokens`), at most :data:`MAX_UNKNOWN_TOKENS` a
report. HQ looks them up and, for a shopper who consents to offers, sends this store an
admitting delta (``hq.first_visit``). A token is reported once, then again only after
:data:`RETRY_S` (HQ may have been unreachable, or refused it under load), never once per
advert. Tokens of nobody (other apps' phones, fixed EID beacons) cost one report slot
per :data:`RETRY_S`; both maps are bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from aislecast.kernel import topics
from aislecast.kernel.counters import count, gauge
from aislecast.kernel.schema import MAX_UNKNOWN_TOKENS, SCHEMA_VERSION, UnknownTokens, encode

__all__ = ["MAX_PENDING", "RETRY_S", "FirstVisitStats", "FirstVisits"]

#: A token reported is not reported again for this long.
RETRY_S: Final = 30.0
#: At most this many tokens wait for the next report; more are dropped (counted) and
#: come back within :data:`RETRY_S` if the phone is still there.
MAX_PENDING: Final = 4 * MAX_UNKNOWN_TOKENS
# tokens reported within RETRY_S remembered; past this the map drops the expired ones
_MAX_RECENT: Final = 16_384


@dataclass(slots=True)
class FirstVisitStats:
    unknown_tokens: int = count("tokens that matched no table, collected for HQ")
    reported: int = count("unknown tokens sent to HQ")
    reports: int = count("unknown-token reports sent to HQ")
    dropped: int = count("unknown tokens not collected for lack of room")
    report_failures: int = count("unknown-token reports not sent (the link was down)")
    pending: int = gauge("unknown tokens waiting for the next report")


class FirstVisits:
    """Collects unknown tokens (deduplicated) and makes the reports the ticker sends."""

    def __init__(self, store: str, gateway: str, *, retry_s: float = RETRY_S) -> None:
        self.store = store
        self.gateway = gateway
        self.topic = topics.gateway_unknown(store, gateway)
        self.retry_s = retry_s
        self.stats = FirstVisitStats()
        self._pending: dict[str, None] = {}  # insertion-ordered set
        self._recent: dict[str, float] = {}  # token -> monotonic time it may be reported again

    def __len__(self) -> int:
        return len(self._pending)

    def note(self, token: str, unix_now: float = 0.0) -> None:
        """``IdentityResolver.on_unknown``: ``token`` matched nothing (the per-advert
        path, memoised upstream: cheap and never raising)."""
        if token in self._pending:
            return
        now = time.monotonic()
        if self._recent.get(token, 0.0) > now:
            return
        if len(self._pending) >= MAX_PENDING:
            self.stats.dropped += 1
            return
        self._pending[token] = None
        self.stats.unknown_tokens += 1
        self.stats.pending = len(self._pending)

    def take(self) -> list[str]:
        """The next report's tokens (the oldest :data:`MAX_UNKNOWN_TOKENS`; none: ``[]``),
        each then not collected again for :data:`RETRY_S`."""
        if not self._pending:
            return []
        batch = list(self._pending)[:MAX_UNKNOWN_TOKENS]
        for t in batch:
            del self._pending[t]
        now = time.monotonic()
        recent = self._recent
        if len(recent) + len(batch) > _MAX_RECENT:
            self._recent = recent = {t: at for t, at in recent.items() if at > now}
            if len(recent) + len(batch) > _MAX_RECENT:
                recent.clear()
        for t in batch:
            recent[t] = now + self.retry_s
        self.stats.pending = len(self._pending)
        return batch

    def payload(self, tokens: list[str]) -> bytes:
        return encode(UnknownTokens(v=SCHEMA_VERSION, store=self.store, gateway=self.gateway,
                                    tokens=tokens))

    def sent(self, tokens: list[str]) -> None:
        self.stats.reports += 1
        self.stats.reported += len(tokens)

    def failed(self, tokens: list[str]) -> None:
        """A report was not sent: its tokens may be collected again at once."""
        self.stats.report_failures += 1
        for t in tokens:
            self._recent.pop(t, None)
