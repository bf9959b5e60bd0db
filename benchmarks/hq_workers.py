"""Several ``aislecast hq serve`` processes on one PostgreSQL schema and one broker.

:class:`WorkerPool` is what an operator runs, in miniature: a private Mosquitto whose
password and ACL files HQ renders (``[broker] auth_dir``, reloaded through its
``pid_file``), one hq.toml per worker (``[broker] worker = "N"``, so worker N logs in
as ``hq.N``), one signing key shared by all, and real subprocesses that can be
SIGKILLed. :class:`SimGateway` is a gateway's publisher in miniature: event batches at
QoS 1 with batch ids, each resent until HQ's end-to-end acknowledgement arrives.

Used by ``aislecast bench hq_workers`` (failover time, ingest with 1 and 3 workers)
and by tests/test_hq_workers.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.acl import acl_rules
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import (
    SCHEMA_VERSION,
    BatchAck,
    Event,
    EventBatch,
    SignedEnvelope,
    Store,
    decode,
    encode,
)
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.broker_auth import BrokerAuthFiles
from hq.credentials import CredentialRegistry
from hq.db import HqDb
from hq.service import HqService

__all__ = ["STORE", "SimGateway", "Worker", "WorkerPool", "events"]

STORE = "s1"
_PYTHON = [sys.executable, "-m", "aislecast"]
_WATCHER = "bundle-watch"  # a gateway login that only reads the store's bundles


def events(n: int, tag: str, gateway: str = "g1") -> list[Event]:
    """``n`` distinct events (ids ``{tag}-{i}``) of one gateway."""
    kinds = ("zone_enter", "zone_dwell", "decision", "offer_published", "zone_exit")
    return [Event(id=f"{tag}-{i}", kind=kinds[i % 5], ts=1_700_000_000.0 + i,  # type: ignore[arg-type]
                  store=STORE, gateway=gateway, inbox=f"in{i % 997}", zone="produce",
                  campaign=f"c{i % 20}", reason="offer" if i % 5 == 2 else None, offer=f"o{i}")
            for i in range(n)]


@dataclass
class Worker:
    name: str
    http_port: int
    proc: asyncio.subprocess.Process
    err: Path

    def health(self) -> dict[str, object] | None:
        """``GET /health`` (blocking: call it in a thread); None when it does not answer."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http_port}/health", timeout=2) as r:
                body = json.loads(r.read())
                return body if isinstance(body, dict) else None
        except (OSError, ValueError):
            return None

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def log_tail(self) -> str:
        return self.err.read_text(errors="replace")[-3000:] if self.err.exists() else ""


