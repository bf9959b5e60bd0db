"""Till purchase lines for lift tests: :func:`add_purchase` writes one row into the
``purchases`` table (HQ migration m0006_till) the way the till feed does."""

from __future__ import annotations

import uuid

from hq.db import HqDb

__all__ = ["add_purchase"]


def add_purchase(db: HqDb, *, store: str, inbox: str | None, ts: float, value_cents: int,
                 product: str | None = "sku-1", category: str | None = None) -> None:
    db.execute("INSERT INTO purchases (id, store, inbox, member, ts, till, txn, product, category,"
               " quantity, value_cents) VALUES (?, ?, ?, NULL, ?, 'till-1', ?, ?, ?, 1, ?)",
               (uuid.uuid4().hex, store, inbox, ts, uuid.uuid4().hex, product, category,
                value_cents))
