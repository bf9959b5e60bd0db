"""The MQTT topic contract (prefix ``px/v1``; docs/architecture.md#mqtt-topic-contract), as one table.

:data:`CONTRACT` lists every topic once: its pattern, QoS, whether it is retained, and
which roles publish and read it. Everything else is derived from that table: the
builders (:func:`build` and the named helpers), the one parser (:func:`parse`), the
subscription QoS (:func:`subscription`) and the broker ACL (:mod:`aislecast.kernel.acl`).

A :class:`Grant` says which of a topic's fields are pinned to the role's own identity:
a phone is its inbox, a gateway is its store and gateway id, HQ is nobody in
particular (every field ``+``). A gateway reading ``gateway_events`` pinned to its store
only is what lets it hear its peers' batches; writing it pinned to store and gateway
keeps it from writing a peer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

__all__ = [
    "CONTRACT",
    "HQ_EVENTS_SHARED",
    "HQ_FEEDBACK_SHARED",
    "HQ_UNKNOWN_SHARED",
    "PREFIX",
    "Grant",
    "Kind",
    "Role",
    "TopicMatch",
    "TopicSpec",
    "build",
    "bundle",
    "bundle_delta",
    "feedback",
    "feedback_ack",
    "gateway_acks",
    "gateway_events",
    "gateway_presence",
    "gateway_state",
    "gateway_unknown",
    "interactions",
    "offers",
    "parse",
    "sightings",
    "spec",
    "subscription",
]

PREFIX: Final = "px/v1"

Role = Literal["phone", "gateway", "hq"]
Field = Literal["store", "gateway", "inbox"]
_FIELDS: Final[tuple[Field, ...]] = ("store", "gateway", "inbox")


class Kind(StrEnum):
    BUNDLE = "bundle"
    BUNDLE_DELTA = "bundle_delta"
    GATEWAY_STATE = "gateway_state"
    GATEWAY_EVENTS = "gateway_events"
    GATEWAY_ACKS = "gateway_acks"
    GATEWAY_PRESENCE = "gateway_presence"
    GATEWAY_UNKNOWN = "gateway_unknown"
    SIGHTINGS = "sightings"
    INTERACTIONS = "interactions"
    OFFERS = "offers"
    FEEDBACK = "feedback"
    FEEDBACK_ACK = "feedback_ack"


@dataclass(frozen=True, slots=True)
class Grant:
    """``role`` may use the topic with ``pinned`` fields set to its own identity."""

    role: Role
    pinned: tuple[Field, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicSpec:
    kind: Kind
    pattern: str  # after the prefix; {store}, {gateway}, {inbox} are one level each
    qos: int
    retained: bool
    publishers: tuple[Grant, ...]
    readers: tuple[Grant, ...]
    note: str

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(f"{PREFIX}/{self.pattern}".split("/"))

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(f for f in _FIELDS if "{" + f + "}" in self.pattern)


_HQ: Final = Grant("hq")
_PHONE: Final = Grant("phone", ("inbox",))
_GW_STORE: Final = Grant("gateway", ("store",))
_GW_SELF: Final = Grant("gateway", ("store", "gateway"))
_GW_ANY: Final = Grant("gateway")

CONTRACT: Final[tuple[TopicSpec, ...]] = (
    TopicSpec(Kind.BUNDLE, "stores/{store}/bundle", 1, True, (_HQ,), (_GW_STORE,),
              "signed bundle"),
    TopicSpec(Kind.BUNDLE_DELTA, "stores/{store}/bundle/delta", 1, False, (_HQ,), (_GW_STORE,),
              "signed delta: opt-outs, pauses, flash campaigns"),
    TopicSpec(Kind.GATEWAY_STATE, "stores/{store}/gateways/{gateway}/state", 1, True,
              (_GW_SELF,), (_HQ, _GW_STORE), "online/offline, version, metrics; LWT offline"),
    TopicSpec(Kind.GATEWAY_EVENTS, "stores/{store}/gateways/{gateway}/events", 1, False,
              (_GW_SELF,), (_HQ, _GW_STORE), "event batches; peers charge caps from them"),
    TopicSpec(Kind.GATEWAY_ACKS, "stores/{store}/gateways/{gateway}/events/ack", 1, False,
              (_HQ,), (_GW_SELF,), "HQ stored a batch (end-to-end acknowledgement)"),
    TopicSpec(Kind.GATEWAY_PRESENCE, "stores/{store}/gateways/{gateway}/presence", 0, False,
              (_GW_SELF,), (_GW_STORE,), "sighting summaries so the nearest gateway wins"),
    TopicSpec(Kind.GATEWAY_UNKNOWN, "stores/{store}/gateways/{gateway}/unknown", 1, False,
              (_GW_SELF,), (_HQ,), "tokens the gateway could not resolve: HQ admits first visits"),
    TopicSpec(Kind.SIGHTINGS, "stores/{store}/sightings/{inbox}", 0, False, (_PHONE,),
              (_GW_STORE,), "phone-observed sightings, under the sender's own inbox"),
    TopicSpec(Kind.INTERACTIONS, "stores/{store}/interactions/{inbox}", 1, False, (_PHONE,),
              (_GW_STORE,), "tag taps and QR scans the app read, under the sender's inbox"),
    TopicSpec(Kind.OFFERS, "shoppers/{inbox}/offers", 1, False, (_GW_ANY, _HQ), (_PHONE,),
              "offer; message expiry = validity"),
    TopicSpec(Kind.FEEDBACK, "shoppers/{inbox}/feedback", 1, False, (_PHONE,), (_HQ,),
              "opened/clicked/redeemed/dismissed"),
    TopicSpec(Kind.FEEDBACK_ACK, "shoppers/{inbox}/feedback/ack", 1, False, (_HQ,), (_PHONE,),
              "feedback stored; the phone resends until then"),
)

_BY_KIND: Final = {s.kind: s for s in CONTRACT}
# parse: candidates by level count, literal levels checked in place
_BY_LEN: Final[dict[int, list[tuple[TopicSpec, tuple[str, ...]]]]] = {}
for _s in CONTRACT:
    _BY_LEN.setdefault(len(_s.levels), []).append((_s, _s.levels))


def spec(kind: Kind) -> TopicSpec:
    return _BY_KIND[kind]


def build(kind: Kind, *, store: str = "+", gateway: str = "+", inbox: str = "+") -> str:
    """The topic (or, with a ``+`` left in, the subscription filter) of ``kind``."""
    return f"{PREFIX}/" + _BY_KIND[kind].pattern.format(store=store, gateway=gateway, inbox=inbox)


def subscription(kind: Kind, *, store: str = "+", gateway: str = "+",
                 inbox: str = "+") -> tuple[str, int]:
    """``(filter, qos)`` to subscribe to ``kind`` at the contract's QoS."""
    return build(kind, store=store, gateway=gateway, inbox=inbox), _BY_KIND[kind].qos


