"""Prometheus metrics scraped over HTTP from a running server after calls of each outcome:
the values equal what the call records say, and no label holds an identifier or call id."""
from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ivr.app import running_server
from ivr.emulator import place_call

from .conftest import free_port

CALLS = {
    "1 0001234567890# 1 17081990": 3,          # completed
    "0": 2,                                     # transfer, caller_request
    "1 h": 2,                                   # abandoned
    "1 0009999999901# 1 01011980": 2,           # transfer, service_unavailable (HTTP 500)
}


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out, text


async def test_metrics_equal_the_call_records(settings):
    port = free_port()
    settings = replace(settings, metrics_port=port)
    Path(settings.call_records).unlink(missing_ok=True)
    async with running_server(settings) as (server, app):
        placed = []
        for keys, count in CALLS.items():
            for _ in range(count):
                placed.append(await place_call("127.0.0.1", server.port, keys))
        assert app.records.flush()
        metrics, text = await asyncio.to_thread(scrape, port)
    records = [json.loads(line) for line in Path(settings.call_records).read_text().splitlines()]
    assert len(records) == sum(CALLS.values())
    by_outcome = Counter((r["outcome"], r["transfer_reason"] or "none") for r in records)
    assert by_outcome[("completed", "none")] == 3 and by_outcome[("abandoned", "none")] == 2
    for (outcome, reason), count in by_outcome.items():
        key = ("ivr_calls_total", (("outcome", outcome), ("transfer_reason", reason)))
        assert metrics[key] == count
    contained = sum(c for (o, _), c in by_outcome.items() if o in ("completed", "abandoned"))
    assert metrics[("ivr_calls_contained_total", ())] == contained
    assert metrics[("ivr_call_records_written_total", ())] == len(records)
    assert metrics[("ivr_call_records_lost_total", ())] == 0
    lookups = sum(r["membership_lookups"] for r in records)
    assert metrics[("ivr_membership_lookup_seconds_count", ())] == lookups
    assert metrics[("ivr_membership_failures_total", (("kind", "http_status"),))] == 2
    assert metrics[("ivr_membership_breaker_state", ())] == 0
    assert metrics[("ivr_active_calls", ())] == 0
    statuses = [r for r in records if r["time_to_status_ms"] is not None]
    assert metrics[("ivr_time_to_status_seconds_count", ())] == len(statuses)
    for call in placed:
        assert call.call_id not in text
    assert "0001234567890" not in text and "0009999999901" not in text


REPO = Path(__file__).resolve().parent.parent


def test_the_dashboard_and_the_compose_scrape_name_what_the_ivr_exports():
    import re

    import yaml

    from ivr.metrics import Metrics
    from ivr.records import CallRecord
    metrics = Metrics()
    metrics.call_ended(CallRecord(call_id="x", caller="x", outcome="completed",
                                  time_to_status_ms=20000, missing_prompts=["bpjs/greeting"]))
    metrics.lookup_finished(0.2, "timeout")
    metrics.lockouts.inc()
    exported = {s.name for f in text_string_to_metric_families(metrics.exposition().decode())
                for s in f.samples}
    dashboard = (REPO / "ops" / "grafana" / "hotline.json").read_text()
    used = set(re.findall(r"\b(ivr_[a-z_]+)", dashboard))
    assert used and used <= exported, used - exported
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    port = compose["services"]["ivr"]["environment"]["IVR_METRICS_PORT"]
    scrape = yaml.safe_load((REPO / "ops" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [f"ivr:{port}"]
