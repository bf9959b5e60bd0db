"""Counters as plain dataclasses, exported to Prometheus and to JSON from the same objects.

Each component keeps its numbers in one stats dataclass and bumps them with ``+= 1`` on
its hot path (no library call, no lock: everything runs on one event loop). A process
hands its components' stats objects to :class:`StatsCollector`, registered on a
``CollectorRegistry`` of its own (never the global one: tests run many processes' worth
of components in one interpreter), and every numeric field is exposed at scrape time.
Because the collector walks the dataclass fields, a counter added to a component shows
up in ``/metrics`` and in the JSON :func:`snapshot` without anyone listing it again.

Declare fields with :func:`count` (a counter), :func:`gauge` (a value that goes up and
down), :func:`by` (a counter per label value, a ``dict``) and :func:`gauge_by` (a gauge
per label value); plain ``int`` fields of a dataclass that does not use them
(``MqttLink``'s stats) are exposed as counters::

    @dataclass(slots=True)
    class IngestStats:
        batches: int = count("event batches accepted")
        bad_payloads: dict[str, int] = by("kind", "payloads dropped as undecodable")

    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector("aislecast_hq", {"ingest": ingest.stats}))
    prometheus_client.generate_latest(registry)
    # aislecast_hq_ingest_batches_total 12.0
    # aislecast_hq_ingest_bad_payloads_total{kind="events"} 1.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["StatsCollector", "by", "count", "gauge", "gauge_by", "metric_names", "snapshot"]

_KIND: Final = "aislecast.kind"
_DOC: Final = "aislecast.doc"
_LABELS: Final = "aislecast.labels"


def count(doc: str) -> int:
    """A counter field (starts at 0, only grows)."""
    return dataclasses.field(default=0, metadata={_KIND: "counter", _DOC: doc})


def gauge(doc: str, default: float = 0) -> Any:
    """A gauge field: a current value (a queue's depth, a time)."""
    return dataclasses.field(default=default, metadata={_KIND: "gauge", _DOC: doc})


def by(labels: str | tuple[str, ...], doc: str) -> Any:
    """A counter per label value: a ``dict`` keyed by the label's value (a tuple of
    values for several labels)."""
    names = (labels,) if isinstance(labels, str) else labels
    return dataclasses.field(default_factory=dict,
                             metadata={_KIND: "counter", _DOC: doc, _LABELS: names})


def gauge_by(labels: str | tuple[str, ...], doc: str) -> Any:
    """A gauge per label value (a ``dict``): e.g. whether each broker link is up."""
    names = (labels,) if isinstance(labels, str) else labels
    return dataclasses.field(default_factory=dict,
                             metadata={_KIND: "gauge", _DOC: doc, _LABELS: names})


def _numeric(field: dataclasses.Field[Any], value: Any) -> str | None:
    """The Prometheus type of a field, or None for fields that are not numbers."""
    kind = field.metadata.get(_KIND)
    if kind is not None:
        return str(kind)
    if isinstance(value, bool) or not isinstance(value, int | float | dict):
        return None
    if isinstance(value, dict) and not all(isinstance(v, int | float) for v in value.values()):
        return None
    return "counter"


def _items(stats: object) -> Iterator[tuple[dataclasses.Field[Any], str, Any]]:
    for field in dataclasses.fields(stats):  # type: ignore[arg-type]
        value = getattr(stats, field.name)
        kind = _numeric(field, value)
        if kind is not None:
            yield field, kind, value


def _family(name: str, kind: str, doc: str, labels: tuple[str, ...]) -> Metric:
    if kind == "gauge":
        return GaugeMetricFamily(name, doc, labels=labels)
    return CounterMetricFamily(name, doc, labels=labels)


class StatsCollector(Collector):
    """Exposes every numeric field of each stats object as ``{namespace}_{source}_{field}``
    (counters get Prometheus' ``_total`` suffix). ``sources`` maps a component's name to
    its stats dataclass instance."""

    def __init__(self, namespace: str, sources: Mapping[str, object]) -> None:
        for source, stats in sources.items():
            if not dataclasses.is_dataclass(stats) or isinstance(stats, type):
                raise TypeError(f"stats source {source!r} is not a dataclass instance")
        self.namespace = namespace
        self.sources = dict(sources)

    def collect(self) -> Iterator[Metric]:
        for source, stats in self.sources.items():
            for field, kind, value in _items(stats):
                labels: tuple[str, ...] = field.metadata.get(_LABELS, ("key",))
                doc = field.metadata.get(_DOC, f"{source} {field.name.replace('_', ' ')}")
                fam = _family(f"{self.namespace}_{source}_{field.name}", kind, doc,
                              labels if isinstance(value, dict) else ())
                if isinstance(value, dict):
                    for key, n in sorted(value.items(), key=lambda kv: str(kv[0])):
                        values = key if isinstance(key, tuple) else (key,)
                        fam.add_metric([str(v) for v in values], n)  # type: ignore[attr-defined]
                else:
                    fam.add_metric([], value)  # type: ignore[attr-defined]
                yield fam


def metric_names(namespace: str, source: str, stats: object) -> list[str]:
    """The exposition names of ``stats``' fields (``_total`` on counters), for tests."""
    return [f"{namespace}_{source}_{f.name}" + ("_total" if kind == "counter" else "")
            for f, kind, _ in _items(stats)]


def snapshot(sources: Mapping[str, object]) -> dict[str, dict[str, Any]]:
    """The same numbers as JSON-ready dicts, ``{source: {field: value}}``; labelled
    counters with several labels are keyed by their values joined with ``|``."""
    out: dict[str, dict[str, Any]] = {}
    for source, stats in sources.items():
        row: dict[str, Any] = {}
        for field, _, value in _items(stats):
            if isinstance(value, dict):
                row[field.name] = {"|".join(map(str, k)) if isinstance(k, tuple) else str(k): v
                                   for k, v in value.items()}
            else:
                row[field.name] = value
        out[source] = row
    return out