@dataclass(frozen=True, slots=True)
class TopicMatch:
    kind: Kind
    store: str | None = None
    gateway: str | None = None
    inbox: str | None = None


def parse(topic: str) -> TopicMatch | None:
    """What a concrete topic of the contract is, with its fields; None for anything else
    (another prefix, an unknown shape, an empty level)."""
    levels = topic.split("/")
    for s, pat in _BY_LEN.get(len(levels), ()):
        got: dict[str, str] = {}
        for want, have in zip(pat, levels, strict=True):
            if want[0] == "{":
                if not have or have in {"+", "#"}:
                    break
                got[want[1:-1]] = have
            elif want != have:
                break
        else:
            return TopicMatch(s.kind, **got)
    return None


HQ_EVENTS_SHARED: Final = "$share/hq/" + build(Kind.GATEWAY_EVENTS)
HQ_FEEDBACK_SHARED: Final = "$share/hq/" + build(Kind.FEEDBACK)
HQ_UNKNOWN_SHARED: Final = "$share/hq/" + build(Kind.GATEWAY_UNKNOWN)


# ---- named builders (the callers' vocabulary) -------------------------------------------
def bundle(store: str) -> str:
    return build(Kind.BUNDLE, store=store)


def bundle_delta(store: str) -> str:
    return build(Kind.BUNDLE_DELTA, store=store)


def gateway_state(store: str, gateway: str) -> str:
    return build(Kind.GATEWAY_STATE, store=store, gateway=gateway)


def gateway_events(store: str, gateway: str) -> str:
    return build(Kind.GATEWAY_EVENTS, store=store, gateway=gateway)


def gateway_acks(store: str, gateway: str) -> str:
    return build(Kind.GATEWAY_ACKS, store=store, gateway=gateway)


def gateway_presence(store: str, gateway: str) -> str:
    return build(Kind.GATEWAY_PRESENCE, store=store, gateway=gateway)


def gateway_unknown(store: str, gateway: str) -> str:
    """Gateway -> HQ: the tokens it heard and could not resolve (gateway.first_visit)."""
    return build(Kind.GATEWAY_UNKNOWN, store=store, gateway=gateway)


def sightings(store: str, inbox: str = "+") -> str:
    """Where a phone reports what it hears: the last level is the sender's own inbox (the
    broker ACL lets a phone write only under its username, so a report cannot be forged
    for another shopper or, by a gateway, into another store); ``+`` to subscribe."""
    return build(Kind.SIGHTINGS, store=store, inbox=inbox)


def interactions(store: str, inbox: str = "+") -> str:
    """Phone -> gateway: shelf-tag taps and QR scans the app reports, under the sender's
    own inbox like :func:`sightings`."""
    return build(Kind.INTERACTIONS, store=store, inbox=inbox)


def offers(inbox: str) -> str:
    return build(Kind.OFFERS, inbox=inbox)


def feedback(inbox: str) -> str:
    return build(Kind.FEEDBACK, inbox=inbox)


def feedback_ack(inbox: str) -> str:
    return build(Kind.FEEDBACK_ACK, inbox=inbox)
