"""Broker access control derived from the topic contract's table, never hand-written
(docs/architecture.md#broker-access-control).

Usernames carry the role: a phone logs in as its inbox pseudonym, a gateway as
``gw.{store}.{gateway}``, HQ workers as ``hq.{name}``. Each :class:`~aislecast.kernel.topics.Grant`
of :data:`~aislecast.kernel.topics.CONTRACT` becomes one line: a phone's as a ``pattern``
line with ``%u`` for its inbox (its other fields ``+``), a gateway's and HQ's as lines of
that user with the pinned fields filled in. Read and write of the same filter by the
same user become one ``readwrite`` line. Pattern lines apply to every user, so a gateway
can write reports only under its own username, which no inbox equals.
"""

from __future__ import annotations

from dataclasses import dataclass

from aislecast.kernel.broker import AclRule
from aislecast.kernel.topics import CONTRACT, Grant, TopicSpec, build

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


def _filter(s: TopicSpec, g: Grant, identity: dict[str, str]) -> str:
    fields = {f: identity[f] if f in g.pinned else "+" for f in s.fields}
    return build(s.kind, **fields)


def _lines(role: str, identity: dict[str, str], user: str | None) -> list[AclRule]:
    """One user's (or, for phones, the pattern's) lines, in contract order."""
    access: dict[str, set[str]] = {}
    for s in CONTRACT:
        for mode, grants in (("write", s.publishers), ("read", s.readers)):
            for g in grants:
                if g.role == role:
                    access.setdefault(_filter(s, g, identity), set()).add(mode)
    return [AclRule("readwrite" if len(modes) == 2 else next(iter(modes)), topic, user)
            for topic, modes in access.items()]


def acl_rules(gateways: list[GatewayAccount], hq_users: list[str]) -> list[AclRule]:
    """Pattern lines for phones first (Mosquitto wants them before any ``user``), then
    one block per gateway and per HQ user."""
    rules = _lines("phone", {"inbox": "%u"}, None)
    for gw in gateways:
        rules += _lines("gateway", {"store": gw.store, "gateway": gw.gateway}, gw.username)
    for user in hq_users:
        rules += _lines("hq", {}, user)
    return rules
