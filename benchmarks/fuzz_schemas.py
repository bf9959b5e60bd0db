"""Hypothesis strategies for hostile JSON payloads, built from the msgspec schemas.

:func:`payloads` walks a struct's :func:`msgspec.inspect.type_info` and draws JSON
trees that mostly fit the schema (ids drawn from a vocabulary of real ones, so a
payload gets past the type check into the handler's own rules) and, at any node, now
and then a hostile value instead: wrong types, out-of-range numbers, huge strings and
lists, deep nesting, invalid JSON. :func:`mutated` does the same to real samples: byte
edits of their encoding, or one node of their tree replaced. Every strategy yields
the payload's bytes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import msgspec
from hypothesis import strategies as st

__all__ = [
    "HOSTILE", "hostile", "json_for", "mutate_bytes", "mutate_tree", "mutated", "payloads",
    "vary_payload", "vary_tree",
]

_NESTED = 100_000  # deeper than any decoder's recursion: must be refused, not crash
#: Values that break a schema's assumptions; ``msgspec.Raw`` ones are spliced in as bytes.
HOSTILE: tuple[Any, ...] = (
    None, True, False, 0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64,
    10**40, 1e308, -1e308, 5e-324, -0.0, "", " ", "\x00", "é" * 64, "x" * 100_000,
    "../../etc/passwd", "'; DROP TABLE events; --", "\u202e\ufeff", [], {}, [None],
    {"": None}, list(range(50_000)), {str(i): i for i in range(5_000)}, ["x" * 64] * 5_000,
    msgspec.Raw(b"[" * _NESTED + b"]" * _NESTED), msgspec.Raw(b'{"a":' * 2_000 + b"1" + b"}" * 2_000),
    msgspec.Raw(b"1e999"), msgspec.Raw(b"-1e999"), msgspec.Raw(b"123456789012345678901234567890"),
    msgspec.Raw(b"0.000000000000000000000000000000000000000000000000001e-400"),
)


def hostile() -> st.SearchStrategy[Any]:
    return st.sampled_from(HOSTILE)


def _now_floats() -> st.SearchStrategy[float]:
    now = time.time()
    return st.one_of(st.floats(now - 7200, now + 86_400), st.just(now + 3600.0),
                     st.floats(allow_nan=False, allow_infinity=False))


def _scalar(t: Any, vocab: Sequence[str]) -> st.SearchStrategy[Any] | None:
    mi = msgspec.inspect
    if isinstance(t, mi.StrType):
        top = min(t.max_length or 40, 40)
        return st.one_of(st.sampled_from(vocab), st.text(min_size=min(t.min_length or 0, top),
                                                        max_size=top))
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else -(2**40)
        hi = t.le if t.le is not None else 2**40
        return st.one_of(st.integers(max(lo, -3), min(hi, 100)), st.integers(lo, hi))
    if isinstance(t, mi.FloatType):
        return _now_floats()
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.EnumType):
        return st.sampled_from([m.value for m in t.cls])
    return None


def _any_json(vocab: Sequence[str]) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(vocab),
                       st.floats(allow_nan=False, allow_infinity=False))
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
        max_leaves=8)


def json_for(t: Any, vocab: Sequence[str], depth: int = 0) -> st.SearchStrategy[Any]:
    """A JSON tree mostly of type ``t`` (a msgspec.inspect type), hostile now and then."""
    return st.one_of(_typed(t, vocab, depth), hostile()) if depth else _typed(t, vocab, depth)


def _typed(t: Any, vocab: Sequence[str], depth: int) -> st.SearchStrategy[Any]:
    mi = msgspec.inspect
    scalar = _scalar(t, vocab)
    if scalar is not None:
        return scalar
    if depth > 6:
        return st.none()
    if isinstance(t, mi.UnionType):
        return st.one_of(*(_typed(x, vocab, depth) for x in t.types))
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return st.lists(json_for(t.item_type, vocab, depth + 1), max_size=4)
    if isinstance(t, mi.DictType):
        return st.dictionaries(st.one_of(st.sampled_from(vocab), st.text(max_size=8)),
                               json_for(t.value_type, vocab, depth + 1), max_size=3)
    if isinstance(t, mi.StructType):
        fields = {f.encode_name: json_for(f.type, vocab, depth + 1) for f in t.fields}
        if t.array_like:
            return st.tuples(*fields.values()).map(list)
        required = {f.encode_name for f in t.fields if f.required}
        return st.fixed_dictionaries({k: v for k, v in fields.items() if k in required},
                                     optional={k: v for k, v in fields.items() if k not in required})
    return _any_json(vocab)


def payloads(cls: type[msgspec.Struct], vocab: Sequence[str]) -> st.SearchStrategy[bytes]:
    """Encoded JSON payloads drawn from struct ``cls``'s schema (see the module's doc)."""
    return json_for(msgspec.inspect.type_info(cls), vocab).map(msgspec.json.encode)


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """A few byte-level edits: flips, overwrites, cuts, insertions, duplications."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(len(buf)) if buf else 0
        op = rng.randrange(6)
        if op == 0 and buf:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[pos] = rng.choice(b'{}[]",:0-9eE\\\x00\xff')
        elif op == 2:
            del buf[rng.randint(0, len(buf)):]
        elif op == 3:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and buf:
            end = min(len(buf), pos + rng.randint(1, 64))
            buf[pos:pos] = buf[pos:end] * rng.randint(1, 50)
        elif buf:
            del buf[pos:pos + rng.randint(1, 16)]
    return bytes(buf)


def mutate_tree(tree: Any, rng: random.Random, value: Any) -> Any:
    """``tree`` (JSON builtins, not modified) with one random node replaced by ``value``."""
    if not isinstance(tree, dict | list) or not tree or rng.random() < 0.15:
        return value
    if isinstance(tree, dict):
        key = rng.choice(list(tree))
        out_d = dict(tree)
        out_d[key] = mutate_tree(tree[key], rng, value)
        if rng.random() < 0.05:
            del out_d[key]
        return out_d
    i = rng.randrange(len(tree))
    out_l = list(tree)
    out_l[i] = mutate_tree(tree[i], rng, value)
    return out_l


_SMALL: tuple[Any, ...] = (None, 0, 1, -1, "", "x", [], {}, 1.5, True)


def vary_tree(tree: Any, rng: random.Random) -> Any:
    """One node of ``tree`` replaced by a hostile or a small value."""
    return mutate_tree(tree, rng, rng.choice(HOSTILE if rng.random() < 0.3 else _SMALL))


def vary_payload(payload: bytes, rng: random.Random) -> bytes:
    """A variant of ``payload``: byte edits, or one node of its JSON tree replaced."""
    if rng.random() < 0.5 and payload[:1] in (b"{", b"["):
        try:
            tree = msgspec.json.decode(payload)
        except (msgspec.DecodeError, RecursionError):
            return mutate_bytes(payload, rng)
        return msgspec.json.encode(vary_tree(tree, rng))
    return mutate_bytes(payload, rng)


def mutated(samples: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """Real samples edited as bytes, or (JSON ones) with one node of their tree replaced."""
    rngs = st.randoms(use_true_random=True)
    by_bytes = st.builds(mutate_bytes, st.sampled_from(samples), rngs)
    if not samples[0].startswith((b"{", b"[")):
        return by_bytes
    trees = [msgspec.json.decode(s) for s in samples]
    by_node = st.builds(lambda t, r, v: msgspec.json.encode(mutate_tree(t, r, v)),
                        st.sampled_from(trees), rngs, st.one_of(hostile(), _any_json(["x"])))
    return st.one_of(by_bytes, by_node)
