"""``till``: the redeem API's latency at a fixed 200 requests/s against a real HQ.

HQ is ``aislecast hq serve`` on a seeded SQLite database (:mod:`benchmarks._hq`: the
simulated store, two campaigns of three variants each, a till token for the store). The
store's codes are minted with the store key derived from HQ's own redemption master
(the file HQ made beside its signing key), as a gateway mints them from its bundle. The
client, in its own process (``python -m benchmarks.bench_till PORT TOKEN CODES RATE``),
sends one new code per request on an open-loop schedule of RATE requests a second over
16 keep-alive connections; each latency is counted from the request's scheduled time,
so a stall that delays the requests behind it is counted in all of them. Every request
must be a 200 and HQ must hold exactly one redemption per code afterwards. Also
reported: HQ's CPU per redemption (its process's CPU time over the run, from /proc) and
the machine's load when the run began, since on a shared machine other work competes
with HQ for the CPU.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.campaign import Campaign, Creative, Trigger
from aislecast.kernel.redeem import mint_code
from benchmarks._harness import BenchOptions, Measurement, benchmark, percentile
from benchmarks._hq import hq_serve, seed_hq
from hq.accounts import Accounts
from hq.db import HqDb
from hq.redeem_keys import RedeemKeys

__all__ = ["bench_till", "client"]

_STORE = "store-bench"
_RATE = 200.0
_CONNECTIONS = 16


def _campaigns() -> list[Campaign]:
    return [Campaign(id=f"c{i}", name=f"c{i}", stores=[_STORE], status="live",
                     trigger=Trigger(kind="enter", zones=["entrance"]),
                     creatives=[Creative(id=v, title=v) for v in ("a", "b", "c")])
            for i in range(2)]


async def _connection(port: int, token: str, codes: list[str], *, queue: asyncio.Queue[
        tuple[int, float] | None], took: list[float], status: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /api/till/redeem HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n")
    try:
        while (item := await queue.get()) is not None:
            i, due = item
            body = msgspec.json.encode({"code": codes[i], "txn": f"bench-{i}"})
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            reply = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in reply.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            took.append(time.perf_counter() - due)
            code = int(reply.split(b" ", 2)[1])
            status[code] = status.get(code, 0) + 1
    finally:
        writer.close()
        await writer.wait_closed()


async def client(port: int, token: str, codes: list[str], rate: float) -> dict[str, object]:
    """Redeem ``codes`` at ``rate`` a second: latency p50/p99/max (ms), statuses, rate."""
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    took: list[float] = []
    status: dict[int, int] = {}
    start = time.perf_counter() + 0.2
    async with asyncio.TaskGroup() as tg:
        for _ in range(_CONNECTIONS):
            tg.create_task(_connection(port, token, codes, queue=queue, took=took, status=status))
        for i in range(len(codes)):
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            queue.put_nowait((i, due))
        for _ in range(_CONNECTIONS):
            queue.put_nowait(None)
    wall = time.perf_counter() - start
    return {"p50_ms": percentile(took, 0.5) * 1000, "p99_ms": percentile(took, 0.99) * 1000,
            "max_ms": max(took) * 1000, "status": {str(k): v for k, v in status.items()},
            "rate": len(took) / wall}


def _seed(work: Path) -> str:
    seed_hq(work, _STORE, _campaigns(), 0, admin="bench-admin")
    db = HqDb(f"sqlite:///{work}/hq.sqlite")
    try:
        return Accounts(db).issue_token("till", name="bench-till", stores=[_STORE])[1]
    finally:
        db.close()


def _codes(work: Path, n: int) -> list[str]:
    key = RedeemKeys.load(work / "hq.pem").of(_STORE)  # HQ's master, made when it started
    expires = time.time() + 3600
    return [mint_code(key, store=_STORE, campaign=f"c{i % 2}", variant="abc"[i % 3],
                      serial=i.to_bytes(5, "big"), expires_at=expires) for i in range(n)]


def _child_cpu_s() -> float:
    """CPU seconds (user + system) of this process's children, HQ being the only one
    besides the broker and the client (read from /proc; 0 elsewhere)."""
    total, me = 0.0, os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and b"serve" in cmd:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _redeemed(work: Path) -> int:
    db = HqDb(f"sqlite:///{work}/hq.sqlite")
    try:
        return int(db.query("SELECT count(*) FROM redemptions")[0][0])
    finally:
        db.close()


@benchmark("till")
async def bench_till(opts: BenchOptions) -> list[Measurement]:
    seconds = 3.0 if opts.quick else 20.0
    n = int(_RATE * seconds)
    with tempfile.TemporaryDirectory(prefix="aislecast-bench-till-") as tmp:
        work = Path(tmp)
        token = await asyncio.to_thread(_seed, work)
        async with MosquittoProcess(BrokerConfig(directory=work / "broker", port=free_port())
                                    ) as broker, \
                hq_serve(work, ["--broker", f"127.0.0.1:{broker.port}"]) as http:
            codes = await asyncio.to_thread(_codes, work, n)
            (work / "codes.json").write_text(json.dumps(codes), encoding="utf-8")
            load, cpu0 = os.getloadavg()[0], _child_cpu_s()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.bench_till", str(http), token,
                str(work / "codes.json"), str(_RATE), stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"the till client exited with {proc.returncode}")
            cpu_ms = (_child_cpu_s() - cpu0) / n * 1000
        got = json.loads(out)
        redeemed = await asyncio.to_thread(_redeemed, work)
    if got["status"] != {"200": n} or redeemed != n:
        raise RuntimeError(f"expected {n} redemptions, got {got['status']} and {redeemed} rows")
    extra: dict[str, float | int | str] = {
        "requests": n, "target_rate": _RATE, "achieved_rate": round(got["rate"], 1),
        "connections": _CONNECTIONS, "p50_ms": round(got["p50_ms"], 2),
        "max_ms": round(got["max_ms"], 2),
        # the machine's 1-minute load when the run began: other work competes with HQ
        "loadavg_1m": round(load, 1)}
    return [
        Measurement("till", "aislecast", f"redeem API p99 at {_RATE:.0f} requests/s",
                    got["p99_ms"], "ms", better="lower", extra=extra),
        Measurement("till", "aislecast", f"redeem API p50 at {_RATE:.0f} requests/s",
                    got["p50_ms"], "ms", better="lower", extra={"requests": n}),
        Measurement("till", "aislecast", "HQ CPU per redemption", cpu_ms, "ms", better="lower",
                    extra={"requests": n}),
    ]


if __name__ == "__main__":
    _port, _token, _file, _rate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    _list = json.loads(Path(_file).read_text(encoding="utf-8"))
    print(json.dumps(asyncio.run(client(int(_port), _token, _list, _rate))))
