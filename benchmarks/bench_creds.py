"""The trust boundary's costs: issuing and revoking broker credentials, and TLS per message.

``creds``: HQ provisions 1,000 shopper credentials the way the product does (random
192-bit passwords, ``$7$`` hashes, password and ACL files written atomically, SIGHUP) and
the clock stops when the last new shopper's first login works (goal < 2 s). Then a
connected shopper is revoked: its line removed, files rewritten, SIGHUP, and the clock
stops when the broker has closed its session (goal < 2 s).

``tls``: QoS 1 publish -> receive latency, 1,000 messages of ~400 B at ~200/s, over the
plain listener and over the TLS (password) listener of the same broker, publisher and
subscriber in this process (so the numbers include one shared event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt

from aislecast.kernel import topics
from aislecast.kernel.acl import acl_rules, hq_username
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, ServerTls, free_port
from aislecast.kernel.mqtt import CheckedClient
from benchmarks._harness import BenchOptions, Measurement, benchmark, percentile
from hq.broker_auth import BrokerAuthFiles, hash_password, new_password, reload_broker, wait_for_login
from hq.pki import init_ca, issue_server

__all__ = ["bench_creds", "bench_tls"]

_GOAL_S = 2.0  # issue 10: provision 1,000 shoppers < 2 s; revoke -> session gone < 2 s
_HOST = "127.0.0.1"
_HQ = hq_username()


@contextlib.asynccontextmanager
async def _broker(work: Path, users: dict[str, str], *, tls: bool = False
                  ) -> AsyncIterator[tuple[MosquittoProcess, BrokerAuthFiles, ssl.SSLContext | None]]:
    files = BrokerAuthFiles(work / "auth")
    files.write({u: hash_password(p) for u, p in users.items()}, acl_rules([], [_HQ]))
    server_tls, ctx = None, None
    if tls:
        ca = init_ca(work / "ca")
        server = issue_server(ca, ["localhost", _HOST])
        server_tls = ServerTls(ca.cert_path, server.cert_path, server.key_path)
        ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    cfg = BrokerConfig(directory=work / "broker", port=free_port(), password_file=files.password_path,
                       acl_file=files.acl_path, tls=server_tls,
                       phone_tls_port=free_port() if tls else None)
    async with MosquittoProcess(cfg) as proc:
        yield proc, files, ctx


def _client(port: int, user: str, pw: str, ctx: ssl.SSLContext | None = None) -> CheckedClient:
    return CheckedClient(_HOST, port, username=user, password=pw, identifier=user,
                         protocol=aiomqtt.ProtocolVersion.V5, tls_context=ctx, timeout=10,
                         socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


async def _revoke_once(proc: MosquittoProcess, files: BrokerAuthFiles, hashes: dict[str, str],
                       victim: str, pw: str) -> float:
    """Seconds from rewriting the files without ``victim`` to its session being closed."""
    assert proc.pid is not None
    gone = asyncio.Event()
    async with _client(proc.port, victim, pw) as c:

        async def watch() -> None:
            with contextlib.suppress(aiomqtt.MqttError):
                async for _ in c.messages:
                    pass
            gone.set()

        task = asyncio.create_task(watch())
        await c.subscribe(topics.offers(victim), qos=1)
        t0 = time.perf_counter()
        del hashes[victim]
        files.write(hashes, acl_rules([], [_HQ]))
        reload_broker(proc.pid)
        await asyncio.wait_for(gone.wait(), 10)
        elapsed = time.perf_counter() - t0
        task.cancel()
    return elapsed


@benchmark("creds")
async def bench_creds(opts: BenchOptions) -> list[Measurement]:
    n = 100 if opts.quick else 1000
    revocations = 3 if opts.quick else 10
    hq_pw = new_password()
    with tempfile.TemporaryDirectory(prefix="aislecast-bench-creds-") as tmp:
        async with _broker(Path(tmp), {_HQ: hq_pw}) as (proc, files, _):
            assert proc.pid is not None
            hashes = {_HQ: hash_password(hq_pw)}
            t0 = time.perf_counter()
            issued = {f"{i:016x}": new_password() for i in range(n)}  # inbox-shaped names
            hashes |= {u: hash_password(p) for u, p in issued.items()}
            t_hash = time.perf_counter() - t0
            files.write(hashes, acl_rules([], [_HQ]))
            t_write = time.perf_counter() - t0 - t_hash
            reload_broker(proc.pid)
            last = next(reversed(issued))
            await wait_for_login(_HOST, proc.port, last, issued[last], timeout=30)
            t_total = time.perf_counter() - t0
            revoke = [await _revoke_once(proc, files, hashes, u, issued[u])
                      for u in list(issued)[:revocations]]
    steps: dict[str, float | int | str] = {
        "shoppers": n, "goal_s": _GOAL_S, "hash_s": round(t_hash, 4), "write_s": round(t_write, 4),
        "reload_and_login_s": round(t_total - t_hash - t_write, 4)}
    return [
        Measurement("creds", "aislecast", f"provision {n} shoppers (first login works)", t_total, "s",
                    better="lower", extra=steps),
        Measurement("creds", "aislecast", "revoke -> session gone p50", percentile(revoke, 0.5), "s",
                    better="lower", extra={"revocations": len(revoke), "goal_s": _GOAL_S}),
        Measurement("creds", "aislecast", "revoke -> session gone max", max(revoke), "s",
                    better="lower", extra={"revocations": len(revoke), "goal_s": _GOAL_S}),
    ]


async def _latency(port: int, pw: dict[str, str], ctx: ssl.SSLContext | None, n: int,
                   rate: float) -> list[float]:
    """QoS 1 publish -> receive in ms, ``n`` messages paced at ``rate`` per second."""
    inbox = next(u for u in pw if u != _HQ)
    got: dict[int, float] = {}
    sent: dict[int, float] = {}
    done = asyncio.Event()
    async with _client(port, inbox, pw[inbox], ctx) as sub, _client(port, _HQ, pw[_HQ], ctx) as pub:
        await sub.subscribe(topics.offers(inbox), qos=1)

        async def read() -> None:
            async for m in sub.messages:
                got[int(bytes(m.payload)[:8])] = time.perf_counter()
                if len(got) == n:
                    done.set()

        task = asyncio.create_task(read())
        pad = b" " * 392
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(n):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.perf_counter()
            await pub.publish_checked(topics.offers(inbox), b"%08d" % i + pad, qos=1)
        await asyncio.wait_for(done.wait(), 30)
        task.cancel()
    return [(got[i] - sent[i]) * 1000 for i in range(n)]


@benchmark("tls")
async def bench_tls(opts: BenchOptions) -> list[Measurement]:
    n, rate = (200, 200.0) if opts.quick else (1000, 200.0)
    pw = {_HQ: new_password(), "0000000000000001": new_password()}
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="aislecast-bench-tls-") as tmp:
        async with _broker(Path(tmp), pw, tls=True) as (proc, _, ctx):
            assert proc.config.phone_tls_port is not None
            runs: dict[str, tuple[int, Any]] = {"plain": (proc.port, None),
                                                "tls": (proc.config.phone_tls_port, ctx)}
            for name, (port, c) in runs.items():
                lat = await _latency(port, pw, c, n, rate)
                for q, label in ((0.5, "p50"), (0.99, "p99")):
                    rows.append(Measurement("tls", "aislecast", f"QoS1 publish->receive {label} ({name})",
                                            percentile(lat, q), "ms", better="lower",
                                            extra={"messages": n, "rate_per_s": rate}))
    return rows