@dataclass
class WorkerPool:
    """``async with WorkerPool(work, db_url) as pool``: broker up, database ready;
    ``await pool.start("1")`` starts worker hq.1 and waits until it is healthy."""

    work: Path
    db_url: str
    session_expiry_s: int = 5
    learn_every_s: float = 3600.0
    gateways: tuple[str, ...] = ("g1",)
    workers: dict[str, Worker] = field(default_factory=dict)
    logins: dict[str, tuple[str, str]] = field(default_factory=dict)  # per gateway
    broker: MosquittoProcess | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def port(self) -> int:
        assert self.broker is not None
        return self.broker.port

    async def __aenter__(self) -> Self:
        self.work.mkdir(parents=True, exist_ok=True)
        files = BrokerAuthFiles(self.work / "broker-auth")
        await asyncio.to_thread(files.write, {}, acl_rules([], []))
        cfg = BrokerConfig(directory=self.work / "mosquitto", port=free_port(),
                           password_file=files.password_path, acl_file=files.acl_path)
        self.broker = await self._stack.enter_async_context(MosquittoProcess(cfg))
        (self.work / "mosquitto.pid").write_text(f"{self.broker.pid}\n")
        await asyncio.to_thread(self._provision)
        return self

    def _provision(self) -> None:
        """The store and the gateways' logins (one more, :data:`_WATCHER`, reads the
        bundles): the first worker's broker sync renders them into the broker's files."""
        db = HqDb(self.db_url)
        try:
            service = HqService(db, Signer(load_or_create_signing_key(self.work / "setup.pem")))
            service.upsert_store(Store(STORE, "Store 1", tz="Europe/Berlin"))
            registry = CredentialRegistry(db)
            for gw in (*self.gateways, _WATCHER):
                self.logins[gw] = registry.issue_gateway(STORE, gw)
        finally:
            db.close()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for w in self.workers.values():
            if w.alive:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers.values():
            try:
                async with asyncio.timeout(10):
                    await w.proc.wait()
            except TimeoutError:
                w.proc.kill()
                await w.proc.wait()
        await self._stack.aclose()

    def _config(self, name: str, http_port: int) -> Path:
        path = self.work / f"hq-{name}.toml"
        path.write_text(
            f'data_dir = "{self.work / ("data-" + name)}"\n'
            f'signing_key = "{self.work / "hq-signing.pem"}"\n'
            f"learn_every_s = {self.learn_every_s}\n"
            f'[database]\nurl = "{self.db_url}"\n'
            f'[broker]\nport = {self.port}\nworker = "{name}"\n'
            f"session_expiry_s = {self.session_expiry_s}\n"
            f'auth_dir = "{self.work / "broker-auth"}"\npid_file = "{self.work / "mosquitto.pid"}"\n'
            f"[http]\nport = {http_port}\n", encoding="utf-8")
        return path

    async def start(self, name: str, *, within_s: float = 60.0) -> Worker:
        http_port = free_port()
        config = self._config(name, http_port)
        err = self.work / f"hq-{name}.err"
        with err.open("ab") as e:
            proc = await asyncio.create_subprocess_exec(
                *_PYTHON, "hq", "serve", "--config", str(config), stdout=e, stderr=e,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=self.work, start_new_session=True)
        worker = Worker(name, http_port, proc, err)
        self.workers[name] = worker
        deadline = time.monotonic() + within_s
        while (await asyncio.to_thread(worker.health) or {}).get("status") != "ok":
            if not worker.alive or time.monotonic() > deadline:
                raise RuntimeError(f"HQ worker {name} did not become healthy:\n{worker.log_tail()}")
            await asyncio.sleep(0.1)
        return worker

    async def roles(self) -> dict[str, str]:
        """Each live worker's ``/health`` role."""
        live = [w for w in self.workers.values() if w.alive]
        answers = await asyncio.gather(*(asyncio.to_thread(w.health) for w in live))
        return {w.name: str((a or {}).get("role", "?")) for w, a in zip(live, answers, strict=True)}

    async def leader(self, *, within_s: float = 30.0) -> Worker:
        """The one live worker that says it leads (waits until exactly one does)."""
        deadline = time.monotonic() + within_s
        while True:
            roles = await self.roles()
            leaders = [n for n, r in roles.items() if r == "leader"]
            if len(leaders) == 1:
                return self.workers[leaders[0]]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no single leader within {within_s} s: {roles}")
            await asyncio.sleep(0.1)

    async def kill(self, worker: Worker) -> float:
        """SIGKILL ``worker``; returns the monotonic time the signal was sent."""
        t = time.monotonic()
        worker.proc.send_signal(signal.SIGKILL)
        await worker.proc.wait()
        return t

    @contextlib.asynccontextmanager
    async def bundles(self) -> AsyncIterator[asyncio.Queue[tuple[float, int]]]:
        """(monotonic arrival, version) of every bundle published for the store from now
        on (the retained one at subscribe time is skipped)."""
        user, password = self.logins[_WATCHER]
        out: asyncio.Queue[tuple[float, int]] = asyncio.Queue()
        async with aiomqtt.Client("127.0.0.1", self.port, identifier=user, username=user,
                                  password=password, protocol=aiomqtt.ProtocolVersion.V5) as c:
            await c.subscribe(topics.bundle(STORE), qos=1)

            async def read() -> None:
                async for msg in c.messages:
                    if msg.retain or not isinstance(msg.payload, bytes):
                        continue
                    env = decode(msg.payload, SignedEnvelope)  # HQ's own signature: not checked here
                    body = msgspec.json.decode(base64.b64decode(env.body))
                    out.put_nowait((time.monotonic(), int(body["version"])))

            task = asyncio.create_task(read())
            try:
                yield out
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class SimGateway:
    """Publishes event batches of ``batch`` events, QoS 1 with up to ``inflight`` not yet
    taken by the broker, and up to ``window`` (default ``inflight``) not yet acknowledged
    by HQ end to end; resends a batch not acknowledged within ``resend_s``, until every
    one is. A real gateway's window is its whole outbox (gateway.publisher)."""

    def __init__(self, pool: WorkerPool, gateway: str = "g1", *, batch: int = 100,
                 inflight: int = 16, window: int | None = None, resend_s: float = 3.0) -> None:
        user, password = pool.logins[gateway]
        self._settings = MqttSettings(port=pool.port, username=user, password=password,
                                      max_inflight=inflight)
        self._user, self._gateway = user, gateway
        self._batch, self._resend_s = batch, resend_s
        self._window = inflight if window is None else window
        self.acked: dict[str, int] = {}
        self.resent = 0
        self._waiting: dict[str, asyncio.Event] = {}

    async def _on_ack(self, msg: aiomqtt.Message) -> None:
        if not isinstance(msg.payload, bytes):
            return
        ack = decode(msg.payload, BatchAck)
        self.acked.setdefault(ack.batch, ack.stored)
        done = self._waiting.get(ack.batch)
        if done is not None:
            done.set()

    def batches(self, evs: list[Event], tag: str) -> dict[str, bytes]:
        """``evs`` as encoded batches (ids ``{tag}-b{i}``), for :meth:`send`."""
        return {f"{tag}-b{i}": encode(EventBatch(
            v=SCHEMA_VERSION, store=STORE, gateway=self._gateway, batch=f"{tag}-b{i}",
            events=evs[i * self._batch:(i + 1) * self._batch]))
            for i in range((len(evs) + self._batch - 1) // self._batch)}

    async def send(self, evs: list[Event] | dict[str, bytes], tag: str = "") -> float:
        """Publish ``evs`` (or :meth:`batches`) until every batch is acknowledged; returns
        the seconds from the first publish."""
        batches = evs if isinstance(evs, dict) else self.batches(evs, tag)
        topic = topics.gateway_events(STORE, self._gateway)
        async with MqttLink(self._settings, client_id=self._user, clean_start=True,
                            subscriptions=[(topics.gateway_acks(STORE, self._gateway), 1)],
                            handler=self._on_ack) as link:
            await link.wait_connected(10)
            slots = asyncio.Semaphore(self._window)
            t0 = time.perf_counter()

            async def one(batch: str, payload: bytes) -> None:
                async with slots:
                    done = self._waiting.setdefault(batch, asyncio.Event())
                    while not done.is_set():
                        await link.publish(topic, payload, qos=1)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(self._resend_s):
                                await done.wait()
                        if not done.is_set():
                            self.resent += 1

            async with asyncio.TaskGroup() as tg:
                for batch, payload in batches.items():
                    tg.create_task(one(batch, payload))
            return time.perf_counter() - t0
