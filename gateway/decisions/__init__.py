"""Campaign decisions at the gateway: compiled campaign index, engine and reasons."""

from gateway.decisions._compiled import Compiled, LocalClock, Rejection, in_windows
from gateway.decisions._engine import Decision, DecisionEngine, TriggerEvent, in_holdout
from gateway.decisions._peers import apply_peer_batch, peer_events_filter, peer_gateway

__all__ = [
    "Compiled",
    "Decision",
    "DecisionEngine",
    "LocalClock",
    "Rejection",
    "TriggerEvent",
    "apply_peer_batch",
    "in_holdout",
    "in_windows",
    "peer_events_filter",
    "peer_gateway",
]
