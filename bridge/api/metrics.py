"""Prometheus metrics for ``GET /metrics`` (prometheus-client, text exposition format 0.0.4).

Two kinds, on one registry per app (no process-global state, so two apps in
one process, as in the tests, never collide):

- **API requests**, counted by this process as they are served
  (:class:`~bridge.api.context.RequestContextMiddleware` calls
  :meth:`Metrics.observe_request`): ``bridge_api_requests_total`` and
  ``bridge_api_request_duration_seconds`` by method, route *template* and status.
- **Pipeline and outbox state, derived from the database at scrape time**
  (:class:`DatabaseCollector`) and cached for ``cache_seconds``: the
  database is the truth every bridge process shares, so these survive
  restarts and agree whichever process is scraped, with no counter to keep in
  step inside the pipeline. Gauges, since a file moves from ``landed`` to
  ``processed``:

  - ``bridge_inbound_files{channel,status}``, ``bridge_inbound_messages{channel}``
  - ``bridge_records{channel,type,outcome}`` (outcome ``created``: version 1,
    ``updated``: changed since; channel ``api`` for records written through the API)
  - ``bridge_failures{channel,category,status}``
  - ``bridge_deliveries{destination,status}``
  - ``bridge_outbox_backlog{destination}`` (pending deliveries plus events not
    yet fanned out) and ``bridge_outbox_oldest_age_seconds{destination}``
  - histograms ``bridge_drop_to_commit_seconds{channel}`` (inbound
    ``received_at`` -> ``processed_at``) and
    ``bridge_commit_to_delivered_seconds{destination}`` (``events.created_at`` ->
    ``deliveries.delivered_at``), bucketed in SQL. The relay prunes delivered
    rows after its retention period, so the latter can go down: Prometheus
    reads that as a counter reset, which ``rate()`` handles.

Each scrape of the derived metrics scans ``inbound_files``, ``records`` and
``deliveries``: with millions of rows that is seconds of database time, which
is what the cache bounds (one scan per ``cache_seconds``, whatever the number of
scrapers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text

from bridge.db import Database, utcnow

__all__ = ["BUCKETS", "DatabaseCollector", "Metrics"]

log = logging.getLogger(__name__)

#: latency buckets, seconds: from a fast in-process commit to an hour-long outage
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def _seconds(db: Database, later: str, earlier: str) -> str:
    if db.is_postgres:
        return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
    # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text, which julianday() reads
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def _bucket_sql(db: Database, label: str, duration: str, source: str) -> str:
    cases = ", ".join(f"SUM(CASE WHEN d <= {b} THEN 1 ELSE 0 END)" for b in BUCKETS)
    return (f"SELECT {label}, COUNT(*), COALESCE(SUM(d), 0), {cases} "
            f"FROM (SELECT {label}, {duration} AS d {source}) t GROUP BY {label}")


class DatabaseCollector(Collector):
    """Pipeline and outbox state read from the database, cached for ``cache_seconds``."""

    def __init__(self, db: Database, cache_seconds: float = 10.0) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._cached: list[Metric] | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return []  # no scrape at registration time

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._at >= self.cache_seconds:
                self._cached = self._read()
                self._at = time.monotonic()
            cached = self._cached
        yield from cached

    def _read(self) -> list[Metric]:
        db = self.db
        out: list[Metric] = []
        with db.read() as conn:
            def rows(sql: str) -> list[Any]:
                return list(conn.execute(text(sql)).all())

            files = GaugeMetricFamily("bridge_inbound_files", "landed inbound units by channel and status",
                                      labels=["channel", "status"])
            messages = GaugeMetricFamily("bridge_inbound_messages", "messages read from inbound units",
                                         labels=["channel"])
            per_channel: dict[str, int] = {}
            for channel, status, n, msgs in rows(
                    "SELECT channel, status, COUNT(*), COALESCE(SUM(message_count), 0) FROM inbound_files "
                    "GROUP BY channel, status"):
                files.add_metric([channel, status], n)
                per_channel[channel] = per_channel.get(channel, 0) + int(msgs)
            for channel, n in per_channel.items():
                messages.add_metric([channel], n)
            out += [files, messages]

            recs = GaugeMetricFamily("bridge_records", "canonical records by source channel, type and outcome",
                                     labels=["channel", "type", "outcome"])
            for channel, rtype, outcome, n in rows(
                    "SELECT COALESCE(i.channel, 'api'), r.type, "
                    "CASE WHEN r.version = 1 THEN 'created' ELSE 'updated' END AS outcome, COUNT(*) "
                    "FROM records r LEFT JOIN inbound_files i ON i.id = r.inbound_id "
                    "GROUP BY COALESCE(i.channel, 'api'), r.type, outcome"):
                recs.add_metric([channel, rtype, outcome], n)
            out.append(recs)

            fails = GaugeMetricFamily("bridge_failures", "quarantined messages by channel, category and status",
                                      labels=["channel", "category", "status"])
            for channel, category, status, n in rows(
                    "SELECT channel, category, status, COUNT(*) FROM failures GROUP BY channel, category, status"):
                fails.add_metric([channel, category, status], n)
            out.append(fails)

            dels = GaugeMetricFamily("bridge_deliveries", "outbox deliveries by destination and status",
                                     labels=["destination", "status"])
            for dest, status, n in rows(
                    "SELECT destination, status, COUNT(*) FROM deliveries GROUP BY destination, status"):
                dels.add_metric([dest, status], n)
            out.append(dels)

            backlog = GaugeMetricFamily("bridge_outbox_backlog",
                                        "events waiting for a destination: pending deliveries plus events "
                                        "not yet fanned out", labels=["destination"])
            oldest = GaugeMetricFamily("bridge_outbox_oldest_age_seconds",
                                       "age of the oldest event still waiting for a destination",
                                       labels=["destination"])
            now = utcnow()
            waiting: dict[str, list[Any]] = {}
            for dest, n, first in rows(
                    "SELECT d.destination, COUNT(*), MIN(e.created_at) FROM deliveries d "
                    "JOIN events e ON e.seq = d.event_seq WHERE d.status = 'pending' GROUP BY d.destination"):
                waiting[dest] = [int(n), first]
            for dest, cursor in rows("SELECT name, fanout_cursor FROM destination_state"):
                n, first = conn.execute(text("SELECT COUNT(*), MIN(created_at) FROM events WHERE seq > :c"),
                                        {"c": cursor}).one()
                entry = waiting.setdefault(dest, [0, None])
                entry[0] += int(n)
                if first is not None and (entry[1] is None or str(first) < str(entry[1])):
                    entry[1] = first
            for dest, (n, first) in sorted(waiting.items()):
                backlog.add_metric([dest], n)
                age = 0.0
                if first is not None:
                    age = max(0.0, (now - _utc(first)).total_seconds())
                oldest.add_metric([dest], age)
            out += [backlog, oldest]

            out.append(self._histogram(
                rows(_bucket_sql(db, "channel", _seconds(db, "processed_at", "received_at"),
                                 "FROM inbound_files WHERE processed_at IS NOT NULL")),
                "bridge_drop_to_commit_seconds", "inbound received_at to processed_at", "channel"))
            out.append(self._histogram(
                rows(_bucket_sql(db, "destination", _seconds(db, "d.delivered_at", "e.created_at"),
                                 "FROM deliveries d JOIN events e ON e.seq = d.event_seq "
                                 "WHERE d.delivered_at IS NOT NULL")),
                "bridge_commit_to_delivered_seconds", "event committed to delivered", "destination"))
        return out

    @staticmethod
    def _histogram(rows: list[Any], name: str, doc: str, label: str) -> HistogramMetricFamily:
        h = HistogramMetricFamily(name, doc, labels=[label])
        for row in rows:
            value, count, total, *cums = row
            buckets = [(str(b), float(c or 0)) for b, c in zip(BUCKETS, cums, strict=True)]
            buckets.append(("+Inf", float(count)))
            h.add_metric([value], buckets, float(total or 0))
        return h


def _utc(value: Any) -> datetime:
    """A timestamp from a raw query: SQLite's MIN() over its text timestamps comes back as naive text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class Metrics:
    """One app's metrics registry: request counters plus the database collector."""

    def __init__(self, db: Database, *, cache_seconds: float = 10.0) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("bridge_api_requests", "API requests by method, route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("bridge_api_request_duration_seconds", "API request latency by route template",
                                 ["method", "route"], buckets=_API_BUCKETS, registry=self.registry)
        self.database = DatabaseCollector(db, cache_seconds)
        self.registry.register(self.database)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
