"""Store-scoped identity (docs/architecture.md#store-scoped-identity): bundle size per
store, HQ's chain token table for first visits, and the gateway's lookup.

``scope``: 100,000 shoppers (``AISLECAST_BENCH_SCOPE_SHOPPERS``) across 20 stores, each
shopper with one home store (5,000 a store), a profile each in the model. Rows:

- ``bundle_bytes_per_store``: one store's bundle (JSON, as signed) scoped to its
  shoppers; subject ``chain-wide`` is the same bundle carrying every shopper's token
  tables and profiles, as before;
- ``bytes_per_shopper``: what one shopper adds to a bundle (its tables and profile),
  scoped and chain-wide (the chain-wide figure is paid per chain shopper per store);
- ``chain_table_build``: HQ's ``token -> inbox`` table of one epoch for every shopper
  (:class:`hq.first_visit.ChainTokens`), in the steady state: the temporary keys kept
  per shopper (:class:`aislecast.kernel.tokens.EidMaker`), two epochs made in one AES
  pass every other epoch (the pass's time halved), no token cached by the bundles; subject
  ``eid_for`` derives each EID from the identity key alone, one call an EID, as before;
  ``chain_table_build_cold`` is the first build (four epochs, every key schedule made);
- ``chain_lookup``: one token looked up in the tables of the three epochs;
- ``resolver_lookup``: the gateway's :meth:`gateway.identity.IdentityResolver.resolve`
  of a token of the clock's epoch, on one store's scoped tables (goal < 1 us).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import msgspec

from aislecast.kernel.campaign import Model, Profile
from aislecast.kernel.schema import Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from aislecast.kernel.tokens import eid_for, epoch_of, epoch_start, new_identity_key, new_inbox
from benchmarks._harness import BenchOptions, Measurement, benchmark, env_count
from gateway.identity import IdentityResolver
from hq.db import HqDb
from hq.first_visit import ChainTokens
from hq.service import HqService

__all__ = ["bench_scope"]

_STORES = 20
_NOW = 1_796_000_000.0


def _size(opts: BenchOptions) -> int:
    return env_count("AISLECAST_BENCH_SCOPE_SHOPPERS", 2_000 if opts.quick else 100_000,
                     minimum=_STORES, what="a count",
                     hint=f"set a whole number of at least {_STORES}, or unset it")


def _fill(db: HqDb, n: int, *, stores: int = _STORES,
          names: list[str] | None = None) -> list[tuple[str, str]]:
    """``n`` opted-in shoppers, shopper ``i`` at home in store ``i % stores`` (named
    ``names[i % stores]``, default ``s00``, ``s01``, ...)."""
    ids = names or [f"s{s:02d}" for s in range(stores)]
    rows = [(new_inbox(), new_identity_key().hex(), ids[i % stores]) for i in range(n)]
    db.executemany("INSERT INTO shoppers (inbox, identity_key, consents, created_at, home_stores)"
                   " VALUES (?, ?, 'offers,personalisation', 0, ?)",
                   [(i, k, json.dumps([s])) for i, k, s in rows])
    db.executemany("INSERT INTO shopper_stores (inbox, store, home) VALUES (?, ?, 1)",
                   [(i, s) for i, _, s in rows])
    return [(i, k) for i, k, _ in rows]


def _model(inboxes: list[str]) -> Model:
    return Model(weights=[0.1] * 12, profiles={
        i: Profile(segments=["families"] if n % 3 == 0 else [], tier="gold" if n % 5 == 0 else "",
                   visits=n % 7, lead=round((n % 100) / 100, 4), consents=["offers", "personalisation"])
        for n, i in enumerate(inboxes)})


def _per_us(fn: object, reps: int) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - t) / reps * 1e6


def _run(work: Path, n: int) -> list[Measurement]:
    db = HqDb(f"sqlite:///{work}/hq.sqlite")
    try:
        signer = Signer(load_or_create_signing_key(work / "hq.pem"))
        svc = HqService(db, signer)
        for s in range(_STORES):
            svc.upsert_store(Store(f"s{s:02d}", f"Store {s}"))
        shoppers = _fill(db, n)
        svc.model = _model([i for i, _ in shoppers])
        extra: dict[str, float | int | str] = {"shoppers": n, "stores": _STORES,
                                               "per_store": n // _STORES}
        t = time.perf_counter()
        scoped = svc.build_bundle("s00", now=_NOW)
        extra["scoped_build_s"] = round(time.perf_counter() - t, 3)
        chain = msgspec.structs.replace(scoped, token_tables=svc.token_tables(_NOW),
                                        model=svc.model)
        empty = msgspec.structs.replace(scoped, token_tables=[], model=msgspec.structs.replace(
            svc.model, profiles={}))
        size = {name: len(signer.sign("bundle", b)) for name, b in
                (("scoped", scoped), ("chain", chain), ("empty", empty))}
        mine = len({i for t_ in scoped.token_tables for i in t_.tokens.values()})
        if mine != n // _STORES + (1 if n % _STORES else 0):
            raise RuntimeError(f"store s00's bundle carries {mine} shoppers")
        out = [
            Measurement("scope", "aislecast", "bundle_bytes_per_store", size["scoped"], "bytes",
                        better="lower", extra=extra),
            Measurement("scope", "chain-wide", "bundle_bytes_per_store", size["chain"], "bytes",
                        better="lower", extra=extra),
            Measurement("scope", "aislecast", "bytes_per_shopper",
                        (size["scoped"] - size["empty"]) / mine, "bytes", better="lower"),
            Measurement("scope", "chain-wide", "bytes_per_shopper",
                        (size["chain"] - size["empty"]) / n, "bytes", better="lower"),
        ]
        out += _chain(db, signer, shoppers)
        out.append(_resolver(scoped.rotation_k, scoped.token_tables, shoppers[0]))
        return out
    finally:
        db.close()


def _chain(db: HqDb, signer: Signer, shoppers: list[tuple[str, str]]) -> list[Measurement]:
    svc = HqService(db, signer)  # no key schedule or token cached yet
    table = ChainTokens(svc)
    k = svc.rotation_k
    epoch = epoch_of(_NOW, k)
    t = time.perf_counter()
    table.refresh(_NOW)  # the three epochs around now and the next, every key schedule made
    cold = (time.perf_counter() - t) / 4
    t = time.perf_counter()
    table.refresh(epoch_start(epoch + 2, k))  # two epochs more in one pass: the steady state
    warm_pass = time.perf_counter() - t
    if table.stats.table_builds != 6:
        raise RuntimeError(f"{table.stats.table_builds} chain tables built, not 6")
    t = time.perf_counter()
    before = {eid_for(bytes.fromhex(key), epoch_start(epoch + 5, k), k).hex(): inbox
              for inbox, key in shoppers}
    old = time.perf_counter() - t
    n = len(shoppers)
    tokens = [svc.eid_hex(i, key, epoch + 1) for i, key in shoppers[:256]]
    if table.lookup(tokens, epoch_start(epoch + 1, k)) != dict(zip(tokens, (i for i, _ in shoppers),
                                                                     strict=False)):
        raise RuntimeError("the chain table does not find its own shoppers")
    reps = 200
    lookup = _per_us(lambda: [table._find(tokens) for _ in range(reps)], reps * len(tokens))
    extra: dict[str, float | int | str] = {"shoppers": n, "before_tokens": len(before),
                                           "pass_of_two_epochs_s": round(warm_pass, 3)}
    return [
        Measurement("scope", "aislecast", "chain_table_build", warm_pass / 2, "s", better="lower",
                    extra=extra),
        Measurement("scope", "eid_for", "chain_table_build", old, "s", better="lower", extra=extra),
        Measurement("scope", "aislecast", "chain_table_build_cold", cold, "s", better="lower",
                    extra=extra),
        Measurement("scope", "aislecast", "chain_lookup", lookup, "us", better="lower"),
    ]


def _resolver(k: int, tables: list, shopper: tuple[str, str]) -> Measurement:  # type: ignore[type-arg]
    r = IdentityResolver()
    r.load(k, tables, [])
    inbox, key = shopper
    now = _NOW
    token = eid_for(bytes.fromhex(key), epoch_start(epoch_of(now, k), k), k).hex()
    if r.resolve(token, now) != inbox:
        raise RuntimeError("the resolver does not resolve the store's own shopper")
    reps = 200_000
    resolve = r.resolve
    us = _per_us(lambda: [resolve(token, now) for _ in range(reps)], reps)
    entries = sum(len(t.tokens) for t in tables)
    return Measurement("scope", "aislecast", "resolver_lookup", us, "us", better="lower",
                       extra={"entries": entries})


@benchmark("scope")
async def bench_scope(opts: BenchOptions) -> list[Measurement]:
    n = _size(opts)
    with tempfile.TemporaryDirectory(prefix="aislecast-scope-") as tmp:
        return await asyncio.to_thread(_run, Path(tmp), n)


if __name__ == "__main__":
    from benchmarks._harness import run_benchmarks

    raise SystemExit(asyncio.run(run_benchmarks(["scope"], as_json=False, opts=BenchOptions())))
