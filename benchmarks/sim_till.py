"""The simulated week's till: :class:`aislecast.apps.till_sim.TillSim` on HQ's own till
desk (:class:`hq.till.TillDesk`) in process, on the simulated clock.

The HTTP till API (``hq/till_routes.py``) is a thin layer over the same desk: it decodes
the body into :class:`~hq.till.RedeemRequest` or :class:`~hq.till.PurchaseFeed`, calls
the desk and stores a redemption's ``offer_redeemed`` event through ingest. This adapter
does the same without a server, so a week of checkouts takes seconds, and stamps each
redemption and basket with the simulated time instead of HQ's clock. A refusal raises
:class:`~aislecast.apps.till_client.TillRefusal`, as the HTTP client does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from aislecast.apps.till_client import TillRefusal
from hq.ingest import Ingest
from hq.till import PurchaseFeed, TillDesk, TillRefused

__all__ = ["DeskTill"]


class DeskTill:
    """One store's till (``till``: the name a till token's actor would carry)."""

    def __init__(self, desk: TillDesk, ingest: Ingest, *, store: str, till: str,
                 clock: Callable[[], float]) -> None:
        self.desk, self.ingest = desk, ingest
        self.store, self.till, self.clock = store, till, clock

    def redeem(self, code: str, txn: str) -> dict[str, Any]:
        try:
            done, event = self.desk.redeem(code, store=self.store, till=self.till, txn=txn,
                                           now=self.clock())
        except TillRefused as exc:
            raise TillRefusal(exc.status, exc.reason, exc.detail) from None
        self.ingest.store_events([event])
        return msgspec.to_builtins(done)  # type: ignore[no-any-return]

    def purchase(self, txn: str, lines: list[dict[str, Any]], *,
                 member: str | None = None) -> dict[str, object]:
        feed = msgspec.convert({"txn": txn, "lines": lines, "member": member,
                                "ts": self.clock()}, PurchaseFeed)
        return self.desk.purchases(feed, store=self.store, till=self.till)
