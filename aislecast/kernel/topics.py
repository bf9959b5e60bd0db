"""The MQTT topic contract (docs/architecture.md#mqtt-topic-contract), built and parsed in one place."""

from __future__ import annotations

__all__ = [
    "HQ_EVENTS_SHARED",
    "HQ_FEEDBACK_SHARED",
    "PREFIX",
    "bundle",
    "bundle_delta",
    "feedback",
    "feedback_ack",
    "gateway_acks",
    "gateway_events",
    "gateway_state",
    "interactions",
    "offers",
    "parse_inbox",
    "reporter",
    "sightings",
]

PREFIX = "px/v1"
HQ_EVENTS_SHARED = f"$share/hq/{PREFIX}/stores/+/gateways/+/events"
HQ_FEEDBACK_SHARED = f"$share/hq/{PREFIX}/shoppers/+/feedback"


def bundle(store: str) -> str:
    return f"{PREFIX}/stores/{store}/bundle"


def bundle_delta(store: str) -> str:
    return f"{PREFIX}/stores/{store}/bundle/delta"


def gateway_state(store: str, gateway: str) -> str:
    return f"{PREFIX}/stores/{store}/gateways/{gateway}/state"


def gateway_events(store: str, gateway: str) -> str:
    return f"{PREFIX}/stores/{store}/gateways/{gateway}/events"


def gateway_acks(store: str, gateway: str) -> str:
    return f"{PREFIX}/stores/{store}/gateways/{gateway}/events/ack"


def sightings(store: str, inbox: str = "+") -> str:
    """Where a phone reports what it hears: the last level is the sender's own inbox (the
    broker ACL lets a phone write only under its username, so a report cannot be forged
    for another shopper or, by a gateway, into another store); ``+`` to subscribe."""
    return f"{PREFIX}/stores/{store}/sightings/{inbox}"


def interactions(store: str, inbox: str = "+") -> str:
    """Phone -> gateway: shelf-tag taps and QR scans the app reports (docs/architecture.md#sighting-modes),
    under the sender's own inbox like :func:`sightings`."""
    return f"{PREFIX}/stores/{store}/interactions/{inbox}"


def reporter(topic: str, store: str, kind: str) -> str | None:
    """The sender inbox of a ``sightings``/``interactions`` topic of ``store``, else None."""
    parts = topic.split("/")
    if (len(parts) == 6 and parts[0] == "px" and parts[1] == "v1" and parts[2] == "stores"
            and parts[3] == store and parts[4] == kind and parts[5]):
        return parts[5]
    return None


def offers(inbox: str) -> str:
    return f"{PREFIX}/shoppers/{inbox}/offers"


def feedback(inbox: str) -> str:
    return f"{PREFIX}/shoppers/{inbox}/feedback"


def feedback_ack(inbox: str) -> str:
    return f"{PREFIX}/shoppers/{inbox}/feedback/ack"


def parse_inbox(topic: str) -> str | None:
    """The ``{inbox}`` of a shopper topic, or ``None`` when the topic is not one."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "px" and parts[1] == "v1" and parts[2] == "shoppers":
        return parts[3]
    return None
