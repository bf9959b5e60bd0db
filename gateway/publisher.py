"""Drains the outbox to the broker: offers one by one (many in flight), events in batches.

An offer leaves the outbox only after its PUBACK, and the acknowledgement is committed
in the same transaction as the ``offer_published`` event it produces. Event batches
need more than a PUBACK: Mosquitto 2.0 does not restore shared subscriptions after a
restart, so a batch the broker accepted may reach no HQ worker. Event rows therefore
leave only when HQ's end-to-end :class:`~aislecast.kernel.schema.BatchAck` arrives; a batch
not acknowledged within ``ack_timeout_s`` is sent again (HQ ingest is idempotent).

Nothing here rescans the outbox: the backlog is read once at start, new offers arrive
through :meth:`OutboxPublisher.submit`, new events are read with a sequence cursor, and
failed rows are retried from memory after a jittered backoff. A publish the broker
refuses (ACL) is an alarm, logged and counted; it is retried, since only fixing the
credentials can help and the rows must not be lost meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from aislecast.kernel.const import EVENT_BATCH_INTERVAL_S, EVENT_BATCH_MAX, OUTBOX_INFLIGHT
from aislecast.kernel.errors import PublishDenied
from aislecast.kernel.logs import get_logger
from aislecast.kernel.mqtt import MqttLink
from gateway.outbox import Outbox, OutboxError, OutboxRow

__all__ = ["OutboxPublisher", "PublisherStats"]

log = get_logger(__name__)

# A row that failed waits this long (full jitter up to the cap) before it is tried again.
_RETRY_BASE_S = 0.5
_RETRY_CAP_S = 30.0
_FLUSH_EVERY_S = 0.02
# SQLite's own auto-checkpoint would run every ~1,000 pages inside a commit; every 2 s
# from a worker thread keeps the WAL to a few MB at the highest rates measured.
_CHECKPOINT_EVERY_S = 2.0
# HQ acknowledges a stored batch within milliseconds when up; 10 s rides out a busy HQ
# without resending much, and a resend is harmless (idempotent ingest).
_ACK_TIMEOUT_S = 10.0


@dataclass(slots=True)
class PublisherStats:
    offers_published: int = 0
    offers_expired: int = 0
    event_batches: int = 0
    events_published: int = 0
    events_acked: int = 0
    batches_resent: int = 0
    failures: int = 0
    denied: int = 0
    write_failures: int = 0


AckHook = Callable[[OutboxRow], list[tuple[str, str, bytes]]]


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(_RETRY_CAP_S, _RETRY_BASE_S * 2**attempt))


class OutboxPublisher:
    def __init__(
        self,
        outbox: Outbox,
        *,
        events_topic: str,
        batch_header: bytes,
        on_offer_acked: AckHook | None = None,
        inflight: int = OUTBOX_INFLIGHT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.events_topic = events_topic
        self._batch_header = batch_header  # b'{"v":1,"store":...,"gateway":...,'
        self._on_offer_acked = on_offer_acked
        self._inflight = inflight
        self._clock = clock  # wall clock: offer validity is a unix time (tests pass a fake)
        self.ack_timeout_s = _ACK_TIMEOUT_S
        self._queue: asyncio.Queue[OutboxRow] = asyncio.Queue()
        self._offers: set[int] = set()  # queued, in flight, waiting to retry, or acked
        self._attempts: dict[int, int] = {}
        self._acked: list[int] = []
        self._ack_events: list[tuple[str, str, bytes]] = []
        self._event_cursor = 0
        self._resend: deque[list[OutboxRow]] = deque()
        self._awaiting: dict[str, tuple[float, list[OutboxRow]]] = {}
        self._events_wakeup = asyncio.Event()
        self.stats = PublisherStats()

    # ---- called by the gateway ------------------------------------------------------
    def submit(self, row_seq: int, row: OutboxRow) -> None:
        """Publish a just-committed offer now."""
        if row_seq in self._offers:
            return
        self._offers.add(row_seq)
        self._queue.put_nowait(row)

    def events_added(self) -> None:
        self._events_wakeup.set()

    def batch_acked(self, batch: str) -> bool:
        """HQ stored ``batch``: its rows may leave the outbox. False for an unknown batch."""
        entry = self._awaiting.pop(batch, None)
        if entry is None:
            return False
        self._acked += [r.seq for r in entry[1]]
        self.stats.events_acked += len(entry[1])
        return True

    @property
    def awaiting_ack(self) -> int:
        return sum(len(rows) for _, rows in self._awaiting.values())

    # ---- tasks ----------------------------------------------------------------------
    async def run(self, link: MqttLink) -> None:
        """Drain the outbox into ``link`` until cancelled."""
        for row in self.outbox.pending("offer", limit=1_000_000):
            self.submit(row.seq, row)
        async with asyncio.TaskGroup() as tg:
            for i in range(self._inflight):
                tg.create_task(self._worker(link), name=f"outbox-worker-{i}")
            tg.create_task(self._flusher(), name="outbox-flusher")
            tg.create_task(self._event_batcher(link), name="outbox-events")
            tg.create_task(self._checkpointer(), name="outbox-checkpoint")

    async def _checkpointer(self) -> None:
        """Keep the WAL short without an fsync on the event loop."""
        while True:
            await asyncio.sleep(_CHECKPOINT_EVERY_S)
            await asyncio.to_thread(self.outbox.checkpoint)

    async def _publish(self, link: MqttLink, seq: int, payload: bytes, topic: str,
                       expiry: float | None) -> bool:
        try:
            await link.publish(topic, payload, qos=1, expiry_s=expiry)
        except PublishDenied as exc:
            self.stats.denied += 1
            log.error(  # noqa: TRY400 - an alarm line, the traceback says nothing more
                "outbox publish denied topic=%s reason=0x%02x seq=%d: check credentials/ACL",
                exc.topic, exc.reason_code, seq)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.debug("outbox publish failed seq=%d error=%s", seq, exc)
        except Exception:  # a row paho cannot even pack must not stop the gateway
            log.exception("outbox publish raised seq=%d: kept, retried with backoff", seq)
        else:
            return True
        self.stats.failures += 1
        return False

    def _retry_offer_later(self, row: OutboxRow) -> None:
        n = self._attempts.get(row.seq, 0) + 1
        self._attempts[row.seq] = n
        asyncio.get_running_loop().call_later(_backoff(n), self._queue.put_nowait, row)

    async def _worker(self, link: MqttLink) -> None:
        while True:
            row = await self._queue.get()
            remaining = None if row.expires_at is None else row.expires_at - self._clock()
            # MQTT expiry is whole seconds: under 1 s left, the broker would keep it up to
            # a second past expires_at, so it counts as expired here
            if remaining is not None and remaining < 1.0:
                self.stats.offers_expired += 1  # an expired offer is never published
                self._acked.append(row.seq)
                continue
            if await self._publish(link, row.seq, row.payload, row.topic, remaining):
                self.stats.offers_published += 1
                self._acked.append(row.seq)
                self._attempts.pop(row.seq, None)
                if self._on_offer_acked is not None:
                    self._ack_events += self._on_offer_acked(row)
            else:
                self._retry_offer_later(row)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_EVERY_S)
            self.flush()

    def flush(self) -> bool:
        """Commit acknowledgements now: acked rows leave the outbox together with their
        ``offer_published`` events. Called every 20 ms and once more at shutdown, so an
        offer the broker took is never published again after a restart. False when the
        write failed (disk full): everything stays queued for the next try."""
        if not self._acked and not self._ack_events:
            return True
        acked, self._acked = self._acked, []
        events, self._ack_events = self._ack_events, []
        try:
            self.outbox.add(events=events, remove=acked)
        except OutboxError as exc:
            self._acked[:0], self._ack_events[:0] = acked, events
            self.stats.write_failures += 1
            if self.stats.write_failures == 1 or self.stats.write_failures % 100 == 0:
                log.error("%s (failures=%d)", exc, self.stats.write_failures)  # noqa: TRY400
            return False
        self._offers.difference_update(acked)
        if events:
            self._events_wakeup.set()
        return True

    def _expire_awaiting(self) -> None:
        now = time.monotonic()
        for batch, (deadline, rows) in list(self._awaiting.items()):
            if deadline <= now:
                del self._awaiting[batch]
                self._resend.append(rows)
                self.stats.batches_resent += 1

    def _next_rows(self) -> list[OutboxRow]:
        if self._resend:
            return self._resend.popleft()
        rows = self.outbox.after("event", self._event_cursor, limit=EVENT_BATCH_MAX)
        if rows:
            self._event_cursor = rows[-1].seq
        return rows

    async def _event_batcher(self, link: MqttLink) -> None:
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(EVENT_BATCH_INTERVAL_S):
                    await self._events_wakeup.wait()
            except TimeoutError:
                pass
            self._events_wakeup.clear()
            self._expire_awaiting()
            await asyncio.sleep(EVENT_BATCH_INTERVAL_S / 5)  # let a burst accumulate
            while link.connected.is_set():
                rows = self._next_rows()
                if not rows:
                    break
                batch = uuid.uuid4().hex
                payload = (self._batch_header + b'"batch":"' + batch.encode() + b'","events":['
                           + b",".join(r.payload for r in rows) + b"]}")
                self._awaiting[batch] = (time.monotonic() + self.ack_timeout_s, rows)
                if not await self._publish(link, rows[0].seq, payload, self.events_topic, None):
                    self._awaiting.pop(batch, None)
                    self._resend.appendleft(rows)
                    attempt += 1
                    await asyncio.sleep(_backoff(attempt))
                    break
                attempt = 0
                self.stats.event_batches += 1
                self.stats.events_published += len(rows)
                if len(rows) < EVENT_BATCH_MAX:
                    break
