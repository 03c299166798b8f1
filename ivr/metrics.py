"""Prometheus metrics of one IVR process (``prometheus_client``), served at
``http://IVR_METRICS_HOST:IVR_METRICS_PORT/metrics`` by the process's own event loop.

One registry per process. With ``--workers N`` each worker serves its own on
``IVR_METRICS_PORT + index`` (Prometheus scrapes every worker once; sum over ``instance``
in queries), rather than prometheus_client's multiprocess mode: that mode needs a shared
folder of memory-mapped files set up before import and cannot run the callback gauges
(active calls, breaker state) this module uses.

No label carries an identifier or a call id: labels are outcomes, transfer reasons,
failure kinds, refusal causes and prompt ids, all from small fixed sets.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from .agi.server import AgiServer
    from .membership.breaker import CircuitBreaker
    from .records import CallRecord, RecordWriter

log = logging.getLogger(__name__)

# Outcomes that reach no agent: the machine helped, or the caller left.
CONTAINED = frozenset({"completed", "abandoned", "no_input"})
LOOKUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
STATUS_BUCKETS = (15, 20, 25, 30, 40, 50, 60, 90, 120, 180)


def failure_kind(reason: str) -> str:
    """A MembershipUnavailable's reason, as a label value from a fixed set."""
    for prefix, kind in (("timeout", "timeout"), ("connection", "connection"),
                         ("HTTP status", "http_status"), ("circuit open", "circuit_open")):
        if reason.startswith(prefix):
            return kind
    return "bad_answer"


class _Live:
    """Counters kept by other objects (server, listener, writer, breaker), read at scrape."""

    def __init__(self, metrics: "Metrics") -> None:
        self.metrics = metrics

    def collect(self):
        m = self.metrics
        server, records, breaker = m.server, m.records, m.breaker
        active = GaugeMetricFamily("ivr_active_calls", "FastAGI connections open now")
        active.add_metric([], server.active_calls if server else 0)
        yield active
        refused = CounterMetricFamily("ivr_agi_sessions_refused",
                                      "FastAGI connections refused, by cause", labels=["cause"])
        listener = server._listener if server is not None else None
        refused.add_metric(["not_allowed"], listener.refused if listener else 0)
        refused.add_metric(["at_cap"], listener.paused_at_cap if listener else 0)
        refused.add_metric(["accept_error"], listener.accept_errors if listener else 0)
        refused.add_metric(["bad_header"], server.rejected if server else 0)
        yield refused
        written = CounterMetricFamily("ivr_call_records_written", "Call records written")
        lost = CounterMetricFamily("ivr_call_records_lost",
                                   "Call records lost (the disk refused them, the queue full)")
        waiting = GaugeMetricFamily("ivr_call_records_waiting",
                                    "Call records held back by a write error")
        written.add_metric([], records.written if records else 0)
        lost.add_metric([], records.lost if records else 0)
        waiting.add_metric([], records.waiting if records else 0)
        yield from (written, lost, waiting)
        state = GaugeMetricFamily("ivr_membership_breaker_state",
                                  "Breaker of the membership service: 0 closed, 1 open, "
                                  "2 half-open")
        opened = CounterMetricFamily("ivr_membership_breaker_opened",
                                     "Times the membership breaker opened")
        state.add_metric([], int(breaker.state) if breaker else 0)
        opened.add_metric([], breaker.opened if breaker else 0)
        yield from (state, opened)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.server: AgiServer | None = None
        self.records: RecordWriter | None = None
        self.breaker: CircuitBreaker | None = None
        r = self.registry
        self.calls = Counter("ivr_calls", "Calls ended, by outcome and transfer reason",
                             ["outcome", "transfer_reason"], registry=r)
        self.contained = Counter("ivr_calls_contained",
                                 "Calls ended without an agent (completed, no input, "
                                 "abandoned)", registry=r)
        self.lockouts = Counter("ivr_lockouts", "Calls refused self-service by the lockout",
                                registry=r)
        self.time_to_status = Histogram("ivr_time_to_status_seconds",
                                        "Prompt time from the greeting to the member status",
                                        buckets=STATUS_BUCKETS, registry=r)
        self.lookup = Histogram("ivr_membership_lookup_seconds",
                                "Membership lookups' own time (every lookup)",
                                buckets=LOOKUP_BUCKETS, registry=r)
        self.lookup_failures = Counter("ivr_membership_failures",
                                       "Membership lookups failed, by kind", ["kind"],
                                       registry=r)
        self.prompts_missing = Counter("ivr_prompts_missing",
                                       "Prompts that could not be played, by prompt",
                                       ["prompt"], registry=r)
        r.register(_Live(self))

    def lookup_finished(self, seconds: float, failure: str | None) -> None:
        self.lookup.observe(seconds)
        if failure is not None:
            self.lookup_failures.labels(failure_kind(failure)).inc()

    def call_ended(self, record: "CallRecord") -> None:
        outcome = record.outcome or "error"
        self.calls.labels(outcome, record.transfer_reason or "none").inc()
        if outcome in CONTAINED:
            self.contained.inc()
        if record.transfer_reason == "locked":
            self.lockouts.inc()
        if record.time_to_status_ms is not None:
            self.time_to_status.observe(record.time_to_status_ms / 1000)
        for sound in record.missing_prompts:
            self.prompts_missing.labels(sound.rsplit("/", 1)[-1][:64]).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """``GET /metrics`` on the event loop (a scrape takes well under a millisecond)."""
    async def scrape(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("Prometheus metrics at http://%s:%d/metrics", host, port)
    return runner
