"""Cap charges shared between the gateways of one store, over the events they already send.

Each gateway publishes its ``decision`` events to ``px/v1/stores/{store}/gateways/{gw}/events``
for HQ. The store's other gateways subscribe to ``.../gateways/+/events`` as well and
apply every ``offer`` or ``holdout`` decision of a peer to their own cap ledger (once per
event id), so a shopper walking from one gateway's area to another's keeps one set of
caps. The lag is one event batch interval (``EVENT_BATCH_INTERVAL_S``) plus the broker.
"""

from __future__ import annotations

import msgspec

from aislecast.kernel.schema import EventBatch, decode
from gateway.decisions._engine import DecisionEngine

__all__ = ["apply_peer_batch"]


def apply_peer_batch(engine: DecisionEngine, payload: bytes, own_gateway: str) -> int:
    """Charge caps for a peer's offers and holdouts; returns charges applied (-1: bad)."""
    try:
        batch = decode(payload, EventBatch)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return -1
    if batch.gateway == own_gateway or batch.store != engine.store:
        return 0
    n = 0
    for e in batch.events:
        if e.kind == "decision" and e.reason in {"offer", "holdout"} and e.inbox and e.campaign:
            n += engine.remote_charge(e.id, e.inbox, e.campaign, ts=e.ts,
                                      offer=e.reason == "offer")
    if n:
        engine.ledger.commit_remote()  # one transaction per batch
    return n
