"""Shopper enrolment through HQ's HTTP API against the same work done by the service.

``enrol``: a real :class:`hq.server.HqServer` (SQLite file, anonymous Mosquitto, uvicorn
as ``aislecast hq serve`` runs it) and a wallet token; 1,000 ``POST /api/shoppers`` (goal
< 2 s), one request at a time on each of 4 keep-alive connections. The client runs in
its own process (``python -m benchmarks.bench_enrol PORT TOKEN N CONNECTIONS``) so its
work is not counted against HQ's event loop, and it is deliberately lean: prepared
request bytes, a read of the status line, headers and ``Content-Length`` body. Rows:
the HTTP wall time, HQ's CPU per request (``time.process_time`` of the HQ process over
the run) and, for scale, the same number of :meth:`hq.service.HqService.enroll` calls
on a fresh database in a worker thread (what the route does besides HTTP, auth and audit).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from benchmarks._harness import BenchOptions, Measurement, benchmark, percentile
from hq.accounts import Accounts
from hq.db import HqDb
from hq.server import HqServer
from hq.service import HqService

__all__ = ["bench_enrol", "client"]

_GOAL_S = 2.0  # issue 10: 1,000 enrolments through the HTTP API in under 2 s
_CONNECTIONS = 4
_BODY = b'{"consents":["offers"]}'


async def _one_connection(port: int, token: str, n: int, took: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (f"POST /api/shoppers HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(_BODY)}\r\n\r\n").encode() + _BODY
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            body = await reader.readexactly(length)
            if status != 201:
                raise RuntimeError(f"enrolment answered {status}: {body[:200]!r}")
            took.append(time.perf_counter() - t0)
    finally:
        writer.close()
        await writer.wait_closed()


async def client(port: int, token: str, n: int, connections: int) -> dict[str, float]:
    """``n`` enrolments over ``connections`` keep-alive connections: wall s and p50/p99 ms."""
    took: list[float] = []
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i in range(connections):
            share = n // connections + (1 if i < n % connections else 0)
            tg.create_task(_one_connection(port, token, share, took))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "p50_ms": percentile(took, 0.5) * 1000,
            "p99_ms": percentile(took, 0.99) * 1000}


async def _over_http(work: Path, n: int) -> tuple[dict[str, float], float]:
    """The client's numbers and HQ's CPU seconds per request."""
    cfg = BrokerConfig(directory=work / "broker", port=free_port())
    async with MosquittoProcess(cfg) as broker, HqServer(
            db_url=f"sqlite:///{work / 'hq.db'}", key_path=work / "hq.key",
            mqtt=MqttSettings(port=broker.port), http_port=0, learn_every_s=0) as hq:
        _, token = await asyncio.to_thread(Accounts(hq.db).issue_token, "wallet")
        cpu0 = time.process_time()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.bench_enrol", str(hq.http_port), token, str(n),
            str(_CONNECTIONS), stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        cpu = time.process_time() - cpu0
        if proc.returncode != 0:
            raise RuntimeError(f"the enrolment client exited with {proc.returncode}")
        if hq.service.stats.shoppers_enrolled != n:
            raise RuntimeError(f"HQ enrolled {hq.service.stats.shoppers_enrolled} of {n}")
    return json.loads(out), cpu / n


def _through_service(work: Path, n: int) -> float:
    db = HqDb(f"sqlite:///{work / 'service.db'}")
    try:
        service = HqService(db, Signer(load_or_create_signing_key(work / "service.key")))
        t0 = time.perf_counter()
        for _ in range(n):
            service.enroll(["offers"])
        return time.perf_counter() - t0
    finally:
        db.close()


@benchmark("enrol")
async def bench_enrol(opts: BenchOptions) -> list[Measurement]:
    n = 100 if opts.quick else 1000
    with tempfile.TemporaryDirectory(prefix="aislecast-bench-enrol-") as tmp:
        work = Path(tmp)
        http, cpu = await _over_http(work, n)
        service_s = await asyncio.to_thread(_through_service, work, n)
    extra: dict[str, float | int | str] = {
        "shoppers": n, "connections": _CONNECTIONS, "goal_s": _GOAL_S,
        "p50_ms": round(http["p50_ms"], 2), "p99_ms": round(http["p99_ms"], 2)}
    return [
        Measurement("enrol", "aislecast", f"enrol {n} shoppers over HTTP", http["wall_s"], "s",
                    better="lower", extra=extra),
        Measurement("enrol", "aislecast", "HQ CPU per HTTP enrolment", cpu * 1000, "ms",
                    better="lower", extra={"shoppers": n}),
        Measurement("enrol", "aislecast", f"enrol {n} shoppers through the service", service_s,
                    "s", better="lower", extra={"shoppers": n}),
    ]


if __name__ == "__main__":
    _port, _token, _n, _conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(client(int(_port), _token, _n, _conns))))
