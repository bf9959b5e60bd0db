"""The compact identity tables answer exactly what a ``dict[str, str]`` per epoch did.

A reference resolver written the old way (one dict per epoch, epochs tried in the order
clock, one before, one after) is the oracle; random tables, skewed clocks, unknown and
malformed tokens, tokens shared between epochs and opt-outs are run through both.
"""

from __future__ import annotations

import logging
import random

import pytest

from aislecast.kernel.schema import TokenTable
from gateway.identity import IdentityResolver

K = 9
EPOCH = 3_400_000  # unix time >> 9 in 2023
NOW = float(EPOCH << K) + 100.0


class DictResolver:
    def __init__(self, tables: list[TokenTable], opt_outs: list[str]) -> None:
        self.tables = {t.epoch: t.tokens for t in tables}
        self.opted_out = set(opt_outs)

    def resolve(self, token: str, unix_now: float) -> str | None:
        epoch = int(unix_now) >> K
        for e in (epoch, epoch - 1, epoch + 1):
            inbox = self.tables.get(e, {}).get(token)
            if inbox is not None:
                return None if inbox in self.opted_out else inbox
        return None


def _tables(rng: random.Random, shoppers: int, epochs: range) -> list[TokenTable]:
    inboxes = [f"{rng.getrandbits(64):016x}" for _ in range(shoppers)]
    return [TokenTable(e, {f"{rng.getrandbits(64):016x}": i for i in inboxes}) for e in epochs]


def test_same_answers_as_a_dict_per_epoch() -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    tables = _tables(rng, 300, range(EPOCH - 1, EPOCH + 7))
    opted = [next(iter(tables[1].tokens.values())), next(iter(tables[4].tokens.values()))]
    compact = IdentityResolver()
    compact.load(K, tables, opted)
    oracle = DictResolver(tables, opted)
    known = [tok for t in tables for tok in t.tokens]
    queries = (known + [f"{rng.getrandbits(64):016x}" for _ in range(500)]
               + [t.upper() for t in known[:50]] + [t[:15] for t in known[:50]]
               + ["", "not a token at all", "0x" + known[0][2:], " " + known[0][1:]])
    resolved = 0
    for offset in (-2, -1, 0, 1, 2, 5, 7, 9):  # clocks around and beyond the tables
        now = NOW + offset * (1 << K)
        for q in queries:
            want = oracle.resolve(q, now)
            assert compact.resolve(q, now) == want, (q, offset)
            resolved += want is not None
    assert resolved > 1000  # the comparison covered hits, not only misses
    assert compact.epochs == list(range(EPOCH - 1, EPOCH + 7))


def test_a_token_in_several_epochs_resolves_by_the_clock_first() -> None:
    tok = "00112233aabbccdd"
    tables = [TokenTable(EPOCH - 1, {tok: "before"}), TokenTable(EPOCH, {tok: "now"}),
              TokenTable(EPOCH + 1, {tok: "after"})]
    r = IdentityResolver()
    r.load(K, tables, [])
    assert r.resolve(tok, NOW) == "now"
    r.load(K, [tables[2], tables[0]], [])
    assert r.resolve(tok, NOW) == "before"
    r.load(K, [tables[2]], [])
    assert r.resolve(tok, NOW) == "after"
    r.opt_out(["after"])
    assert r.resolve(tok, NOW) is None


def test_opt_out_and_reload() -> None:
    rng = random.Random(7)
    tables = _tables(rng, 50, range(EPOCH - 1, EPOCH + 2))
    tok, inbox = next(iter(tables[1].tokens.items()))
    r = IdentityResolver()
    r.load(K, tables, [])
    assert r.resolve(tok, NOW) == inbox
    r.opt_out([inbox])
    assert r.resolve(tok, NOW) is None
    other_tok, other = list(tables[1].tokens.items())[1]
    assert r.resolve(other_tok, NOW) == other  # only that shopper
    fresh = _tables(rng, 50, range(EPOCH - 1, EPOCH + 2))
    r.load(K, fresh, [])
    assert r.resolve(other_tok, NOW) is None  # the old tables are gone
    new_tok, new_inbox = next(iter(fresh[1].tokens.items()))
    assert r.resolve(new_tok, NOW) == new_inbox


def test_keys_that_are_not_tokens_are_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    good = "aabbccddeeff0011"
    r = IdentityResolver()
    with caplog.at_level(logging.WARNING, logger="aislecast.gateway.identity"):
        r.load(K, [TokenTable(EPOCH, {good: "ok", "short": "x", "é" * 16: "y"})], [])
    assert r.resolve(good, NOW) == "ok"
    assert r.resolve("short", NOW) is None
    assert r.resolve("é" * 16, NOW) is None
    assert "2 keys are not 16-character tokens" in caplog.text


def test_empty_resolver_resolves_nothing() -> None:
    r = IdentityResolver()
    assert r.resolve("aabbccddeeff0011", NOW) is None
    assert r.epochs == []
