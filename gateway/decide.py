"""Compatibility re-export: the decision engine lives in :mod:`gateway.decisions`."""

from gateway.decisions import Decision, DecisionEngine, Rejection, TriggerEvent, in_holdout

__all__ = ["Decision", "DecisionEngine", "Rejection", "TriggerEvent", "in_holdout"]
