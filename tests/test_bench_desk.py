"""Seconds-long runs of the desk's and the store's benchmarks (bench/desk.py,
bench/store.py), so that they keep working: ``ivr desk`` as its own process with agents
logged in and their streams, rings measured; records forwarded into SQLite."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_desk_benchmark_rings_agents_and_prints_its_figures():
    run = subprocess.run([sys.executable, "-m", "bench.desk", "--callers", "30",
                          "--agents", "3", "--rings", "6", "--churn", "5"],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["rings"] == 6 and figures["agents_logged_in"] == 3
    assert 0 < figures["ring_to_stream_ms"]["p50"] <= figures["ring_to_stream_ms"]["max"]
    assert figures["stream_bytes_per_agent"] > 0 and figures["desk_rss_mb"]["loaded"] > 0


def test_the_store_benchmark_forwards_and_prints_its_figures():
    run = subprocess.run([sys.executable, "-m", "bench.store", "--records", "300",
                          "--latency-records", "5"], cwd=REPO, capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    (line,) = [row for row in run.stdout.splitlines() if row.startswith("sqlite")]
    rate, woken_p50 = (float(v) for v in line.split()[1:3])
    assert rate > 0 and woken_p50 > 0
