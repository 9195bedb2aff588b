"""Prometheus metrics per service, named `dex_<service>_<what>_<unit>`.

Owns metric naming and one `CollectorRegistry` per `ServiceMetrics`, so the five services of
the embedded mode live in one process without clashing and `/metrics` can serve several
registries one after the other. Asking twice for the same name returns the same collector;
asking for it with another type or other labels is a programming error (`ValueError`).

Counters: prometheus_client exports a counter `x` as `x_total`. With `unit="total"` the
exported sample is exactly `metric_name(...)` (`dex_matching_engine_commands_total`); with
another unit, e.g. `counter("received", "bytes", ...)`, it is `dex_gateway_received_bytes_total`,
the Prometheus convention for counters.

Every `ServiceMetrics` starts with two gauges: `dex_<svc>_ready_bool` (1 while the service is
ready; `Health` drives it) and `dex_<svc>_build_info{version="..."}` = 1.

Importing this module turns off prometheus_client's `_created` series process-wide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from dex import __version__

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The content type of `generate_latest`'s output (the text format 0.0.4)."""

# The `_created` series prometheus_client adds to counters and histograms would be names
# outside the `dex_<service>_<what>_<unit>` scheme, and Prometheus does not need them. The
# switch is process-wide; this process's metrics are all ours.
cast(Callable[[], None], disable_created_metrics)()  # untyped in prometheus_client

_SERVICE = re.compile(r"[a-z][a-z0-9-]*")
_PART = re.compile(r"[a-z][a-z0-9_]*")

Metric = Counter | Gauge | Histogram
M = TypeVar("M", Counter, Gauge, Histogram)


def metric_name(service: str, what: str, unit: str) -> str:
    """`dex_<service>_<what>_<unit>`, with the dashes of the service name as underscores."""
    if not _SERVICE.fullmatch(service):
        raise ValueError(f"service name must match {_SERVICE.pattern}, got {service!r}")
    for part in (what, unit):
        if not _PART.fullmatch(part):
            raise ValueError(f"metric name parts must match {_PART.pattern}, got {part!r}")
    return f"dex_{service.replace('-', '_')}_{what}_{unit}"


class ServiceMetrics:
    """The metrics of one service, in a registry of their own."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics: dict[str, tuple[Metric, tuple[str, ...]]] = {}
        self.ready = self.gauge("ready", "bool", "1 while the service is ready to serve")
        self.build_info = self.gauge("build", "info", "Build of the running code", ("version",))
        self.build_info.labels(version=__version__).set(1)
        # dex_<svc>_process_resident_memory_bytes, _cpu_seconds_total, _open_fds, ...: the
        # memory-near-limit and restart alerts read them
        ProcessCollector(namespace=f"dex_{service.replace('-', '_')}", registry=self.registry)

    def counter(self, what: str, unit: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """A counter exported as `dex_<svc>_<what>_total` (unit "total") or `..._<unit>_total`."""
        name = metric_name(self.service, what, unit)
        if unit == "total":
            name = name.removesuffix("_total")  # prometheus_client adds it back on export
        return self._get(
            Counter, name, labels, lambda ls: Counter(name, doc, ls, registry=self.registry)
        )

    def gauge(self, what: str, unit: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge named `dex_<svc>_<what>_<unit>`."""
        name = metric_name(self.service, what, unit)
        return self._get(
            Gauge, name, labels, lambda ls: Gauge(name, doc, ls, registry=self.registry)
        )

    def histogram(
        self,
        what: str,
        unit: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        """A histogram named `dex_<svc>_<what>_<unit>` (with `_bucket`, `_sum`, `_count`)."""
        name = metric_name(self.service, what, unit)
        return self._get(
            Histogram,
            name,
            labels,
            lambda ls: Histogram(name, doc, ls, registry=self.registry, buckets=tuple(buckets)),
        )

    def render(self) -> tuple[bytes, str]:
        """The text exposition of this registry and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE

    def _get(
        self, kind: type[M], name: str, labels: Sequence[str], make: Callable[[tuple[str, ...]], M]
    ) -> M:
        """The metric `name`, made by `make(labelnames)` the first time it is asked for."""
        labelnames = tuple(labels)
        known = self._metrics.get(name)
        if known is not None:
            metric, known_labels = known
            if not isinstance(metric, kind) or known_labels != labelnames:
                raise ValueError(
                    f"metric {name} already exists as a {type(metric).__name__} with labels "
                    f"{known_labels}; asked for a {kind.__name__} with labels {labelnames}"
                )
            return metric
        created = make(labelnames)
        self._metrics[name] = (created, labelnames)
        return created


def render_all(metrics: Sequence[ServiceMetrics]) -> bytes:
    """The exposition of several services one after the other (each registry once)."""
    seen: set[int] = set()
    parts: list[bytes] = []
    for service_metrics in metrics:
        if id(service_metrics.registry) not in seen:
            seen.add(id(service_metrics.registry))
            parts.append(generate_latest(service_metrics.registry))
    return b"".join(parts)
