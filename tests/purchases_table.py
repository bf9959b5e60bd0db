"""The ``purchases`` table for lift tests, until m0005 lands.

Another branch adds it to HQ as migration m0005 with exactly this DDL; until that is
merged the tests create it here (the lead switches these tests to the migration at
merge and deletes this helper). :func:`add_purchase` writes one till line.
"""

from __future__ import annotations

import uuid

from hq.db import HqDb

__all__ = ["PURCHASES_DDL", "add_purchase", "create_purchases_table"]

PURCHASES_DDL = (
    "CREATE TABLE purchases (id TEXT PRIMARY KEY, store TEXT NOT NULL, inbox TEXT, member TEXT,"
    " ts DOUBLE PRECISION NOT NULL, till TEXT NOT NULL, txn TEXT NOT NULL, product TEXT,"
    " category TEXT, quantity INTEGER NOT NULL, value_cents INTEGER NOT NULL)",
    "CREATE INDEX purchases_inbox ON purchases (inbox, ts)",
    "CREATE INDEX purchases_store ON purchases (store, ts)",
)


def create_purchases_table(db: HqDb) -> None:
    """Until m0005 lands: the table exactly as that migration makes it."""
    for stmt in PURCHASES_DDL:
        db.execute(stmt)


def add_purchase(db: HqDb, *, store: str, inbox: str | None, ts: float, value_cents: int,
                 product: str = "sku-1") -> None:
    db.execute("INSERT INTO purchases (id, store, inbox, member, ts, till, txn, product, category,"
               " quantity, value_cents) VALUES (?, ?, ?, NULL, ?, 'till-1', ?, ?, NULL, 1, ?)",
               (uuid.uuid4().hex, store, inbox, ts, uuid.uuid4().hex, product, value_cents))
