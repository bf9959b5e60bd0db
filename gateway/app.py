"""The store gateway daemon: scanner -> identity -> presence -> decisions -> outbox -> MQTT.

One :class:`Gateway` per process, an async context manager in aiomqtt's style::

    async with Gateway(cfg, scanner_factory) as gw:
        ...  # running: gw.parts, gw.link, gw.scanner, gw.metrics()

``__init__`` only remembers its arguments. ``__aenter__`` opens the parts (database,
persisted bundle: :class:`~gateway.parts.GatewayParts`, in a worker thread), the MQTT
link, the scanner and the metrics endpoint, and starts the named tasks of one
``TaskGroup``; ``__aexit__`` cancels and awaits them, says ``offline`` and closes the
database. A gateway is entered once.

Under systemd (a :class:`~aislecast.kernel.notify.Notifier` given, ``Type=notify``) it
says ``READY=1`` once a bundle is in force (the persisted one at once; a new gateway's
first from the broker), feeds the watchdog from its own event loop only while
:func:`gateway.health.scanner_problem` finds nothing wrong, and says ``STOPPING=1``
first thing on the way out (SIGTERM). :meth:`Gateway.run` is the same for a task that
runs until cancelled. The scanner runs whether or not the broker is up (events queue
in the SQLite outbox); bundles arrive retained and signed over MQTT.

Every ``health_every_s`` it publishes its retained state report and writes the same
report, with what it knows of its link and bundle, to ``DATA_DIR/state.json``
(:mod:`gateway.report`), which ``aislecast gateway health`` judges; the last one, on
the way out, says ``stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Self

import aiomqtt

from aislecast import __version__
from aislecast.kernel import topics
from aislecast.kernel.logs import get_logger
from aislecast.kernel.mqtt import MqttLink
from aislecast.kernel.notify import Notifier
from aislecast.kernel.schema import SCHEMA_VERSION, GatewayState, encode
from edge.advert import Advertisement
from edge.scanner import AdvertCallback, Scanner
from gateway.config import GatewayConfig
from gateway.decisions import Decision
from gateway.health import live_judgement, scanner_problem
from gateway.inbound import InboundRouter
from gateway.metrics import MetricsServer, Source, registry, snapshot, sources
from gateway.parts import GatewayParts
from gateway.pooling import POOL_EXPIRY_S
from gateway.report import BundleReport, LinkReport, LocalReport, ReportWriter, report_path

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Gateway", "ScannerFactory"]

log = get_logger(__name__)

ScannerFactory = Callable[[AdvertCallback], Scanner]
_TICK_S = 0.5
_TICK_SLICE = 32  # presence events handled per loop turn in a tick (~2 ms of work)
_OFFLINE_TIMEOUT_S = 2.0  # the last `offline` report on the way out


class _Running:
    """What exists only between ``__aenter__`` and ``__aexit__``."""

    def __init__(self, parts: GatewayParts, inbound: InboundRouter, link: MqttLink,
                 scanner: Scanner) -> None:
        self.parts, self.inbound, self.link, self.scanner = parts, inbound, link, scanner
        self.entered_at = time.monotonic()
        self.connected_at = 0.0  # monotonic time of the current connection
        self.bundles_at_connect = 0  # inbound.bundles_in when it began
        self.report_due = asyncio.Event()  # write the local report now (a new connection)
        self.sources: list[Source] = sources(parts, link, scanner, self.lifecycle)
        self.stack = contextlib.AsyncExitStack()
        self.tg = asyncio.TaskGroup()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(self.tg.create_task(coro, name=name))

    def lifecycle(self) -> dict[str, float | None]:
        now = time.monotonic()
        return {"uptime_s": now - self.entered_at,
                "connected_s": now - self.connected_at if self.link.connected.is_set() else None}


class Gateway:
    def __init__(self, cfg: GatewayConfig, scanner_factory: ScannerFactory, *,
                 metrics_port: int | None = None, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier  # systemd's notify socket (READY, WATCHDOG, STOPPING)
        self._scanner_factory = scanner_factory
        self.metrics_port = metrics_port  # None: no HTTP endpoint; 0: any free port
        self.metrics_server: MetricsServer | None = None
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.started = asyncio.Event()  # entered: parts, link and scanner exist
        self.ready = asyncio.Event()  # a bundle is in force
        self._run: _Running | None = None
        self._entered = False
        self._reports = ReportWriter(report_path(cfg))
        self._report_error = ""  # the last failed write, logged once

    # ---- what runs ------------------------------------------------------------------
    def _running(self) -> _Running:
        if self._run is None:
            raise RuntimeError("the gateway is not running: use `async with Gateway(...)`")
        return self._run

    @property
    def parts(self) -> GatewayParts:
        return self._running().parts

    @property
    def link(self) -> MqttLink:
        return self._running().link

    @property
    def scanner(self) -> Scanner:
        return self._running().scanner

    def on_advert(self, adv: Advertisement) -> None:
        """Scanner callback: prefilter, decode, identity, presence (gateway.adverts)."""
        self.parts.adverts(adv)

    def interaction(self, kind: str, inbox: str | None, zone: str | None, tags: Sequence[str],
                    detail: dict[str, float | int | str]) -> Decision | None:
        return self.parts.triggers.interaction(kind, inbox, zone, tags, detail)

    @property
    def sources(self) -> list[Source]:
        """Every component's counters, as :func:`gateway.metrics.registry` takes them."""
        return self._running().sources

    def metrics(self) -> dict[str, float]:
        """Every component's counters, flat (:mod:`gateway.metrics`)."""
        return snapshot(self._running().sources)

    def health_problem(self) -> str | None:
        """What is wrong with this running gateway (its scanner), or None; read from the
        same metrics the state report and Prometheus carry."""
        return scanner_problem(self.metrics(), self.cfg.scanner.silent_after_s)

    def status_line(self) -> str:
        """One line for ``systemctl status``."""
        run = self._running()
        broker = ("broker connected" if run.link.connected.is_set()
                  else "broker not connected, events wait in the outbox")
        if run.parts.bundles.current is None:
            return f"starting: waiting for the first bundle from HQ ({broker})"
        return f"running: bundle v{run.parts.bundles.version}, {broker}"

    def _notify(self, kind: str, data: dict[str, Any]) -> None:
        for fn in self.listeners:
            fn(kind, data)

    def _gateway_state(self, status: str, run: _Running | None) -> GatewayState:
        """The state report; without ``run`` (the MQTT will, made before the link
        exists) it carries no metrics."""
        metrics = snapshot(run.sources) if run is not None else {}
        problem, warning = ((None, None) if run is None or status != "online"
                            else live_judgement(metrics, self._bundle_report(run), self.cfg))
        beacons, omitted = (run.parts.fleet.report(time.monotonic()) if run is not None
                            else (None, 0))
        return GatewayState(
            v=SCHEMA_VERSION, gateway=self.cfg.gateway, store=self.cfg.store,
            status=status, version=__version__,  # type: ignore[arg-type]
            bundle_version=run.parts.bundles.version if run is not None else 0,
            metrics=metrics, ts=time.time(), problem=problem, warning=warning,
            beacons=beacons, beacons_omitted=omitted)

    def _state(self, status: str, run: _Running | None = None) -> bytes:
        """The retained state report, encoded."""
        return encode(self._gateway_state(status, run))

    # ---- lifecycle ------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Gateway is entered once; make a new one to run again")
        self._entered = True
        cfg, loop = self.cfg, asyncio.get_running_loop()

        def bundle_applied() -> None:  # on the loop, or in the thread that opens the parts
            loop.call_soon_threadsafe(self._bundle_applied)

        parts = await asyncio.to_thread(GatewayParts.open, cfg, notify=self._notify,
                                        on_bundle=bundle_applied)
        inbound = InboundRouter(parts)
        state_topic = topics.gateway_state(cfg.store, cfg.gateway)
        link = MqttLink(
            cfg.broker.mqtt_settings(),
            client_id=f"gw-{cfg.store}-{cfg.gateway}", subscriptions=inbound.subscriptions(),
            handler=inbound, on_connect=self._on_connect,
            will=aiomqtt.Will(state_topic, self._state("offline"), qos=1, retain=True))
        run = self._run = _Running(parts, inbound, link, self._scanner_factory(self.on_advert))
        try:
            if self.notifier is not None:
                await run.stack.enter_async_context(self.notifier)
            await run.stack.enter_async_context(link)
            await run.stack.enter_async_context(run.scanner)
            if self.metrics_port is not None:
                self.metrics_server = await run.stack.enter_async_context(
                    MetricsServer(registry(run.sources), self.metrics_port))
            await run.tg.__aenter__()
        except BaseException:
            await self._close(run)
            raise
        run.start("gw-publisher", parts.publisher.run(link))
        run.start("gw-presence-tick", self._ticker(run))
        run.start("gw-health", self._health(run))
        if cfg.nfc.device is not None:  # never raises: BLE carries on
            run.start("gw-nfc-reader", parts.taps.run())
        if self.notifier is not None and self.notifier.enabled:
            run.start("gw-systemd", self._systemd(self.notifier))
        self.started.set()
        self._bundle_applied()  # the persisted one, if any
        return self

    def _bundle_applied(self) -> None:
        """``ready`` once running with a bundle in force (never before ``started``)."""
        if self.started.is_set() and self._running().parts.bundles.current is not None:
            self.ready.set()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        run = self._running()
        try:
            if self.notifier is not None:
                await self.notifier.stopping("stopping: saying offline, flushing the outbox")
            for task in run.tasks:  # they run forever: cancelled, then awaited by the group
                task.cancel()
            if exc_type is asyncio.CancelledError:  # the group's own cancel, or ours
                await run.tg.__aexit__(exc_type, exc, tb)
            else:  # the body's error stays the body's (not wrapped in an ExceptionGroup)
                await run.tg.__aexit__(None, None, None)
        finally:
            await self._offline(run)
            await self._write_report(run, stopped=True)
            await self._close(run)

    async def _offline(self, run: _Running) -> None:
        if not run.link.connected.is_set():
            return
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(_OFFLINE_TIMEOUT_S):
                await run.link.publish(topics.gateway_state(self.cfg.store, self.cfg.gateway),
                                       self._state("offline", run), retain=True)

    async def _close(self, run: _Running) -> None:
        run.inbound.closed = True  # the database closes before the link
        try:
            run.parts.close()
        finally:
            await run.stack.aclose()

    async def run(self) -> None:
        """Run until cancelled; on cancel, publish ``offline`` and close everything."""
        async with self:
            await asyncio.Event().wait()

    # ---- tasks ----------------------------------------------------------------------
    async def _systemd(self, n: Notifier) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(n.watchdog(self.health_problem, healthy_status=self.status_line))
            await self.ready.wait()
            await n.ready(self.status_line())

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        if self._run is not None:
            self._run.connected_at = time.monotonic()
            self._run.bundles_at_connect = self._run.inbound.bundles_in
            self._run.report_due.set()
        await client.publish(topics.gateway_state(self.cfg.store, self.cfg.gateway),
                             self._state("online", self._run), qos=1, retain=True)

    async def _ticker(self, run: _Running) -> None:
        parts, link = run.parts, run.link
        while True:
            await asyncio.sleep(_TICK_S)
            now = time.monotonic()
            # exits come due in bulk at a tick; hand them over in slices so adverts and
            # publishes in between wait microseconds, not the whole batch (p99 at 500/s)
            due = parts.presence.tick(now)
            for i in range(0, len(due), _TICK_SLICE):
                parts.triggers.presence_events(due[i:i + _TICK_SLICE])
                await asyncio.sleep(0)
            parts.triggers.schedule_tick(time.time())
            parts.visits.sync(time.time(), parts.presence.present())
            parts.retention.tick(time.time())  # day-old history, the cap ledger (gateway.retention)
            parts.beacon_health(parts.fleet.check(now))
            if link.connected.is_set():
                await self._report_unknown(parts, link)
            if parts.pool.due(now) and link.connected.is_set():
                for payload in parts.pool.build(now, time.time()):
                    try:
                        await link.publish(parts.pool.topic, payload, qos=0, expiry_s=POOL_EXPIRY_S)
                    except aiomqtt.MqttError as exc:
                        log.debug("presence summary publish failed: %s", exc)

    @staticmethod
    async def _report_unknown(parts: GatewayParts, link: MqttLink) -> None:
        """The tokens no table resolved since the last tick, to HQ (gateway.first_visit)."""
        fv = parts.first_visits
        while tokens := fv.take():
            try:
                await link.publish(fv.topic, fv.payload(tokens), qos=1)
            except aiomqtt.MqttError as exc:
                fv.failed(tokens)
                log.debug("unknown-token report not sent: %s", exc)
                return
            fv.sent(tokens)

    async def _health(self, run: _Running) -> None:
        topic = topics.gateway_state(self.cfg.store, self.cfg.gateway)
        while True:
            run.report_due.clear()
            await self._write_report(run)
            try:  # the next report is due in health_every_s, or now after a connect
                async with asyncio.timeout(self.cfg.health_every_s):
                    await run.report_due.wait()
                continue  # a new connection: _on_connect has just published
            except TimeoutError:
                pass
            if run.link.connected.is_set():
                try:
                    await run.link.publish(topic, self._state("online", run), retain=True)
                except aiomqtt.MqttError as exc:
                    log.debug("health publish failed: %s", exc)

    # ---- the local report (gateway.report) ----------------------------------------------
    def _report(self, run: _Running, *, stopped: bool) -> LocalReport:
        link = run.link
        connected = link.connected.is_set() and not stopped
        return LocalReport(
            pid=os.getpid(), stopped=stopped,
            state=self._gateway_state("online" if connected else "offline", run),
            link=LinkReport(connected=connected, connects=link.stats.connects,
                            last_error=link.stats.last_error, login_refused=link.login_refused),
            bundle=self._bundle_report(run))

    def _bundle_report(self, run: _Running) -> BundleReport:
        bundles = run.parts.bundles
        return BundleReport(
            received_since_connect=run.inbound.bundles_in - run.bundles_at_connect,
            refused=dict(bundles.rejected), last_refused=bundles.last_rejected,
            subscription_refused=run.link.refused_subscriptions.get(topics.bundle(self.cfg.store)))

    async def _write_report(self, run: _Running, *, stopped: bool = False) -> None:
        """Write the local report in a worker thread; a failure is logged (once per
        cause), never raised: the gateway's work does not depend on it."""
        try:
            await asyncio.to_thread(self._reports.write, self._report(run, stopped=stopped))
        except OSError as exc:
            if str(exc) != self._report_error:
                log.warning("cannot write the state report %s: %s", self._reports.path, exc)
            self._report_error = str(exc)
        else:
            self._report_error = ""
