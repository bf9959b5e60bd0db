"""The HQ process: HTTP API (uvicorn), MQTT ingest and bundle refresh in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any, Final

import aiomqtt
import uvicorn

from aislecast.kernel import topics
from aislecast.kernel.const import BUNDLE_REPUBLISH_S
from aislecast.kernel.errors import PublishDenied
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.api import create_app
from hq.console import STATE_FILTER, GatewayBoard
from hq.db import HqDb
from hq.ingest import Ingest
from hq.learning import learn_loop
from hq.service import HqService
from hq.shortlink_store import DbShortLinkStore, make_mint_router
from hq.shortlinks import make_shortlink_router

__all__ = ["LEARN_EVERY_S", "HqServer"]

log = logging.getLogger("aislecast.hq.server")

# Model retraining, budget grant top-ups and a bundle refresh this often. A minute keeps
# a gateway that spent its grant waiting at most that long for the next chunk, and a
# pilot's event log trains in milliseconds; 0 turns learning off.
LEARN_EVERY_S: Final = 60.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture: the process's one TaskGroup owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HqServer:
    """Build once, then ``await server.run()``; ``started`` is set when HTTP and MQTT are up."""

    def __init__(
        self,
        *,
        db_url: str,
        key_path: Path,
        mqtt: MqttSettings,
        http_host: str = "127.0.0.1",
        http_port: int = 8080,
        client_id: str = "hq-1",
        rotation_k: int | None = None,
        republish_s: float = BUNDLE_REPUBLISH_S,
        learn_every_s: float = LEARN_EVERY_S,
    ) -> None:
        self.db = HqDb(db_url)
        signer = Signer(load_or_create_signing_key(key_path))
        self.service = HqService(self.db, signer) if rotation_k is None else HqService(
            self.db, signer, rotation_k=rotation_k)
        self.ingest = Ingest(self.db)
        self.board = GatewayBoard()  # the console's gateway view, from retained state
        self.link = MqttLink(
            mqtt, client_id=client_id,
            subscriptions=[(topics.HQ_EVENTS_SHARED, 1), (topics.HQ_FEEDBACK_SHARED, 1),
                           (STATE_FILTER, 1)],
            handler=self.board.route(self.ingest.handle),
        )
        self.service.link = self.link

        async def ack(topic: str, payload: bytes) -> None:
            # never block ingest on the ack: the gateway resends unacknowledged batches
            self._spawn(self.link.publish(topic, payload, qos=1))

        self.ingest.ack = ack
        self._pending: set[asyncio.Task[None]] = set()
        self.app = create_app(self.service, self.ingest, self.board)
        # short links: GET /s/{code} (QR and NFC clicks become `tap` events) and minting
        self.shortlinks = DbShortLinkStore(self.db, self.ingest.store_events)
        self.app.include_router(make_shortlink_router(self.shortlinks))
        self.app.include_router(make_mint_router(self.shortlinks))
        self.http_port = http_port
        self._uv = _Server(uvicorn.Config(
            self.app, host=http_host, port=http_port, log_level="warning", lifespan="off"))
        self._republish_s = republish_s
        self.learn_every_s = learn_every_s
        self.started = asyncio.Event()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._quiet(coro), name="hq-ack")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @staticmethod
    async def _quiet(coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except (aiomqtt.MqttError, PublishDenied, TimeoutError) as exc:
            log.warning("batch ack not sent: %s", exc)

    async def _republisher(self) -> None:
        """Refresh every store's bundle so token tables never run out."""
        while True:
            await asyncio.sleep(self._republish_s)
            for store in self.service.store_ids():
                try:
                    await self.service.publish_bundle(store)
                except Exception:
                    log.exception("bundle republish failed store=%s", store)

    async def _serve_http(self) -> None:
        try:
            await self._uv.serve()
        finally:
            self._uv.should_exit = True

    async def run(self) -> None:
        async with self.link:
            try:
                async with asyncio.TaskGroup() as tg:
                    http = tg.create_task(self._serve_http(), name="hq-http")
                    tg.create_task(self._republisher(), name="hq-bundle-refresh")
                    if self.learn_every_s > 0:  # retrain, top up grants, republish
                        tg.create_task(learn_loop(self.service, self.learn_every_s),
                                       name="hq-learn")
                    # HTTP serves meanwhile; a broker that starts later is simply waited for
                    # (a timeout here would end HQ, and systemd would only restart it)
                    await self.link.wait_connected(None)
                    while not self._uv.started and not http.done():  # noqa: ASYNC110 - uvicorn has no event
                        await asyncio.sleep(0.01)
                    self.started.set()
                    log.info("hq started http_port=%d", self.http_port)
            finally:
                self._uv.should_exit = True
                with contextlib.suppress(Exception):
                    self.db.close()
