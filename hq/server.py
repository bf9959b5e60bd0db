"""The HQ process's composition root: ``async with HqServer(...) as hq``.

``__init__`` only keeps settings. ``__aenter__`` opens the database and the signing key
(in a worker thread: both touch the disk), builds every component once with what it
needs (no attribute is wired afterwards), connects the MQTT link and starts one
``TaskGroup`` of named tasks:

- ``hq-ingest``: the inbound router (:mod:`hq.router`) reading the link's messages;
- ``hq-acks``: batch and feedback acknowledgements (:class:`hq.tasks.AckSender`);
- ``hq-keys``: the keyring re-read when ``aislecast hq keys`` changed it, bundles
  re-signed (:class:`hq.tasks.KeyWatcher`, :mod:`hq.keyring`), and republished by the leader;
- ``hq-leader``: the election (:mod:`hq.leader`); while this worker leads it runs the
  leader's duties: ``hq-republisher`` (every store's bundle refreshed so token tables
  never run out), ``hq-learner`` (model retraining, budget grant top-ups,
  :func:`hq.learning.learn_loop`) and, for a worker that took over from another, a
  takeover round first (:func:`hq.tasks.takeover`). On SQLite the one worker leads
  (a second worker on the same file is refused: :class:`hq.leader.WorkerRefused`);
- ``hq-broker-sync``: the broker's password and ACL files re-rendered from the
  credential registry and reloaded (:class:`hq.broker_sync.BrokerSync`), when HQ is
  given the broker's ``auth_dir`` (``hq-broker-sync-{shard}`` for each shard's);
- ``hq-shards``: the per-broker "connected" gauges, with stores sharded across brokers
  (:mod:`hq.shards`: one link per broker, each publish on its store's broker; every
  link feeds the same inbound queue);
- ``hq-alerts``: the alerts judged every few seconds (:mod:`hq.alerts`);
- ``hq-autopause``: campaigns' auto-pause rules, judged and acted on by the leader
  every few seconds, their alerts on every worker (:mod:`hq.autopause`);
- ``hq-feeds`` (a leader's duty): the RSS/Atom feeds polled for flash proposals
  (:mod:`hq.feeds`), which wait for approval (:mod:`hq.approvals`);
- ``hq-http``: uvicorn serving the API, the console, short links, ``/metrics`` and the
  rendered broker files for brokers on other hosts (:mod:`hq.broker_feed`).

It returns once HTTP listens and the broker has accepted the connection; a broker that
starts later is waited for (HTTP answers ``/health`` with 503 meanwhile). ``__aexit__``
lets uvicorn close its connections, cancels and awaits every task, then closes the link
and the database. A server is entered once; :meth:`run` is ``async with self`` until
cancelled (``aislecast hq serve`` cancels it on SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import aiomqtt
import uvicorn
from fastapi import FastAPI

from aislecast.kernel import topics
from aislecast.kernel.const import BUNDLE_REPUBLISH_S
from aislecast.kernel.logs import get_logger
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from hq.alerts import AlertWatch, component_rules
from hq.api import MAX_BODY_BYTES, create_app
from hq.approvals import ApprovalPolicy, Approvals
from hq.audit import AuditLog
from hq.autopause import AUTOPAUSE_EVERY_S, AutoPauser
from hq.board import STATE_FILTER, GatewayBoard
from hq.broker_auth import BrokerAuthFiles
from hq.broker_sync import BrokerSync, PidSource
from hq.credentials import ensure_hq_credential, hq_login_file
from hq.db import HqDb
from hq.feed_rules import FeedSettings
from hq.feeds import FeedWatcher
from hq.first_visit import FirstVisits
from hq.ingest import Ingest
from hq.keyring import Keyring
from hq.landing import LandingHosts
from hq.leader import (
    LEADER_EVERY_S,
    Election,
    LeaderLock,
    LeaderStats,
    PgLeaderLock,
    SoleLeaderLock,
    claim_sqlite,
)
from hq.learning import LearnStats, learn_loop
from hq.metrics import HqMetrics
from hq.passes import PassSettings
from hq.passes_api import PassDesk
from hq.redeem_keys import RedeemKeys
from hq.retention import EVENTS_DAYS, EventRetention
from hq.router import Route, Router
from hq.service import HqService
from hq.shards import BrokerShards, ShardSettings
from hq.shortlink_store import DbShortLinkStore, make_mint_router
from hq.shortlinks import make_shortlink_router
from hq.tasks import KEYS_EVERY_S, AckSender, HttpServer, KeyWatcher, Republisher, listen, takeover
from hq.wallet_api import WalletSettings

__all__ = ["HTTP_SHUTDOWN_S", "INBOUND_QUEUE_MAX", "LEARN_EVERY_S", "HqServer"]

log = get_logger(__name__)

# Model retraining, budget grant top-ups and a bundle refresh this often. A minute keeps
# a gateway that spent its grant waiting at most that long for the next chunk, and a
# pilot's event log trains in milliseconds; 0 turns learning off.
LEARN_EVERY_S: Final = 60.0
# Messages read from the broker and not yet routed. When ingest falls behind, the link
# waits here and aiomqtt's own queue holds the rest: this bounds only our share.
INBOUND_QUEUE_MAX: Final = 1_000
# uvicorn's graceful stop (open keep-alive connections closed, requests finished) before
# the HTTP task is cancelled; a console poll takes milliseconds.
HTTP_SHUTDOWN_S: Final = 3


@dataclass(frozen=True, slots=True)
class _Parts:
    """Everything an entered server holds, built once in ``__aenter__``."""

    db: HqDb
    service: HqService
    ingest: Ingest
    board: GatewayBoard
    link: MqttLink
    shards: BrokerShards
    shortlinks: DbShortLinkStore
    app: FastAPI
    metrics: HqMetrics
    broker_sync: BrokerSync | None
    keys: KeyWatcher
    election: Election
    feeds: FeedWatcher
    first_visits: FirstVisits


class HqServer:
    """``async with HqServer(db_url=..., key_path=..., mqtt=...) as hq:`` (keyword-only)."""

    def __init__(
        self,
        *,
        db_url: str,
        key_path: Path,
        mqtt: MqttSettings,
        http_host: str = "127.0.0.1",
        http_port: int = 8080,
        client_id: str = "hq-1",
        worker: str = "1",
        rotation_k: int | None = None,
        republish_s: float = BUNDLE_REPUBLISH_S,
        learn_every_s: float = LEARN_EVERY_S,
        public_base_url: str | None = None,
        landing_hosts: LandingHosts | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        broker_auth_dir: Path | None = None,
        broker_pid: PidSource | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        trusted_proxies: Sequence[str] = (),
        keys_every_s: float = KEYS_EVERY_S,
        leader_every_s: float = LEADER_EVERY_S,
        shards: Sequence[ShardSettings] = (),
        retention_days: float = EVENTS_DAYS,
        autopause_every_s: float = AUTOPAUSE_EVERY_S,
        approval: ApprovalPolicy | None = None,
        feeds: FeedSettings | None = None,
        wallet_broker_url: str | None = None,
        passes: PassSettings | None = None,
    ) -> None:
        self.db_url = db_url
        self.key_path = key_path
        self.mqtt = mqtt
        self.http_host = http_host
        self.http_port = http_port  # 0 picks a free port; the bound one is set on entry
        self.client_id = client_id
        # this worker's name among several on one database: it logs in as hq.{worker}
        self.worker = worker
        self.leader_every_s = leader_every_s  # lock tries (follower) and checks (leader)
        self.rotation_k = rotation_k
        self.republish_s = republish_s
        self.public_base_url = public_base_url
        self.landing_hosts = landing_hosts  # None: any http(s) host, with a warning at start
        self.learn_every_s = learn_every_s
        self.max_body_bytes = max_body_bytes
        # the broker's password/ACL directory: HQ renders it from its registry and, with
        # broker_pid, reloads the broker; HQ then logs in as hq.1 unless mqtt has a user
        self.broker_auth_dir = broker_auth_dir
        self.broker_pid = broker_pid
        # HTTPS when both are set (uvicorn's ssl options); trusted_proxies: the only peers
        # whose X-Forwarded-For/-Proto uvicorn applies (empty: nobody's)
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.trusted_proxies = list(trusted_proxies)
        self.keys_every_s = keys_every_s  # how often the keyring file is checked for changes
        # more brokers, each serving its stores (hq.shards); [broker] serves the rest
        self.shard_settings = list(shards)
        self.retention_days = retention_days  # [retention] events_days (hq.retention)
        self.retention: EventRetention | None = None  # run by the leader (set on entry)
        self.autopause_every_s = autopause_every_s  # campaigns' auto-pause rules judged this often
        # who approves what before it goes live ([approval]) and the feeds and rules that
        # propose flash drafts ([feeds]); None: the defaults (four-eyes flash, no feeds)
        self.approval = approval or ApprovalPolicy()
        self.feed_settings = feeds or FeedSettings()
        self.wallet_broker_url = wallet_broker_url  # the broker's wss:// URL for /wallet
        self.passes = passes  # [passes]: Apple and Google Wallet passes (hq.passes)
        self.started = asyncio.Event()  # set when HTTP listens and MQTT is connected
        self._parts: _Parts | None = None
        self._entered = False
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: HttpServer | None = None

    # ---- the components, once entered -------------------------------------------------
    def _got(self) -> _Parts:
        if self._parts is None:
            raise RuntimeError("HqServer's components exist only inside 'async with HqServer(...)'")
        return self._parts

    @property
    def db(self) -> HqDb:
        return self._got().db

    @property
    def service(self) -> HqService:
        return self._got().service

    @property
    def ingest(self) -> Ingest:
        return self._got().ingest

    @property
    def board(self) -> GatewayBoard:
        return self._got().board

    @property
    def link(self) -> MqttLink:
        """The default broker's link (``[broker]``)."""
        return self._got().link

    @property
    def shards(self) -> BrokerShards:
        """Every broker's link, by shard name: ``shards.links["b"]``, ``shards.down()``."""
        return self._got().shards

    @property
    def shortlinks(self) -> DbShortLinkStore:
        return self._got().shortlinks

    @property
    def app(self) -> FastAPI:
        return self._got().app

    @property
    def metrics(self) -> HqMetrics:
        return self._got().metrics

    @property
    def broker_sync(self) -> BrokerSync | None:
        return self._got().broker_sync

    @property
    def keys(self) -> KeyWatcher:
        """The keyring watcher: ``await hq.keys.check()`` applies a keyring change now."""
        return self._got().keys

    @property
    def feeds(self) -> FeedWatcher:
        """The flash proposals from feeds: ``hq.feeds.add(sources=[...], rules=[...])``."""
        return self._got().feeds

    @property
    def first_visits(self) -> FirstVisits:
        """Admits shoppers at a store whose gateway reported their unknown token."""
        return self._got().first_visits

    @property
    def election(self) -> Election:
        """Whether this worker leads (``election.leading``, ``election.role``)."""
        return self._got().election

    # ---- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("HqServer can be entered once: build a new one to start again")
        self._entered = True
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(*sys.exc_info())
            raise
        return self

    async def _open(self) -> tuple[socket.socket, HqDb, Keyring, HqService]:
        """The listening socket, the database, the keyring and the service on them; each
        closed with the server. The port first: a busy one is a one-line error before
        anything else is opened."""
        sock = await asyncio.to_thread(listen, self.http_host, self.http_port)
        self._stack.callback(sock.close)
        sqlite_file = HqDb.sqlite_path(self.db_url)
        if sqlite_file is not None:  # one worker per SQLite file
            claim = await asyncio.to_thread(claim_sqlite, sqlite_file)
            if claim is not None:
                self._stack.callback(claim.close)
        db = await asyncio.to_thread(HqDb, self.db_url)
        self._stack.callback(db.close)
        ring = await asyncio.to_thread(Keyring.load, self.key_path)
        signer = await asyncio.to_thread(ring.signer)
        service = (HqService(db, signer) if self.rotation_k is None
                   else HqService(db, signer, rotation_k=self.rotation_k))
        service.redeem = await asyncio.to_thread(RedeemKeys.load, self.key_path)
        return sock, db, ring, service

    async def _start(self) -> None:
        sock, db, ring, service = await self._open()
        sync, shard_mqtt, shard_syncs = await self._broker_files(service)
        acks, board = AckSender(), GatewayBoard()
        ingest = Ingest(db, reply=acks.offer)  # held feedback is acknowledged once stored
        first_visits = FirstVisits(service)  # tokens gateways could not resolve (hq.first_visit)
        router = Router([Route("events", topics.HQ_EVENTS_SHARED, ingest.on_events,
                               many=ingest.on_events_many),
                         Route("feedback", topics.HQ_FEEDBACK_SHARED, ingest.on_feedback),
                         Route("unknown", topics.HQ_UNKNOWN_SHARED, first_visits.on_unknown),
                         Route("state", STATE_FILTER, board.on_state_message)], reply=acks.offer)
        inbound: asyncio.Queue[aiomqtt.Message] = asyncio.Queue(INBOUND_QUEUE_MAX)
        link = MqttLink(self.mqtt, client_id=self.client_id, subscriptions=router.subscriptions,
                        handler=inbound.put)
        # each shard's link subscribes the same routes into the same queue
        shards = BrokerShards(link, {s.name: (MqttLink(
            shard_mqtt[s.name], client_id=self.client_id, subscriptions=router.subscriptions,
            handler=inbound.put), s.stores) for s in self.shard_settings})
        service.link = shards
        shortlinks = DbShortLinkStore(db, ingest.store_events)
        republisher, learned, leader_stats = (Republisher(service, self.republish_s), LearnStats(),
                                              LeaderStats())
        feeds = FeedWatcher(service, self.feed_settings, Approvals(db, self.approval))
        lock: LeaderLock = (PgLeaderLock(self.db_url, leader_stats) if db.dialect == "postgresql"
                            else SoleLeaderLock())
        election = Election(lock, lambda took_over: self._duties(service, republisher, learned,
                                                                 feeds, took_over=took_over),
                            every_s=self.leader_every_s, stats=leader_stats, worker=self.worker)
        keys = KeyWatcher(service, ring, self.keys_every_s, publish=election.leading.is_set)
        # a store's bundle lists its gateways: republish it when one is added or revoked
        # (the leader's republisher publishes; a follower's request waits for its round)
        service.credentials.gateway_listeners.append(republisher.request)
        pauser = AutoPauser(service, AuditLog(db), election.leading.is_set, self.autopause_every_s)
        alerts = AlertWatch(board, component_rules(
            keys=keys.stats, republisher=republisher.stats, leader=election.stats,
            broker_sync=sync.stats if sync is not None else None), source=f"hq:{self.worker}",
            sources=[pauser.conditions])
        self.retention = EventRetention(db, events_days=self.retention_days)
        passes = await asyncio.to_thread(PassDesk, self.passes)  # reads the pass certificate
        app = create_app(service, ingest, board, alerts=alerts, stats={
            "retention": self.retention.stats,
            "router": router.stats, "acks": acks.stats, "mqtt": link.stats,
            "first_visit": first_visits.stats,
            "shortlinks": shortlinks.stats, "republisher": republisher.stats, "learning": learned,
            "keys": keys.stats, "leader": election.stats, "autopause": pauser.stats,
            **({"links": self.landing_hosts.stats} if self.landing_hosts is not None else {}),
            **({"broker_sync": sync.stats} if sync is not None else {}),
            **({"shards": shards.stats} if self.shard_settings else {}),
            **{f"mqtt_shard_{name}": shards.links[name].stats for name in shard_mqtt},
            **{f"broker_sync_shard_{name}": s.stats for name, s in shard_syncs.items()}},
            max_body_bytes=self.max_body_bytes, approval=self.approval, feeds=feeds,
            wallet=WalletSettings(self.wallet_broker_url), passes=passes)
        app.state.role = lambda: election.role  # /health says "leader" or "follower"
        # short links: GET /s/{code} (QR and NFC clicks become `tap` events) and minting
        app.include_router(make_shortlink_router(shortlinks, landing_hosts=self.landing_hosts))
        app.include_router(make_mint_router(shortlinks, public_base_url=self.public_base_url,
                                            landing_hosts=self.landing_hosts))
        self._parts = _Parts(db, service, ingest, board, link, shards, shortlinks, app, app.state.metrics,
                             sync, keys, election, feeds, first_visits)
        self._http = http = HttpServer(await asyncio.to_thread(self._http_config, app))

        for each in shards.links.values():
            await self._stack.enter_async_context(each)
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        http_task = tg.create_task(http.run_until_stopped(sock), name="hq-http")
        self._tasks = [
            http_task,
            tg.create_task(router.serve(inbound), name="hq-ingest"),
            tg.create_task(acks.run(shards), name="hq-acks"),
            tg.create_task(keys.run(), name="hq-keys"),
            tg.create_task(election.run(), name="hq-leader"),
            tg.create_task(alerts.run(), name="hq-alerts"),
            tg.create_task(pauser.run(), name="hq-autopause"),
        ]
        if sync is not None:
            self._tasks.append(tg.create_task(sync.run(), name="hq-broker-sync"))
        self._tasks += [tg.create_task(s.run(), name=f"hq-broker-sync-{name}")
                        for name, s in shard_syncs.items()]
        if self.shard_settings:
            self._tasks.append(tg.create_task(shards.watch(on_up=republisher.request),
                                              name="hq-shards"))
        await http.wait_listening(http_task)
        if http.servers and http.servers[0].sockets:
            self.http_port = int(http.servers[0].sockets[0].getsockname()[1])
        # a broker that starts later is simply waited for (a timeout would end HQ, and
        # systemd would only restart it); HTTP serves /health meanwhile. A shard's broker
        # is not: its stores wait, the others are served (/health names it)
        await link.wait_connected(None)
        self.started.set()
        log.info("hq started", http_port=self.http_port, scheme=self.scheme, broker_port=self.mqtt.port,
                 client_id=self.client_id, worker=self.worker,
                 shards={s.name: s.mqtt.port for s in self.shard_settings} or None)

    async def _broker_files(self, service: HqService) -> tuple[
            BrokerSync | None, dict[str, MqttSettings], dict[str, BrokerSync]]:
        """The syncs of the brokers whose files HQ renders (``[broker]``'s, then each
        shard's: one registry, every broker), each flushed so that broker knows HQ and
        everyone before HQ connects; HQ's registry login (hq.{worker}) goes to each such
        broker configured without a username. Returns the default broker's sync, every
        shard's settings and the shards' syncs."""
        login: tuple[str, str] | None = None
        if ((self.broker_auth_dir is not None and self.mqtt.username is None)
                or any(s.auth_dir and s.mqtt.username is None for s in self.shard_settings)):
            login = await asyncio.to_thread(  # registered on first start
                ensure_hq_credential, service.credentials,
                self.key_path.parent / hq_login_file(self.worker), self.worker)
        sync: BrokerSync | None = None
        if self.broker_auth_dir is not None:
            sync = BrokerSync(service.credentials, BrokerAuthFiles(self.broker_auth_dir),
                              pid=self.broker_pid)
            if self.mqtt.username is None and login is not None:
                self.mqtt = dataclasses.replace(self.mqtt, username=login[0], password=login[1])
            await sync.flush()
        shard_mqtt: dict[str, MqttSettings] = {}
        syncs: dict[str, BrokerSync] = {}
        for shard in self.shard_settings:
            shard_mqtt[shard.name] = shard.mqtt
            if shard.auth_dir is None:
                continue
            syncs[shard.name] = BrokerSync(service.credentials, BrokerAuthFiles(shard.auth_dir),
                                           pid=shard.pid)
            if shard.mqtt.username is None and login is not None:
                shard_mqtt[shard.name] = dataclasses.replace(
                    shard.mqtt, username=login[0], password=login[1])
            await syncs[shard.name].flush()
        return sync, shard_mqtt, syncs

    async def _duties(self, service: HqService, republisher: Republisher, learned: LearnStats,
                      feeds: FeedWatcher, *, took_over: bool) -> None:
        """The leader's tasks, cancelled when it loses the lock. A worker that had to wait
        for the lock (another led) first trains and republishes every store's bundle."""
        async with asyncio.TaskGroup() as tg:
            if took_over:
                await takeover(service, train_model=self.learn_every_s > 0)
            tg.create_task(republisher.run(), name="hq-republisher")
            if self.learn_every_s > 0:
                tg.create_task(learn_loop(service, self.learn_every_s, learned), name="hq-learner")
            if self.retention is not None:
                tg.create_task(self.retention.run(), name="hq-retention")
            tg.create_task(feeds.run(), name="hq-feeds")  # idle rounds while no source is set

    def _http_config(self, app: FastAPI) -> uvicorn.Config:
        """uvicorn's settings, loaded here (in a worker thread: the TLS files are read)."""
        config = uvicorn.Config(
            app, host=self.http_host, port=self.http_port, log_level="warning", lifespan="off",
            timeout_graceful_shutdown=HTTP_SHUTDOWN_S,
            ssl_certfile=None if self.tls_cert is None else str(self.tls_cert),
            ssl_keyfile=None if self.tls_key is None else str(self.tls_key),
            # uvicorn's default believes X-Forwarded-* from 127.0.0.1: HQ believes nobody
            # unless told, so a local client cannot claim to be https or another address
            proxy_headers=bool(self.trusted_proxies),
            forwarded_allow_ips=self.trusted_proxies or "")
        config.load()
        return config

    @property
    def scheme(self) -> str:
        return "http" if self.tls_cert is None else "https"

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        self.started.clear()
        was_running = bool(self._tasks)
        http = self._http
        if http is not None and self._tasks:
            if self._parts is not None:  # long polls of remote brokers' syncs end now
                self._parts.app.state.broker_feed.close()
                self._parts.app.state.live.close()  # and the consoles' live streams
            http.should_exit = True  # uvicorn closes its sockets and connections itself
            await asyncio.wait(self._tasks[:1], timeout=HTTP_SHUTDOWN_S + 1.0)
        for task in self._tasks:
            task.cancel()
        try:  # the TaskGroup awaits every task, then the link closes, then the database
            return await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            self._tasks = []
            if was_running:  # a start that failed says why in one line, not also "stopped"
                log.info("hq stopped", client_id=self.client_id)

    async def run(self) -> None:
        """Serve until cancelled."""
        async with self:
            await asyncio.Event().wait()
