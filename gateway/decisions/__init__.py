"""Campaign decisions at the gateway: compiled campaign index, engine and reasons."""

from gateway.decisions._compiled import Compiled, LocalClock, Rejection, in_windows
from gateway.decisions._engine import Decision, DecisionEngine, TriggerEvent, in_holdout
from gateway.decisions._paused import PausedCampaigns
from gateway.decisions._peers import PeerBatchRefused, apply_peer_batch

__all__ = [
    "Compiled",
    "Decision",
    "DecisionEngine",
    "LocalClock",
    "PausedCampaigns",
    "PeerBatchRefused",
    "Rejection",
    "TriggerEvent",
    "apply_peer_batch",
    "in_holdout",
    "in_windows",
]
