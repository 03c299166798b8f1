"""A seconds-long run of the desk's benchmark (bench/desk.py), so that it keeps working:
``ivr desk`` as its own process, agents logged in with their streams, rings measured."""
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
