"""Resident memory of a real ``aislecast gateway run`` holding a store's identity tables.

The process measured is the product's, from outside: ``python -m aislecast gateway run
--config FILE`` with the simulated scanner, against a private Mosquitto. HQ's own code
(:class:`~hq.service.HqService` on a SQLite file) enrolls the shoppers, builds the
store's bundle (``TOKEN_EPOCHS_AHEAD + 2`` token tables, one entry per opted-in shopper
per epoch) and signs it; the bench publishes it retained on the store's bundle topic, as
``hq serve`` does. The positive witness that the gateway holds the tables is its own
retained state report naming the bundle's version; the RSS (VmRSS from /proc) is read
``settle_s`` after that, while the sim scanner keeps the gateway busy.

Rows: RSS with 6 enrolled shoppers (the demo's size) and with 10,000 (issue 9's goal:
<= 45 MiB; issue 11: 10,000 *store* shoppers, enrolled with this store as their home
store, so the scoped bundle (:mod:`hq.scope`) carries every one of them, checked), the
difference (what the tables cost), and the price of the compact tables on the
per-advert path: :meth:`~gateway.identity.IdentityResolver.resolve` for a token of the
current epoch, of the epoch before (a phone's clock behind) and an unknown one,
beside the ``dict[str, str]`` per epoch it replaced, on the same 80,000 entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
import timeit
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt

from aislecast.apps.scenarios import setup_store
from aislecast.kernel import topics
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.const import TOKEN_EPOCHS_AHEAD, TOKEN_ROTATION_K
from aislecast.kernel.procinfo import rss_mib
from aislecast.kernel.schema import Campaign, Creative, TokenTable, Trigger
from aislecast.kernel.signing import Signer, load_or_create_signing_key, public_key_pem
from benchmarks._harness import BenchOptions, Measurement, benchmark, stop_process
from edge.simstore import STORE_UUID, default_zones
from gateway.identity import IdentityResolver
from hq.consent import PURPOSES
from hq.db import HqDb
from hq.service import HqService

__all__ = ["bench_gateway_rss", "measure_gateway_rss"]

STORE = "store-rss"
GATEWAY = "gw-rss"
_GOAL_MIB = 45.0  # issue 9: gateway RSS with 10,000 enrolled shoppers' tables
_APPLIED_WITHIN_S = 60.0  # bundle received, verified and applied (a loaded 2-core machine)


def _signed_bundle(work: Path, shoppers: int) -> tuple[bytes, int, int, str]:
    """HQ's signed bundle for ``shoppers`` enrolled shoppers: (envelope, version, entries, pem)."""
    db = HqDb(f"sqlite:///{work}/hq.sqlite")
    try:
        signer = Signer(load_or_create_signing_key(work / "hq.pem"))
        service = HqService(db, signer, rotation_k=TOKEN_ROTATION_K)
        setup_store(service, STORE, default_zones(), STORE_UUID)
        for z in default_zones():
            service.upsert_campaign(Campaign(
                id=f"rss-{z.id}", name=z.id, stores=[STORE], trigger=Trigger(kind="enter", zones=[z.id]),
                creatives=[Creative(id="a", title=f"{z.id} deal", format="coupon", coupon_code="R1")],
                validity_s=600))
        for _ in range(shoppers):
            service.enroll(list(PURPOSES), [STORE])
        bundle = service.build_bundle(STORE)
        entries = sum(len(t.tokens) for t in bundle.token_tables)
        # scoped bundles (hq.scope): the store's home shoppers, every one of them
        held = {i for t in bundle.token_tables for i in t.tokens.values()}
        if len(held) != shoppers or len(bundle.token_tables) != TOKEN_EPOCHS_AHEAD + 2:
            raise RuntimeError(f"the bundle holds {len(held)} shoppers in "
                               f"{len(bundle.token_tables)} tables, not {shoppers}")
        return signer.sign("bundle", bundle), bundle.version, entries, public_key_pem(signer.public_key)
    finally:
        db.close()


def _write_config(work: Path, port: int, pem: str) -> Path:
    (work / "hq.pub.pem").write_text(pem)
    config = work / "gateway.toml"
    config.write_text(
        f'gateway = "{GATEWAY}"\nstore = "{STORE}"\n'
        f'hq_public_key = "{work / "hq.pub.pem"}"\ndata_dir = "{work / "data"}"\n'
        f"health_every_s = 1.0\n[broker]\nport = {port}\n[scanner]\nbackend = \"sim\"\n")
    return config


