"""Broker access control, generated from the topic contract, never hand-written
(docs/architecture.md#broker-access-control).

Usernames carry the role: a phone logs in as its inbox pseudonym, a gateway as
``gw.{store}.{gateway}``, HQ workers as ``hq.{name}``. Phones are covered by ``pattern``
lines with ``%u`` (read only their own inbox, write only their own feedback and sightings
or interactions of a store); gateways and HQ get per-user blocks, so a gateway can write
only its own store's topics and shoppers' inboxes.
"""

from __future__ import annotations

from dataclasses import dataclass

from aislecast.kernel.broker import AclRule
from aislecast.kernel.topics import PREFIX

__all__ = ["GatewayAccount", "acl_rules", "gateway_username", "hq_username"]


@dataclass(frozen=True, slots=True)
class GatewayAccount:
    store: str
    gateway: str

    @property
    def username(self) -> str:
        return gateway_username(self.store, self.gateway)


def gateway_username(store: str, gateway: str) -> str:
    return f"gw.{store}.{gateway}"


def hq_username(name: str = "1") -> str:
    return f"hq.{name}"


def acl_rules(gateways: list[GatewayAccount], hq_users: list[str]) -> list[AclRule]:
    rules = [
        AclRule("read", f"{PREFIX}/shoppers/%u/offers"),
        AclRule("write", f"{PREFIX}/shoppers/%u/feedback"),
        AclRule("read", f"{PREFIX}/shoppers/%u/feedback/ack"),
        # phones report what they hear in whichever store they are in
        # only under their own inbox: a pattern applies to gateways too, and %u keeps
        # a gateway from writing reports into any store's topics
        AclRule("write", f"{PREFIX}/stores/+/sightings/%u"),
        AclRule("write", f"{PREFIX}/stores/+/interactions/%u"),
    ]
    for g in gateways:
        store = f"{PREFIX}/stores/{g.store}"
        rules += [
            AclRule("read", f"{store}/bundle", g.username),
            AclRule("read", f"{store}/bundle/delta", g.username),
            AclRule("read", f"{store}/sightings/+", g.username),
            AclRule("read", f"{store}/interactions/+", g.username),
            AclRule("readwrite", f"{store}/gateways/{g.gateway}/#", g.username),
            # peers of the same store: caps and presence pooling
            AclRule("read", f"{store}/gateways/+/events", g.username),
            AclRule("read", f"{store}/gateways/+/presence", g.username),
            AclRule("read", f"{store}/gateways/+/state", g.username),
            AclRule("write", f"{PREFIX}/shoppers/+/offers", g.username),
        ]
    for user in hq_users:
        rules += [
            AclRule("readwrite", f"{PREFIX}/stores/#", user),
            AclRule("readwrite", f"{PREFIX}/shoppers/#", user),
        ]
    return rules
