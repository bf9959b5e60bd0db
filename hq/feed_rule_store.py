"""Feed rules kept in HQ's database (table ``feed_rules``), beside those of hq.toml.

``[[feeds.rules]]`` in hq.toml are the chain's rules as deployed; ``PUT
/api/feeds/rules/{name}`` (:mod:`hq.feeds_api`) adds one or replaces one **of the same
name** without a restart, and ``DELETE`` takes a stored one away again (a config rule
it had replaced applies once more). :func:`merged` is the set the
:class:`~hq.feeds.FeedWatcher` applies, read afresh for each feed round and each
webhook call: the config rules in their order, each replaced by the stored rule of its
name if there is one, then the stored rules that replace nothing, by name. The first
matching rule proposes its flash (:func:`hq.feed_rules.first_match`).

:func:`rule_problems` is what a stored rule must pass beyond its schema (names,
lengths and ranges are the schema's, :class:`~hq.feed_rules.FeedRule`): languages HQ
has a sentiment lexicon for, a sentiment range that is not empty, something to look
for, and a flash template that is a valid flash campaign of stores HQ has. Each
problem names its field.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final, Literal

import msgspec

from aislecast.kernel.schema import decode
from hq.campaigns import flash_campaign, validate
from hq.db import HqDb
from hq.feed_rules import FeedRule, proposal
from hq.sentiment import LANGUAGES, language_of
from hq.service import HqService

__all__ = ["FeedRuleStore", "RuleRow", "merged", "rule_problems"]

_MAX_RULES: Final = 500  # stored rules; a rule is read per feed round


class RuleRow(msgspec.Struct, frozen=True):
    """A rule as applied, with where it comes from (``db`` over ``config``: it replaces one)."""

    rule: FeedRule
    source: Literal["config", "db"]
    replaces_config: bool = False
    updated_by: str | None = None
    updated_at: float | None = None


class FeedRuleStore:
    def __init__(self, db: HqDb) -> None:
        self.db = db

    def rows(self) -> list[RuleRow]:
        got = self.db.query("SELECT body, updated_by, updated_at FROM feed_rules ORDER BY name"
                            " LIMIT ?", (_MAX_RULES,))
        return [RuleRow(decode(r[0], FeedRule), "db", updated_by=str(r[1]),
                        updated_at=float(r[2])) for r in got]

    def count(self) -> int:
        row = self.db.one("SELECT count(*) FROM feed_rules")
        return int(row[0]) if row else 0

    def exists(self, name: str) -> bool:
        return self.db.one("SELECT 1 FROM feed_rules WHERE name = ?", (name,)) is not None

    def put(self, rule: FeedRule, actor: str) -> None:
        self.db.execute(
            "INSERT INTO feed_rules (name, body, updated_by, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET body = excluded.body,"
            " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            (rule.name, msgspec.json.encode(rule).decode(), actor, time.time()))

    def delete(self, name: str) -> bool:
        return self.db.execute("DELETE FROM feed_rules WHERE name = ?", (name,)) > 0

    def full(self) -> bool:
        return self.count() >= _MAX_RULES


def merged(config: Sequence[FeedRule], stored: Sequence[RuleRow]) -> list[RuleRow]:
    """The rules applied, in order: config rules (each replaced by the stored rule of
    its name), then stored rules of new names, by name."""
    by_name = {r.rule.name: r for r in stored}
    out = [msgspec.structs.replace(by_name.pop(c.name), replaces_config=True)
           if c.name in by_name else RuleRow(c, "config") for c in config]
    return out + sorted(by_name.values(), key=lambda r: r.rule.name)


def rule_problems(service: HqService, rule: FeedRule) -> list[str]:
    """What keeps ``rule`` from being stored (``[]``: nothing), each naming its field."""
    problems = [f"languages[{i}]: {x[:16]!r} has no sentiment lexicon at HQ; one of "
                f"{', '.join(LANGUAGES)}"
                for i, x in enumerate(rule.languages) if language_of(x, "") not in LANGUAGES]
    if not rule.languages:
        problems.append(f"languages: empty, so it would match nothing; give some of {', '.join(LANGUAGES)}")
    if rule.sentiment_min > rule.sentiment_max:
        problems.append(f"sentiment_min: {rule.sentiment_min} is above sentiment_max "
                        f"{rule.sentiment_max}, so it would match nothing")
    if not rule.keywords and not rule.entities:
        problems.append("keywords: neither keywords nor entities given, so it would match "
                        "nothing; give at least one")
    have = set(service.store_ids())
    bad = [f"flash.stores[{i}]: HQ has no store {s!r}" for i, s in enumerate(rule.flash.stores)
           if s not in have]
    if bad:
        return problems + bad
    as_campaign = flash_campaign(proposal(rule, f"flash-{rule.name[:40]}-check"))
    return problems + [f"flash: {p}" for p in validate(service, as_campaign)]
