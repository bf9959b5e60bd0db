"""Cap charges shared between the gateways of one store, over the events they already send.

Each gateway publishes its ``decision`` events to ``px/v1/stores/{store}/gateways/{gw}/events``
for HQ. The store's other gateways subscribe to ``.../gateways/+/events`` as well and
apply every ``offer`` or ``holdout`` decision of a peer to their own cap ledger (once per
event id), so a shopper walking from one gateway's area to another's keeps one set of
caps. The lag is one event batch interval (``EVENT_BATCH_INTERVAL_S``) plus the broker.

A batch must come from the gateway its topic names: the broker's ACL pins the writer's
topic, and a payload naming another gateway or store is refused
(:class:`PeerBatchRefused`), as is one the caller found to be from a gateway id the
bundle does not list (gateway/inbound.py).
"""

from __future__ import annotations

import msgspec

from aislecast.kernel.schema import EventBatch, decode
from gateway.decisions._engine import DecisionEngine

__all__ = ["PeerBatchRefused", "apply_peer_batch"]


class PeerBatchRefused(Exception):
    """A peer's batch charged nothing: ``reason`` is the gateway's bad-payload counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def apply_peer_batch(engine: DecisionEngine, payload: bytes, own_gateway: str, *,
                     sender: str | None = None) -> int:
    """Charge caps for a peer's offers and holdouts; returns charges applied. ``sender``
    is the topic's gateway: the batch must name it and this store, or
    :class:`PeerBatchRefused` (``peer_sender``); undecodable: ``peer_events``."""
    try:
        batch = decode(payload, EventBatch)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise PeerBatchRefused("peer_events", str(exc)) from None
    if sender is not None and (batch.gateway != sender or batch.store != engine.store):
        raise PeerBatchRefused("peer_sender", f"batch of {batch.store}/{batch.gateway} on "
                                              f"{engine.store}/{sender}'s topic")
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
