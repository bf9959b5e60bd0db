"""First visits: a gateway heard a token it cannot resolve; HQ admits that shopper there.

A store's bundle carries only the shoppers it receives (:mod:`hq.scope`). A gateway
reports the tokens no table of its resolved (:mod:`gateway.first_visit`, topic
``stores/{store}/gateways/{gateway}/unknown``). HQ finds whose they are in
:class:`ChainTokens`, a ``token -> inbox`` table of every shopper of the chain for the
epoch before, of and after now: built per epoch in a worker thread, two epochs in one
AES pass per shopper (the one needed and the next, so one build every other epoch;
``aislecast bench scope``) and cached, the epochs no longer needed dropped; a
shopper enrolled or erased in this worker is added or removed at once, and one
enrolled by another HQ worker is pulled in at the next miss (at most every
:data:`REFRESH_S`). That table never leaves HQ.

For a shopper who consents to offers (not opted out), HQ marks them seen in the store
(so its next bundles carry them) and sends that store alone an admitting delta with the
shopper's tokens: they resolve there within seconds. Lookups are rate-limited per HQ
worker (:data:`RATE_PER_S` tokens a second, bursts of :data:`BURST`); what is refused is
counted, and the gateway reports it again after its retry interval. A token of nobody
(another app's phone, a fixed EID beacon) is counted, never logged one by one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Final

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.counters import by, count, gauge
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import TokenTable, UnknownTokens, decode
from aislecast.kernel.tokens import epoch_of
from hq.db import marks
from hq.purposes import grants
from hq.router import Reply
from hq.scope import mark_seen
from hq.service import HqService

__all__ = ["BURST", "RATE_PER_S", "REFRESH_S", "ChainTokens", "FirstVisitStats", "FirstVisits",
           "TokenBucket"]

log = get_logger(__name__)

RATE_PER_S: Final = 50.0
BURST: Final = 512
#: A miss pulls in the shoppers enrolled since the last pull (by another HQ worker) at
#: most this often.
REFRESH_S: Final = 5.0
_PULL_MARGIN_S: Final = 60.0  # enrolment clocks of other workers may lag this much


class TokenBucket:
    """``rate`` a second, at most ``burst`` at once (monotonic clock)."""

    def __init__(self, rate: float, burst: int, *, now: float | None = None) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._level = float(burst)
        self._at = time.monotonic() if now is None else now

    def take(self, n: int, now: float | None = None) -> int:
        """Up to ``n`` granted now; returns how many."""
        now = time.monotonic() if now is None else now
        self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        got = min(n, int(self._level))
        self._level -= got
        return got


@dataclass(slots=True)
class FirstVisitStats:
    reports: int = count("unknown-token reports from gateways handled")
    tokens: int = count("unknown tokens looked up")
    unknown: int = count("unknown tokens that are nobody's (other phones, fixed beacons)")
    admitted: int = count("shoppers admitted to a store on a first visit (delta sent)")
    not_admitted: dict[str, int] = by("reason", "shoppers found but not admitted, per reason")
    rate_limited: int = count("unknown tokens refused for the rate limit (the gateway retries)")
    bad_payloads: dict[str, int] = by("kind", "unknown-token reports dropped as malformed")
    delta_failures: int = count("first-visit deltas that could not be published")
    table_builds: int = count("chain token tables built (one per epoch)")
    table_build_ms: float = gauge("time the last chain token table took to build, ms")
    table_tokens: int = gauge("tokens in the chain token tables held")


class ChainTokens:
    """``token -> inbox`` of every shopper for the epochs around now (HQ only).
    :meth:`lookup` and :meth:`refresh` block (database, AES): call them off the loop."""

    def __init__(self, service: HqService, stats: FirstVisitStats | None = None) -> None:
        self.service = service
        self.stats = FirstVisitStats() if stats is None else stats
        self._epochs: dict[int, dict[str, str]] = {}
        self._changed: set[str] = set()  # inboxes enrolled or erased since (any thread)
        self._lock = threading.Lock()  # one builder at a time
        self._pulled_at = 0.0  # created_at watermark of the shoppers already in
        self._pull_due = 0.0  # monotonic

    def changed(self, inbox: str) -> None:
        """:attr:`HqService.shopper_listeners`: ``inbox`` enrolled or was erased."""
        self._changed.add(inbox)

    def _build(self, epochs: list[int]) -> None:
        """The tables of ``epochs``, every shopper's tokens of them in one AES pass."""
        t0 = time.perf_counter()
        tokens_of = self.service.tokens_of
        tables: list[dict[str, str]] = [{} for _ in epochs]
        for i, k in self.service.db.query("SELECT inbox, identity_key FROM shoppers"):
            inbox = str(i)
            for table, tok in zip(tables, tokens_of(inbox, str(k), epochs), strict=True):
                table[tok] = inbox
        self._epochs.update(zip(epochs, tables, strict=True))
        self.stats.table_builds += len(epochs)
        self.stats.table_build_ms = round((time.perf_counter() - t0) * 1000 / len(epochs), 3)

    def _add(self, rows: list[tuple[str, str]]) -> None:
        epochs = sorted(self._epochs)
        for inbox, key in rows:
            for e, tok in zip(epochs, self.service.tokens_of(inbox, key, epochs), strict=True):
                self._epochs[e][tok] = inbox

    def refresh(self, now: float) -> None:
        """The tables of the epochs around ``now``, built or dropped, and the shoppers
        changed since applied."""
        k = self.service.rotation_k
        now_epoch = epoch_of(now, k)
        want = {now_epoch + d for d in (-1, 0, 1)}
        with self._lock:
            for e in [e for e in self._epochs if not now_epoch - 1 <= e <= now_epoch + 2]:
                del self._epochs[e]
            if not self._epochs:
                self._pulled_at = time.time()
                self._changed.clear()
            if missing := want - set(self._epochs):
                # and the epoch after, in the same pass: one build every other epoch
                self._build(sorted(missing | {now_epoch + 2}))
            changed, self._changed = self._changed, set()
            if changed:
                self._apply(changed)
            self.stats.table_tokens = sum(len(t) for t in self._epochs.values())

    def _apply(self, inboxes: set[str]) -> None:
        db = self.service.db
        rows = [(str(r[0]), str(r[1])) for r in db.query(
            f"SELECT inbox, identity_key FROM shoppers WHERE inbox IN ({marks(len(inboxes))})",  # noqa: S608
            sorted(inboxes))]
        gone = inboxes - {i for i, _ in rows}
        if gone:
            for table in self._epochs.values():
                for t in [t for t, i in table.items() if i in gone]:
                    del table[t]
        self._add(rows)

    def _pull_new(self) -> None:
        """Shoppers another HQ worker enrolled since the last pull."""
        since = self._pulled_at - _PULL_MARGIN_S
        self._pulled_at = time.time()
        rows = self.service.db.query(
            "SELECT inbox, identity_key FROM shoppers WHERE created_at >= ?", (since,))
        self._add([(str(r[0]), str(r[1])) for r in rows])

    def lookup(self, tokens: list[str], now: float) -> dict[str, str]:
        """``token -> inbox`` of the ``tokens`` that are somebody's."""
        self.refresh(now)
        found = self._find(tokens)
        if len(found) < len(tokens) and time.monotonic() >= self._pull_due:
            with self._lock:
                self._pull_due = time.monotonic() + REFRESH_S
                self._pull_new()
                self.stats.table_tokens = sum(len(t) for t in self._epochs.values())
            found = self._find(tokens)
        return found

    def _find(self, tokens: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for table in list(self._epochs.values()):
            for t in tokens:
                if t not in out and (inbox := table.get(t)) is not None:
                    out[t] = inbox
        return out


class FirstVisits:
    """The HQ route for ``stores/+/gateways/+/unknown`` (:meth:`on_unknown`)."""

    def __init__(self, service: HqService, *, rate: float = RATE_PER_S, burst: int = BURST) -> None:
        self.service = service
        self.stats = FirstVisitStats()
        self.table = ChainTokens(service, self.stats)
        self.bucket = TokenBucket(rate, burst)
        service.shopper_listeners.append(self.table.changed)

    def _bad(self, kind: str) -> None:
        self.stats.bad_payloads[kind] = self.stats.bad_payloads.get(kind, 0) + 1

    def _report(self, msg: aiomqtt.Message) -> UnknownTokens | None:
        m = topics.parse(msg.topic.value)
        if m is None or m.kind is not topics.Kind.GATEWAY_UNKNOWN:
            self._bad("topic")
            return None
        payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
        try:
            report = decode(payload, UnknownTokens)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self._bad("payload")
            return None
        if report.store != m.store or report.gateway != m.gateway:
            self._bad("mismatch")
            return None
        return report

    async def on_unknown(self, msg: aiomqtt.Message) -> Reply | None:
        report = self._report(msg)
        if report is not None:
            self.stats.reports += 1
            await self.admit(report.store, report.tokens)
        return None

    async def admit(self, store: str, tokens: list[str], now: float | None = None) -> list[str]:
        """Admit at ``store`` the shoppers whose ``tokens`` these are; returns them."""
        tokens = list(dict.fromkeys(tokens))
        granted = self.bucket.take(len(tokens))
        self.stats.rate_limited += len(tokens) - granted
        tokens = tokens[:granted]
        if not tokens:
            return []
        self.stats.tokens += len(tokens)
        now = time.time() if now is None else now
        found = await asyncio.to_thread(self.table.lookup, tokens, now)
        self.stats.unknown += len(tokens) - len(found)
        if not found:
            return []
        admitted = await asyncio.to_thread(self._admissible, store, sorted(set(found.values())), now)
        if not admitted:
            return []
        by_epoch: dict[int, dict[str, str]] = {}
        for inbox in admitted:
            for t in self.service.shopper_tokens(inbox, now):
                by_epoch.setdefault(t.epoch, {}).update(t.tokens)
        try:
            await self.service.publish_delta(store, opt_ins=admitted, tokens=[
                TokenTable(e, toks) for e, toks in sorted(by_epoch.items())],
                profiles=self.service.shopper_profiles(admitted))
        except Exception:
            self.stats.delta_failures += 1
            log.exception("first-visit delta not published", store=store)
            return []
        self.stats.admitted += len(admitted)
        log.info("first visit admitted", store=store, shoppers=len(admitted))
        return admitted

    def _admissible(self, store: str, inboxes: list[str], now: float) -> list[str]:
        """Those of ``inboxes`` who consent to offers, marked seen in ``store``."""
        db = self.service.db
        if db.one("SELECT 1 FROM stores WHERE id = ?", (store,)) is None:
            self._bad("store")
            return []
        state = {str(r[0]): (int(r[1]), str(r[2])) for r in db.query(
            f"SELECT inbox, opted_out, consents FROM shoppers WHERE inbox IN ({marks(len(inboxes))})",  # noqa: S608
            inboxes)}
        ok: list[str] = []
        for inbox in inboxes:
            why = ("erased" if inbox not in state else "opted_out" if state[inbox][0]
                   else None if grants(state[inbox][1], "offers") else "no_offers_consent")
            if why is None:
                ok.append(inbox)
            else:
                self.stats.not_admitted[why] = self.stats.not_admitted.get(why, 0) + 1
        mark_seen(db, [(i, store, now) for i in ok])
        return ok
