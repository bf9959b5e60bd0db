"""HQ's long-running tasks besides ingest: the ack sender, the bundle republisher, the
keyring watcher, the leader's takeover round and the HTTP server.
:class:`hq.server.HqServer` runs each as a named task of its one TaskGroup; each keeps
its counters in a stats dataclass (``/metrics`` reads them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Final

import aiomqtt
import uvicorn

from aislecast.kernel.counters import count
from aislecast.kernel.errors import ListenError, PublishDenied
from aislecast.kernel.logs import get_logger
from hq.keyring import Keyring
from hq.learning import train
from hq.router import Reply
from hq.service import HqService
from hq.shards import BrokerShards, NoStore

__all__ = ["ACK_IN_FLIGHT", "ACK_QUEUE_MAX", "KEYS_EVERY_S", "AckSender", "AckStats", "HttpServer",
           "KeyWatcher", "KeyWatcherStats", "Republisher", "RepublisherStats", "listen", "takeover"]

log = get_logger(__name__)

# Acks waiting for the broker. A gateway resends a batch nobody acknowledged, so an ack
# dropped when this fills costs one duplicate batch (counted, never double-stored);
# 10,000 is ~10 s of the ingest benchmark's peak batch rate.
ACK_QUEUE_MAX: Final = 10_000
# Acks published concurrently: each waits for its PUBACK (~0.5 ms on loopback), so one
# at a time would cap HQ near 2k acknowledged batches/s (docs/architecture.md#mosquitto, the aiomqtt figure).
ACK_IN_FLIGHT: Final = 64
# How often HQ looks whether `aislecast hq keys ...` changed the keyring (one stat()).
KEYS_EVERY_S: Final = 5.0


@dataclass(slots=True)
class AckStats:
    sent: int = count("batch and feedback acknowledgements the broker took")
    failed: int = count("acknowledgements refused or timed out (the sender resends)")
    dropped: int = count("acknowledgements dropped because the ack queue was full")


class AckSender:
    """Acknowledgements queued by ingest (:meth:`offer` never blocks) and published by
    :meth:`run` with up to ``in_flight`` waiting for their PUBACK."""

    def __init__(self, *, max_queued: int = ACK_QUEUE_MAX, in_flight: int = ACK_IN_FLIGHT) -> None:
        self._queue: asyncio.Queue[Reply] = asyncio.Queue(max_queued)
        self._in_flight = in_flight
        self.stats = AckStats()

    def offer(self, reply: Reply) -> None:
        try:
            self._queue.put_nowait(reply)
        except asyncio.QueueFull:
            self.stats.dropped += 1

    async def _send(self, link: BrokerShards, reply: Reply, slots: asyncio.Semaphore) -> None:
        try:
            await link.publish(reply.topic, reply.payload, store=reply.store, qos=1, wait=False)
        except (aiomqtt.MqttError, PublishDenied, TimeoutError, NoStore) as exc:
            self.stats.failed += 1
            log.warning("ack not sent", topic=reply.topic, error=str(exc))
        else:
            self.stats.sent += 1
        finally:
            slots.release()

    async def run(self, link: BrokerShards) -> None:
        slots = asyncio.Semaphore(self._in_flight)
        async with asyncio.TaskGroup() as tg:
            while True:
                reply = await self._queue.get()
                await slots.acquire()
                tg.create_task(self._send(link, reply, slots), name="hq-ack")


@dataclass(slots=True)
class RepublisherStats:
    rounds: int = count("bundle refresh rounds")
    requested: int = count("store bundles published early on request (a gateway added or revoked)")
    failures: int = count("store bundles a refresh round could not publish")


class Republisher:
    """Refresh every store's bundle every ``every_s`` so token tables never run out, and
    a store's at once when :meth:`request` names it (its provisioned gateways changed)."""

    def __init__(self, service: HqService, every_s: float) -> None:
        self._service = service
        self._every_s = every_s
        self._asked: set[str] = set()
        self._wake = asyncio.Event()
        self.stats = RepublisherStats()

    def request(self, store: str) -> None:
        self._asked.add(store)
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_round = loop.time() + self._every_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_round):
                    await self._wake.wait()
            if self._wake.is_set():
                self._wake.clear()
                asked, self._asked = sorted(self._asked), set()
                self.stats.failures += await self._service.republish_all(asked)
                self.stats.requested += len(asked)
                continue
            self.stats.failures += await self._service.republish_all()
            self.stats.rounds += 1
            next_round = loop.time() + self._every_s


@dataclass(slots=True)
class KeyWatcherStats:
    changes: int = count("keyring changes applied (rotate, next, retire)")
    failures: int = count("keyring reads that failed (the old keyring stays in use)")


class KeyWatcher:
    """Apply the CLI's keyring changes: the service signs with the new current key and
    every store gets a fresh bundle at once, announcing the new ring. Every worker
    reloads its ring; only one for which ``publish()`` is true (the leader) republishes."""

    def __init__(self, service: HqService, ring: Keyring, every_s: float, *,
                 publish: Callable[[], bool] = lambda: True) -> None:
        self._service = service
        self._ring = ring
        self._every_s = every_s
        self._publish = publish
        self.stats = KeyWatcherStats()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.check()

    async def check(self) -> bool:
        """Re-read the keyring now; True if it changed (and bundles were republished)."""
        try:
            changed = await asyncio.to_thread(self._ring.reload)
            signer = await asyncio.to_thread(self._ring.signer) if changed else None
        except Exception:
            self.stats.failures += 1
            log.exception("keyring reload failed; signing with the keys in use")
            return False
        if signer is None:
            return False
        self._service.signer = signer
        self.stats.changes += 1
        log.info("keyring changed", current=signer.kid,
                 keys=[f"{n.kid}:{n.state}" for n in signer.notices])
        if self._publish():
            await self._service.republish_all()
        return True


async def takeover(service: HqService, *, train_model: bool) -> None:
    """A new leader's first round: the model trained from the shared event log (so its
    bundles carry one), then a fresh bundle for every store."""
    if train_model:
        try:
            model = train(service)
            log.info("model trained at takeover", samples=model.samples)
        except Exception:
            log.exception("training at takeover failed; bundles go out without a model")
    failures = await service.republish_all()
    log.info("takeover bundles published", stores=len(service.store_ids()), failures=failures)


class HttpServer(uvicorn.Server):
    """uvicorn without its own signal capture: the process's one TaskGroup owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def run_until_stopped(self, sock: socket.socket | None = None) -> None:
        try:
            await self.serve(sockets=None if sock is None else [sock])
        finally:
            self.should_exit = True

    async def wait_listening(self, task: asyncio.Task[None]) -> None:
        """Until the socket listens, or ``task`` (running :meth:`run_until_stopped`) ended."""
        while not self.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.01)


def listen(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound here rather than by uvicorn, whose bind failure is a
    ``sys.exit`` inside a task (a traceback, "Task exception was never retrieved")."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise ListenError.of(host, port, exc,
                             flag="[http] host and port (--http-host, --http-port)") from None
