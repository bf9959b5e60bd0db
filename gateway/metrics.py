"""One metrics source per component, read at scrape time by two exporters.

Each component keeps its counters where it always did (a ``stats`` dataclass or dict,
or a few attributes); :func:`sources` names, per component, a prefix and a reader that
returns those counters as they are. :func:`samples` flattens every reader the same
way (numbers become samples, a dict of numbers becomes one labelled family, text and
``None`` are skipped), and both exporters read only that:

* :func:`snapshot`: the flat ``{name: value}`` of the
  :class:`~aislecast.kernel.schema.GatewayState`, retained on the broker (HQ's console)
  and in the local report (``aislecast gateway health``, :mod:`gateway.report`); a
  labelled family appears as its total and as ``name_label`` entries.
* :class:`GatewayCollector`: Prometheus exposition for a per-gateway
  ``CollectorRegistry``, served by :class:`MetricsServer` (asyncio, no thread).

Names are ``{component}_{counter}`` (the gateway's own counters bare); Prometheus
adds ``aislecast_gateway_`` in front and ``_total`` to counters.
Which names are gauges is said once, in :data:`GAUGES`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Self

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aislecast.kernel.errors import ListenError
from aislecast.kernel.logs import get_logger
from edge.scanner import Scanner

if TYPE_CHECKING:
    from types import TracebackType

    from aislecast.kernel.mqtt import MqttLink
    from gateway.parts import GatewayParts

__all__ = ["GAUGES", "NAMESPACE", "GatewayCollector", "MetricsServer", "Sample", "Source",
           "registry", "samples", "snapshot", "sources"]

log = get_logger(__name__)

NAMESPACE: Final = "aislecast_gateway"
# Everything else is a counter (only ever grows while the process lives).
GAUGES: Final = frozenset({
    "shoppers_present", "publisher_awaiting_ack", "outbox_rows", "bundle_version",
    "bundle_delta_seq", "decisions_campaigns_live", "decisions_campaigns_rejected",
    "identity_epochs", "visits_open", "visits_downtime_s", "schedule_campaigns",
    "fleet_beacons_planned", "fleet_beacons_heard", "fleet_beacons_unheard",
    "fleet_beacons_low_battery", "fleet_beacon_battery_min_mv", "taps_reader_up",
    "scanner_last_advert_age_s", "scanner_fallback_active", "keys_pinned", "uptime_s",
    "connected_s", "pseudonyms_day_keys", "first_visit_pending",
})
_LABEL: Final = "reason"

Source = tuple[str, Callable[[], object]]  # (component prefix, reader of its counters)


@dataclass(frozen=True, slots=True)
class Sample:
    name: str  # "{component}_{counter}"
    value: float
    label: str | None = None  # the key inside a labelled family


def _scanner(scanner: Scanner) -> dict[str, object]:
    # this host's monotonic stamps are no use to anyone else
    return {k: v for k, v in scanner.stats().items() if not k.endswith("_monotonic")}


def sources(parts: GatewayParts, link: MqttLink, scanner: Scanner,
            lifecycle: Callable[[], Mapping[str, float | None]]) -> list[Source]:
    """Every component of one running gateway, with the prefix its counters get;
    ``lifecycle`` is the process's own (``uptime_s``, ``connected_s``: None when down)."""
    p = parts
    return [
        # the gateway's own counters keep their bare names (HQ's console reads them)
        ("", lambda: {**dataclasses.asdict(p.counters),
                             "shoppers_present": len(p.presence.present()), **lifecycle()}),
        ("triggers", lambda: p.triggers.stats),
        ("recorder", lambda: p.recorder.stats),
        ("publisher", lambda: {**dataclasses.asdict(p.publisher.stats),
                               "awaiting_ack": p.publisher.awaiting_ack}),
        ("outbox", lambda: {"rows": len(p.outbox), "dropped_full": p.outbox.dropped_full,
                            "dropped_expired": p.outbox.dropped_expired}),
        ("mqtt", lambda: link.stats),
        ("bundle", lambda: {"version": p.bundles.version, "delta_seq": p.bundles.delta_seq,
                            "redelivered": p.bundles.redelivered, "rejected": p.bundles.rejected}),
        ("keys", lambda: {"pinned": p.bundles.keys.stats.pinned,
                          "learned": p.bundles.keys.stats.learned,
                          "retired": p.bundles.keys.stats.retired}),
        ("decisions", lambda: {"campaigns_live": p.decider.live,
                               "campaigns_rejected": len(p.decider.rejected)}),
        ("identity", lambda: {"epochs": len(p.identity.epochs)}),
        ("presence", lambda: {"events_emitted": p.presence.events_emitted,
                              "dropped": p.presence.dropped}),
        ("pool", lambda: p.pool.stats),
        ("first_visit", lambda: p.first_visits.stats),  # unknown tokens reported (gateway.first_visit)
        ("visits", lambda: {"open": len(p.visits), "resumed": p.visits.resumed,
                            "downtime_s": p.visits.downtime_s}),
        ("schedule", lambda: {"campaigns": len(p.schedule), "openings": p.schedule.openings}),
        ("consent", lambda: {"admitted": p.consent.stats.admitted, "erased": p.consent.stats.erased,
                             "reapplied": p.consent.stats.reapplied,
                             "unprofiled": p.consent.stats.unprofiled,
                             "profiles_dropped": p.consent.stats.profiles_dropped}),
        ("retention", lambda: {"runs": p.retention.runs, "events_purged": p.retention.events_purged,
                               "visits_purged": p.retention.visits_purged,
                               "charges_purged": p.retention.charges_purged,
                               "lifetime_purged": p.retention.lifetime_purged}),
        ("pseudonyms", lambda: {"day_keys": len(p.decider.ledger.ps.days()),
                                "keys_destroyed": p.decider.ledger.ps.destroyed,
                                "stale_peer_charges": p.decider.ledger.stale_remote}),
        ("fleet", lambda: p.fleet.metrics(time.monotonic())),
        ("taps", p.taps.metrics),
        ("scanner", lambda: _scanner(scanner)),
    ]


