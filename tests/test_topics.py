"""The topic contract table: builders and the parser agree, and the generated ACL allows
exactly what the table grants (checked with Mosquitto's matching rules, not the generator's)."""

from __future__ import annotations

import itertools

import pytest

from aislecast.kernel import topics
from aislecast.kernel.acl import GatewayAccount, acl_rules, gateway_username, hq_username
from aislecast.kernel.broker import AclRule
from aislecast.kernel.topics import CONTRACT, Kind, TopicMatch

_VALUES = {"store": "s1", "gateway": "g1", "inbox": "inboxa"}


@pytest.mark.parametrize("spec", CONTRACT, ids=lambda s: s.kind.value)
def test_every_topic_parses_back_to_its_kind_and_fields(spec: topics.TopicSpec) -> None:
    fields = {f: _VALUES[f] for f in spec.fields}
    topic = topics.build(spec.kind, **fields)
    assert topic.startswith("px/v1/") and "+" not in topic
    assert topics.parse(topic) == TopicMatch(spec.kind, **fields)


def test_the_named_builders_are_the_table() -> None:
    assert topics.bundle("s1") == "px/v1/stores/s1/bundle"
    assert topics.gateway_acks("s1", "g1") == "px/v1/stores/s1/gateways/g1/events/ack"
    assert topics.gateway_presence("s1", "g1") == "px/v1/stores/s1/gateways/g1/presence"
    assert topics.sightings("s1") == "px/v1/stores/s1/sightings/+"
    assert topics.feedback_ack("i") == "px/v1/shoppers/i/feedback/ack"
    assert topics.HQ_EVENTS_SHARED == "$share/hq/px/v1/stores/+/gateways/+/events"
    assert topics.subscription(Kind.SIGHTINGS, store="s1") == ("px/v1/stores/s1/sightings/+", 0)


@pytest.mark.parametrize("topic", [
    "px/v1/stores/s1/bundle/extra", "px/v2/stores/s1/bundle", "px/v1/stores//bundle",
    "px/v1/stores/+/bundle", "px/v1/stores/s1/gateways/g1", "px/v1/shoppers/i", "", "px",
    "px/v1/stores/s1/gateways/g1/events/nack", "$share/hq/px/v1/stores/s1/bundle",
])
def test_anything_else_is_not_a_contract_topic(topic: str) -> None:
    assert topics.parse(topic) is None


def _matches(pattern: str, topic: str) -> bool:
    """Mosquitto's topic filter matching (``+`` one level, ``#`` the rest)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(p) == len(t)


def _allowed(rules: list[AclRule], user: str, topic: str, mode: str) -> bool:
    for r in rules:
        if r.user is not None and r.user != user:
            continue
        if mode in r.access and _matches(r.topic.replace("%u", user), topic):
            return True
    return False


def _granted(role: str, me: dict[str, str], spec: topics.TopicSpec, fields: dict[str, str],
             mode: str) -> bool:
    grants = spec.publishers if mode == "write" else spec.readers
    return any(g.role == role and all(fields[f] == me.get(f) for f in g.pinned)
               for g in grants)


def test_generated_acl_allows_exactly_what_the_table_grants() -> None:
    rules = acl_rules([GatewayAccount("s1", "g1"), GatewayAccount("s2", "g9")], [hq_username()])
    actors = [("phone", "inboxa", {"inbox": "inboxa"}),
              ("gateway", gateway_username("s1", "g1"), {"store": "s1", "gateway": "g1"}),
              ("hq", hq_username(), {})]
    values = {"store": ["s1", "s2"], "gateway": ["g1", "g2"], "inbox": ["inboxa", "inboxb"]}
    checked = allowed = 0
    for spec in CONTRACT:
        for combo in itertools.product(*(values[f] for f in spec.fields)):
            fields = dict(zip(spec.fields, combo, strict=True))
            topic = topics.build(spec.kind, **fields)
            for (role, user, me), mode in itertools.product(actors, ("read", "write")):
                want = _granted(role, me, spec, fields, mode)
                assert _allowed(rules, user, topic, mode) == want, (role, mode, topic)
                checked += 1
                allowed += want
    assert checked == 228 and 0 < allowed < checked  # both answers were exercised
