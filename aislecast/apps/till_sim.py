"""The till simulator: simulated shoppers check out at a till that talks to HQ's real
till API (:class:`aislecast.apps.till_client.TillClient`, a till token).

At each checkout a shopper redeems some of the codes their phone holds (``redeem_p``
each) and buys a basket: one staple line (unless ``staples`` is off), plus one line of
each promoted campaign's category (the campaign id stands for it) with probability
``base_rate``, or ``base_rate + uplift`` when the phone holds an offer of that
campaign. Holdout and untargeted shoppers therefore buy too, at the base rate, so HQ
sees conversions of both arms. The wallet's member id rides on every basket; a shopper
without one buys anonymously. A basket with no line is not sent.

The till is anything with ``redeem`` and ``purchase`` (:class:`Till`): HQ's HTTP API
through :class:`~aislecast.apps.till_client.TillClient` in ``aislecast demo``
(:mod:`aislecast.apps.demo`), or an in-process desk on the simulated clock in
``benchmarks/sim_week.py``; a refused code raises
:class:`~aislecast.apps.till_client.TillRefusal` either way.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aislecast.apps.till_client import TillRefusal
from aislecast.kernel.counters import by, count
from aislecast.kernel.errors import AislecastError
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import Offer

__all__ = ["Shopper", "Till", "TillSim", "TillSimOptions", "TillSimStats"]

log = get_logger(__name__)


class Shopper(Protocol):
    """What the till sees of a simulated shopper: a phone's inbox and offers."""

    inbox: str
    offers: dict[str, Offer]


class Till(Protocol):
    """What the simulator calls: :class:`~aislecast.apps.till_client.TillClient`'s two
    methods (blocking; the simulator runs them in a worker thread)."""

    def redeem(self, code: str, txn: str) -> Any: ...

    def purchase(self, txn: str, lines: list[dict[str, Any]], *,
                 member: str | None = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class TillSimOptions:
    base_rate: float = 0.2  # chance a shopper buys a promoted category anyway
    uplift: float = 0.15  # added when the shopper holds an offer of its campaign
    redeem_p: float = 0.6  # chance a held code is redeemed at a checkout
    visit_s: tuple[float, float] = (8.0, 16.0)  # time between one shopper's checkouts
    staple_cents: tuple[int, int] = (150, 2_500)
    staples: bool = True  # every basket also holds a staple line


@dataclass(slots=True)
class TillSimStats:
    checkouts: int = count("simulated checkouts")
    redeemed: int = count("codes redeemed at the simulated till")
    refused: dict[str, int] = by("reason", "codes the till's HQ refused, per reason")
    lines: int = count("basket lines sent")
    errors: int = count("till calls that failed (HQ unreachable)")
    promoted: dict[str, int] = field(default_factory=dict)  # "treated"/"control" lines


class TillSim:
    def __init__(self, client: Till, shoppers: Sequence[Shopper], *,
                 campaigns: Callable[[], list[str]], members: Mapping[str, str],
                 rng: random.Random, options: TillSimOptions | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.shoppers = shoppers
        self.campaigns = campaigns  # the promoted campaigns' ids, asked at each checkout
        self.members = members  # inbox -> member id (from HQ, as the wallet shows it)
        self.rng = rng
        self.options = options or TillSimOptions()
        self.clock = clock
        self.stats = TillSimStats()
        self._redeemed: set[str] = set()
        self._txn = itertools.count(1)

    def basket(self, shopper: Shopper) -> list[dict[str, Any]]:
        o = self.options
        held = {offer.campaign for offer in shopper.offers.values()}
        lines: list[dict[str, Any]] = [{"category": "staples", "quantity": 1, "value_cents":
                                        self.rng.randint(*o.staple_cents)}] if o.staples else []
        for cid in self.campaigns():
            treated = cid in held
            if self.rng.random() < o.base_rate + (o.uplift if treated else 0.0):
                arm = "treated" if treated else "control"
                self.stats.promoted[arm] = self.stats.promoted.get(arm, 0) + 1
                lines.append({"category": cid[:64], "quantity": 1,
                              "value_cents": self.rng.randint(99, 999)})
        return lines

    async def checkout(self, shopper: Shopper) -> None:
        """One visit's end at the till: codes, then the basket, under one transaction id."""
        self.stats.checkouts += 1
        txn = f"sim-{next(self._txn)}"
        now = self.clock()
        for offer in list(shopper.offers.values()):
            code = offer.redeem_code
            if (code is None or code in self._redeemed or offer.expires_at <= now
                    or self.rng.random() >= self.options.redeem_p):
                continue
            try:
                await asyncio.to_thread(self.client.redeem, code, txn)
                self._redeemed.add(code)
                self.stats.redeemed += 1
            except TillRefusal as exc:
                self.stats.refused[exc.reason] = self.stats.refused.get(exc.reason, 0) + 1
        lines = self.basket(shopper)
        if lines:
            await asyncio.to_thread(self.client.purchase, txn, lines,
                                    member=self.members.get(shopper.inbox))
        self.stats.lines += len(lines)

    async def _shopper(self, i: int, shopper: Shopper) -> None:
        # the first checkout comes early, so a short demo has some
        await asyncio.sleep(self.rng.uniform(0.3, 0.6) * self.options.visit_s[0] + i * 0.3)
        while True:
            try:
                await self.checkout(shopper)
            except AislecastError as exc:  # HQ unreachable or a refused basket: counted
                self.stats.errors += 1
                log.warning("simulated checkout failed", error=str(exc)[:200])
            await asyncio.sleep(self.rng.uniform(*self.options.visit_s))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for i, s in enumerate(self.shoppers):
                tg.create_task(self._shopper(i, s), name=f"till-sim-{i}")