def _fields(stats: object) -> Iterator[tuple[str, object]]:
    if isinstance(stats, Mapping):
        yield from stats.items()
    elif dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        for f in dataclasses.fields(stats):
            yield f.name, getattr(stats, f.name)
    else:
        raise TypeError(f"metrics source returned {type(stats).__name__}: a dict or a dataclass")


def _number(v: object) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return None  # text (state, last error) and None (nothing yet) are not samples


def samples(srcs: list[Source]) -> list[Sample]:
    out: list[Sample] = []
    for prefix, read in srcs:
        for key, value in _fields(read()):
            name = f"{prefix}_{key}" if prefix else key
            if isinstance(value, Mapping):
                out += [Sample(name, n, str(k)) for k, v in value.items()
                        if (n := _number(v)) is not None]
                if not value:  # an empty family still exists (scrapers see a 0)
                    out.append(Sample(name, 0.0, ""))
            elif (n := _number(value)) is not None:
                out.append(Sample(name, n))
    return out


def snapshot(srcs: list[Source]) -> dict[str, float]:
    """The flat metrics of the retained state report."""
    out: dict[str, float] = {}
    for s in samples(srcs):
        if s.label is None:
            out[s.name] = s.value
            continue
        out[s.name] = out.get(s.name, 0.0) + s.value
        if s.label:
            out[f"{s.name}_{s.label}"] = s.value
    return out


class GatewayCollector(Collector):
    """Reads the components at every scrape: nothing cached, nothing double-counted."""

    def __init__(self, srcs: list[Source]) -> None:
        self._srcs = srcs

    def describe(self) -> list[Metric]:
        return []  # no names checked at registration: collect() is the truth

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for s in samples(self._srcs):
            fam = families.get(s.name)
            if fam is None:
                labels = [_LABEL] if s.label is not None else []
                full = f"{NAMESPACE}_{s.name}"
                fam = (GaugeMetricFamily(full, s.name, labels=labels) if s.name in GAUGES
                       else CounterMetricFamily(full, s.name, labels=labels))
                families[s.name] = fam
            if s.label is None:
                fam.add_metric([], s.value)
            elif s.label:
                fam.add_metric([s.label], s.value)
        yield from families.values()


def registry(srcs: list[Source]) -> CollectorRegistry:
    """A registry of its own per gateway (tests run many in one process)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(srcs))
    return reg


class MetricsServer:
    """``GET /metrics`` (any path, really) in the Prometheus text format, on asyncio."""

    def __init__(self, reg: CollectorRegistry, port: int, host: str = "127.0.0.1") -> None:
        self._reg = reg
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        if self._server is not None:
            raise RuntimeError("MetricsServer is not reentrant")
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise ListenError.of(self.host, self.port, exc, flag="[metrics] port") from None
        self.port = self._server.sockets[0].getsockname()[1]  # port 0: the one given
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                while (await reader.readline()).strip():  # request line and headers
                    pass
            body = generate_latest(self._reg)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; "
                         b"charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % len(body) + body)
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("metrics request dropped: %s", exc)
        finally:
            writer.close()
