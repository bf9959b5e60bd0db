"""The compact identity tables answer exactly what a ``dict[str, str]`` per epoch did.

A reference resolver written the old way (one dict per epoch, epochs tried in the order
clock, one before, one after) is the oracle; random tables, skewed clocks, unknown and
malformed tokens, near misses of known ones (one character changed, two neighbours'
halves), wrong tokens that land on occupied slots of a tiny table, tokens shared
between epochs and opt-outs are run through both.
"""

from __future__ import annotations

import itertools
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
    near = ([t[:-1] + ("0" if t[-1] != "0" else "1") for t in known[:100]]
            + [("f" if t[0] != "f" else "e") + t[1:] for t in known[:100]]
            + [a[8:] + b[:8] for a, b in itertools.pairwise(known[:101])])  # neighbours' halves
    queries = (known + [f"{rng.getrandbits(64):016x}" for _ in range(500)] + near
               + [t.upper() for t in known[:50]] + [t[:15] for t in known[:50]]
               + [t + "0" for t in known[:50]]
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


def test_wrong_tokens_on_occupied_slots_of_a_tiny_table_do_not_resolve() -> None:
    """Three entries in eight slots: most wrong tokens probe an occupied slot first and
    must be told apart by their text, not their slot."""
    rng = random.Random(11)
    tables = _tables(rng, 1, range(EPOCH - 1, EPOCH + 2))
    r = IdentityResolver()
    r.load(K, tables, [])
    oracle = DictResolver(tables, [])
    known = [tok for t in tables for tok in t.tokens]
    wrong = [f"{rng.getrandbits(64):016x}" for _ in range(1000)]
    # the same first 15, 12 or 8 characters as a known token: a compare of less than
    # the whole token would take them for it
    wrong += [k[:cut] + f"{rng.getrandbits(64):016x}"[cut:] for k in known for cut in (15, 12, 8)
              for _ in range(300)]
    wrong = [w for w in wrong if w not in known]
    assert all(r.resolve(t, NOW) is None for t in wrong)
    inbox = next(iter(tables[0].tokens.values()))
    assert [r.resolve(k, NOW) for k in known] == [oracle.resolve(k, NOW) for k in known] == [inbox] * 3


def test_one_shared_token_leaves_the_others_resolving_as_before() -> None:
    """A token in two epochs' tables switches every lookup to the ranked search."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    tables = _tables(rng, 200, range(EPOCH - 1, EPOCH + 3))
    shared = next(iter(tables[0].tokens))
    tables[2].tokens[shared] = "shared-after"
    tables[1].tokens[shared] = "shared-now"
    compact = IdentityResolver()
    compact.load(K, tables, [])
    oracle = DictResolver(tables, [])
    queries = [tok for t in tables for tok in t.tokens] + [f"{rng.getrandbits(64):016x}" for _ in range(200)]
    for offset in (-1, 0, 1, 2, 3):
        now = NOW + offset * (1 << K)
        assert [compact.resolve(q, now) for q in queries] == [oracle.resolve(q, now) for q in queries]
    assert compact.resolve(shared, NOW) == "shared-now"
    assert compact.resolve(shared, NOW - (1 << K)) == next(iter(tables[0].tokens.values()))


def test_more_epochs_than_the_table_counts_keeps_the_latest(caplog: pytest.LogCaptureFixture) -> None:
    tables = [TokenTable(EPOCH - 299 + i, {f"{i:016x}": f"inbox-{i}"}) for i in range(300)]
    r = IdentityResolver()
    with caplog.at_level(logging.WARNING, logger="aislecast.gateway.identity"):
        r.load(K, tables, [])
    assert "300 epochs, only the last 256 kept" in caplog.text
    assert r.epochs == list(range(EPOCH - 255, EPOCH + 1))
    assert r.resolve(f"{299:016x}", NOW) == "inbox-299"
    assert r.resolve(f"{298:016x}", NOW) == "inbox-298"  # the epoch before
    assert r.resolve(f"{0:016x}", NOW - 299 * (1 << K)) is None  # dropped


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