@contextlib.asynccontextmanager
async def _gateway_process(work: Path, config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    err = work / "gateway.err"
    with err.open("wb") as e:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aislecast", "gateway", "run", "--config", str(config),
            "--log-level", "warning", stdout=asyncio.subprocess.DEVNULL, stderr=e,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        yield proc
    finally:
        await stop_process(proc, 10)


async def _wait_applied(client: aiomqtt.Client, version: int, proc: asyncio.subprocess.Process,
                        err: Path) -> None:
    """Until the gateway's state report names ``version``: it verified and applied it."""
    async with asyncio.timeout(_APPLIED_WITHIN_S):
        async for msg in client.messages:
            if proc.returncode is not None:
                tail = (await asyncio.to_thread(err.read_text, errors="replace"))[-2000:]
                raise RuntimeError(f"gateway exited with {proc.returncode}:\n{tail}")
            assert isinstance(msg.payload, bytes)
            if json.loads(msg.payload).get("bundle_version") == version:
                return


async def measure_gateway_rss(shoppers: int, settle_s: float) -> tuple[float, int]:
    """RSS (MiB) of ``aislecast gateway run`` ``settle_s`` after applying a bundle of
    ``shoppers`` enrolled shoppers; also the token-table entries it held."""
    with tempfile.TemporaryDirectory(prefix="aislecast-rss-") as tmp:
        work = Path(tmp)
        envelope, version, entries, pem = await asyncio.to_thread(_signed_bundle, work, shoppers)
        port = free_port()
        async with MosquittoProcess(BrokerConfig(directory=work / "broker", port=port)), \
                aiomqtt.Client("127.0.0.1", port, identifier=f"rss-hq-{time.monotonic_ns()}") as hq:
            await hq.publish(topics.bundle(STORE), envelope, qos=1, retain=True)
            await hq.subscribe(topics.gateway_state(STORE, GATEWAY), qos=1)
            async with _gateway_process(work, _write_config(work, port, pem)) as proc:
                await _wait_applied(hq, version, proc, work / "gateway.err")
                await asyncio.sleep(settle_s)
                if proc.returncode is not None:
                    raise RuntimeError(f"gateway exited with {proc.returncode} while settling")
                rss = rss_mib(proc.pid)
        if rss is None:
            raise RuntimeError("cannot read the gateway's RSS from /proc (Linux only)")
        return rss, entries


class _DictTables:
    """The representation the resolver replaced: one ``dict[str, str]`` per epoch."""

    def __init__(self, tables: list[TokenTable]) -> None:
        self._tables = {t.epoch: t.tokens for t in tables}

    def resolve(self, token_hex: str, unix_now: float) -> str | None:
        epoch = int(unix_now) >> TOKEN_ROTATION_K
        for e in (epoch, epoch - 1, epoch + 1):
            table = self._tables.get(e)
            if table is not None and (inbox := table.get(token_hex)) is not None:
                return inbox
        return None


def _ns_per_lookup(resolve: Callable[[str, float], str | None], tokens: list[str], now: float,
                   repeat: int) -> float:
    """Best of ``repeat`` passes over ``tokens`` (the least disturbed by other processes)."""
    best = min(timeit.repeat(lambda: [resolve(t, now) for t in tokens], number=1, repeat=repeat))
    return best / len(tokens) * 1e9


def _lookups(shoppers: int, repeat: int) -> list[Measurement]:
    now = time.time()
    epoch = int(now) >> TOKEN_ROTATION_K
    inboxes = [secrets.token_hex(8) for _ in range(shoppers)]
    tables = [TokenTable(e, {secrets.token_hex(8): i for i in inboxes})
              for e in range(epoch - 1, epoch + TOKEN_EPOCHS_AHEAD + 1)]
    compact = IdentityResolver()
    compact.load(TOKEN_ROTATION_K, tables, [])
    probes = {"current epoch": list(tables[1].tokens)[:2000],
              "epoch before": list(tables[0].tokens)[:2000],
              "unknown token": [secrets.token_hex(8) for _ in range(2000)]}
    entries = sum(len(t.tokens) for t in tables)
    rows = []
    for subject, resolver in (("aislecast", compact), ("dict per epoch (before)", _DictTables(tables))):
        assert all(resolver.resolve(t, now) is not None for t in probes["epoch before"])
        for what, tokens in probes.items():
            rows.append(Measurement("gateway_rss", subject, f"identity resolve, {what}",
                                    _ns_per_lookup(resolver.resolve, tokens, now, repeat), "ns",
                                    "lower", extra={"entries": entries}))
    return rows


@benchmark("gateway_rss")
async def bench_gateway_rss(opts: BenchOptions) -> list[Measurement]:
    settle = 1.0 if opts.quick else 20.0
    large = 500 if opts.quick else 10_000
    small_rss, small_entries = await measure_gateway_rss(6, settle)
    large_rss, large_entries = await measure_gateway_rss(large, settle)
    note = {"after_s": settle, "goal_mib": _GOAL_MIB}
    rows = _lookups(large, 5 if opts.quick else 200)
    rows += [
        Measurement("gateway_rss", "aislecast", "gateway RSS, 6 shoppers", small_rss, "MiB", "lower",
                    extra={**note, "token_entries": small_entries}),
        Measurement("gateway_rss", "aislecast", f"gateway RSS, {large:,} shoppers", large_rss, "MiB",
                    "lower", extra={**note, "token_entries": large_entries}),
        Measurement("gateway_rss", "aislecast", f"tables' cost, {large:,} shoppers",
                    large_rss - small_rss, "MiB", "lower",
                    extra={"per_entry_bytes": round((large_rss - small_rss) * 2**20 / large_entries)}),
    ]
    return rows
