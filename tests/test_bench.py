"""The load benchmark keeps working (a seconds-long smoke run with sane figures), and
``ivr serve --workers 2`` serves calls from two processes sharing one port.

Timing targets live in the benchmark (``bench/RESULTS.md``), not here."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ivr.emulator import asterisk_headers, encode_headers, place_call

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_of_the_benchmark_gives_sane_figures():
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--workers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith('{"bench"')]
    results = json.loads(line)
    for kind in ("hotline", "raw", "panoramisk"):
        t = results["throughput"][kind]
        assert t["errors"] == 0, (kind, t["error_kinds"], t["error_examples"])
        assert t["calls_per_s"] > 0 and t["commands_per_s"] > t["calls_per_s"] * 5, kind
        assert set(t["calls_by_path"]) == {"status", "wrong-date", "hang-up", "agent"}, kind
        assert 0 < t["p50_ms"] <= t["p99_ms"] <= t["max_ms"] + 0.01, kind
        assert t["cpu_ms_per_call"] > 0 and 0 < t["server_cpu_pct"] <= 200, kind
        h = results["hold"][kind]
        assert h["errors"] == 0 and h["held"] == 200, (kind, h["error_kinds"])
        assert 0 < h["rss_kb_per_call"] < 1000, kind
    assert {"vs_raw", "vs_panoramisk"} <= set(results["ratios"])
    assert all(0.05 < v < 20 for v in results["ratios"].values()), results["ratios"]
    assert {w["processes"] for w in results["workers"].values()} == {1, 2}
    assert all(w["errors"] == 0 and w["calls_per_s"] > 0 for w in results["workers"].values())
    for row in results["membership"]:
        assert row["lookups"] > 0 and row["client_p99_ms"] >= row["client_p50_ms"] > 0
    assert set(results["verdicts"]) == {"held_calls", "p99_ms", "rss_kb_per_call",
                                        "vs_panoramisk", "vs_raw",
                                        "membership_overhead_p99_ms"}


# -- ivr serve --workers


def children(pid: int) -> set[int]:
    out = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        out |= {int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
    return out


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def server_socket_owner(agi_port: int, peer_port: int, pids: set[int]) -> int | None:
    """The pid among ``pids`` holding the server end of the connection from ``peer_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state == "01" and int(local.split(":")[1], 16) == agi_port \
                and int(remote.split(":")[1], 16) == peer_port:
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


async def owner_of_one_call(agi_port: int, pids: set[int]) -> int | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi_port)
    try:
        writer.write(encode_headers(asterisk_headers(f"7.{time.monotonic_ns()}",
                                                     caller="081200000000", port=agi_port)))
        assert await asyncio.wait_for(reader.readline(), 10) == b"ANSWER\n"
        return server_socket_owner(agi_port, writer.get_extra_info("sockname")[1], pids)
    finally:
        writer.close()


@pytest.fixture
def two_workers(membership_url, tmp_path):
    port = free_port()
    env = {**os.environ, "IVR_AGI_HOST": "127.0.0.1", "IVR_AGI_PORT": str(port),
           "IVR_MEMBERSHIP_URL": membership_url,
           "IVR_STATE_DB": str(tmp_path / "state.sqlite3"),
           "IVR_STORE_DB": str(tmp_path / "store.sqlite3"),
           "IVR_CALL_RECORDS": str(tmp_path / "calls.jsonl"),
           "IVR_SOUNDS_DIR": str(tmp_path / "no-sounds")}
    log = open(tmp_path / "serve.log", "w+")
    parent = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve", "--workers", "2"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "worker processes" not in (tmp_path / "serve.log").read_text():
            assert parent.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        yield parent, port, tmp_path
    finally:
        if parent.poll() is None:
            parent.send_signal(signal.SIGTERM)
            parent.wait(30)
        log.close()


async def test_two_workers_serve_calls_from_two_processes(two_workers):
    parent, port, tmp_path = two_workers
    workers = children(parent.pid)
    assert len(workers) >= 2
    owners = [await owner_of_one_call(port, workers) for _ in range(24)]
    assert None not in owners and parent.pid not in owners
    assert len(set(owners)) == 2, owners       # the kernel spread the calls over both
    # and whole calls work on either
    calls = await asyncio.gather(*(place_call("127.0.0.1", port, "0", caller_id=f"0813{i:08d}")
                                   for i in range(8)))
    assert {c.variables.get("IVR_OUTCOME") for c in calls} == {"transfer"}
    parent.send_signal(signal.SIGTERM)
    assert await asyncio.get_running_loop().run_in_executor(None, parent.wait, 30) == 0
    assert not any(alive(pid) for pid in set(owners)), "a worker outlived the parent"
    records = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert sum(json.loads(r)["outcome"] == "transfer" for r in records) == 8
    # one of the workers forwarded the shared file into the store, each record once
    with sqlite3.connect(tmp_path / "store.sqlite3") as db:
        stored = [row[0] for row in db.execute("SELECT call_id FROM calls")]
    assert sorted(stored) == sorted(json.loads(r)["call_id"] for r in records)


def test_regenerating_results_keeps_the_sip_and_desk_sections(tmp_path):
    from bench.run import DESK_SECTION, SIP_SECTION, _kept_section
    path = tmp_path / "RESULTS.md"
    assert _kept_section(path, SIP_SECTION) == []
    path.write_text(f"# Results\n\n## Figures\n\nx\n\n{SIP_SECTION}\n\n| 300 | 0 |\n\n"
                    f"{DESK_SECTION}\n\n| 1.5 ms |\n\n## Raw figures (JSON)\n\n{{}}\n")
    assert _kept_section(path, SIP_SECTION) == [SIP_SECTION, "", "| 300 | 0 |", ""]
    assert _kept_section(path, DESK_SECTION) == [DESK_SECTION, "", "| 1.5 ms |", ""]
