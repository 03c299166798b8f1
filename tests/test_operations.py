"""Operations without loss (issue 12), against ``ivr serve`` as a real process with real
signals: a deploy drains its calls (findings 1), a new process takes over beside a draining
one, SIGHUP and ``mv`` rotation lose no record (finding 3)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.proc import wait_port
from ivr.emulator import AsteriskEmulator, ScriptedCaller

from .conftest import EVIDENCE, free_port

VERIFIED = "1 0001234567890# 1 17081990"     # status and billing, then goodbye


class SlowCaller(ScriptedCaller):
    """Types each key after ``pace`` seconds: a call that lasts as long as a test needs."""

    def __init__(self, keys: str, pace: float) -> None:
        super().__init__(keys)
        self.pace = pace

    async def _slow(self):
        await asyncio.sleep(self.pace)
        return ScriptedCaller.on_wait(self)

    def on_wait(self):
        return self._slow()


async def call(port: int, keys: str = VERIFIED, pace: float = 0.0, timeout: float = 90.0):
    caller = SlowCaller(keys, pace) if pace else ScriptedCaller(keys)
    return await AsteriskEmulator("127.0.0.1", port, caller, timeout=timeout).run()


def start_server(name: str, port: int, membership_url: str, records: Path, tmp_path: Path,
                 **env_extra: str) -> tuple[subprocess.Popen, Path]:
    log_path = EVIDENCE / f"ops-{name}-{tmp_path.name}.log"
    env = {**os.environ, "IVR_AGI_PORT": str(port), "IVR_MEMBERSHIP_URL": membership_url,
           "IVR_CALL_RECORDS": str(records), "IVR_STATE_DB": str(tmp_path / "state.sqlite3"),
           "IVR_STORE_DB": str(tmp_path / "store.sqlite3"), "IVR_LOCKOUT_SALT": "test-salt",
           "IVR_SOUNDS_DIR": str(tmp_path / "no-sounds"), "IVR_HOLD_PROMPT_AFTER": "0.5",
           **env_extra}
    process = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve"], env=env,
                               stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)
    return process, log_path


def wait_log(path: Path, text: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, f"the server exited with {process.returncode}"
        assert time.monotonic() < deadline, f"no {text!r} in {path.name}"
        time.sleep(0.05)


def records_of(*paths: Path) -> dict[str, dict]:
    """Every record in these files by call id; every line must be whole JSON."""
    out = {}
    for path in paths:
        if path.exists():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                out[record["call_id"]] = record
    return out


def stop(process: subprocess.Popen, seconds: float = 60) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(seconds)


LISTENING = "FastAGI server listening"


async def test_a_deploy_drains_long_calls_to_their_end(membership_url, tmp_path):
    """SIGTERM with 5 calls of ~10 s in flight: all of them complete, each has its record,
    and a new connection is refused at once (Asterisk tries the next server)."""
    port, records = free_port(), tmp_path / "calls.jsonl"
    server, log = start_server("drain", port, membership_url, records, tmp_path,
                               IVR_DRAIN_SECONDS="60")
    try:
        wait_log(log, LISTENING, server)
        calls = [asyncio.create_task(call(port, pace=0.4)) for _ in range(5)]
        await asyncio.sleep(1.5)
        assert not any(c.done() for c in calls)
        server.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        done = await asyncio.gather(*calls)
        assert [c.variables.get("IVR_OUTCOME") for c in done] == ["completed"] * 5
        assert await asyncio.to_thread(server.wait, 30) == 0
    finally:
        stop(server)
    by_id = records_of(records)
    assert all(by_id[c.call_id]["outcome"] == "completed" for c in done)


async def test_a_second_sigterm_ends_the_drain_and_every_call_still_gets_its_record(
        membership_url, tmp_path):
    """Ended at once, each call still gets its record (outcome error). Its channel
    variables may not reach Asterisk: a Read in progress holds the AGI until it ends, past
    the 5 s the server waits; the dialplan then takes the fallback, as for any error."""
    port, records = free_port(), tmp_path / "calls.jsonl"
    server, log = start_server("hurry", port, membership_url, records, tmp_path)

    async def ended_call():
        try:
            return await call(port, pace=1.0)
        except ConnectionResetError:    # closed with the last reply unread
            return None

    try:
        wait_log(log, LISTENING, server)
        calls = [asyncio.create_task(ended_call()) for _ in range(3)]
        await asyncio.sleep(1.0)
        server.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        await asyncio.gather(*calls)
        assert await asyncio.to_thread(server.wait, 30) == 0
        print(f"\nsecond SIGTERM: the process ended {time.monotonic() - started:.1f} s later")
    finally:
        stop(server)
    by_id = records_of(records)
    assert len(by_id) == 3 and {r["outcome"] for r in by_id.values()} == {"error"}
    assert "ending 3 call(s) still in progress" in log.read_text()


async def test_a_new_process_takes_over_beside_a_draining_one_and_no_call_is_refused(
        membership_url, tmp_path):
    """The deploy of a single ``ivr serve``: the new process listens on the same port
    (SO_REUSEPORT) beside the old one, the old one drains; callers keep coming all along."""
    port, records = free_port(), tmp_path / "calls.jsonl"
    old, old_log = start_server("old", port, membership_url, records, tmp_path,
                                IVR_DRAIN_SECONDS="60")
    new = None
    results, failures = [], []
    stop_calling = asyncio.Event()

    async def traffic():
        while not stop_calling.is_set():
            try:
                results.append(await call(port, keys="0", timeout=30))
            except OSError as exc:
                failures.append(type(exc).__name__)
            await asyncio.sleep(0.02)

    try:
        wait_log(old_log, LISTENING, old)
        long_calls = [asyncio.create_task(call(port, pace=0.4)) for _ in range(3)]
        callers = [asyncio.create_task(traffic()) for _ in range(3)]
        await asyncio.sleep(1.0)
        new, new_log = start_server("new", port, membership_url, records, tmp_path)
        await asyncio.to_thread(wait_log, new_log, LISTENING, new)
        old.send_signal(signal.SIGTERM)
        await asyncio.to_thread(old.wait, 60)
        await asyncio.sleep(1.0)                 # the new process alone
        stop_calling.set()
        await asyncio.gather(*callers)
        done = await asyncio.gather(*long_calls)
        assert old.returncode == 0
    finally:
        stop_calling.set()
        stop(old)
        if new is not None:
            assert stop(new) == 0
    assert failures == []
    assert len(results) > 20
    assert {c.variables.get("IVR_OUTCOME") for c in results} == {"transfer"}
    assert [c.variables.get("IVR_OUTCOME") for c in done] == ["completed"] * 3
    by_id = records_of(records)
    assert all(c.call_id in by_id for c in results + done)


async def test_sighup_and_mv_rotation_mid_traffic_lose_no_record(membership_url, tmp_path):
    """logrotate's two ways: ``mv`` then SIGHUP, and ``mv`` with no signal at all. Every
    call has exactly one whole record in one of the files, and the store got every one."""
    port, records = free_port(), tmp_path / "calls.jsonl"
    rotated = [tmp_path / "calls.jsonl.1", tmp_path / "calls.jsonl.2"]
    server, log = start_server("rotate", port, membership_url, records, tmp_path)
    placed = []
    stop_calling = asyncio.Event()

    async def traffic():
        while not stop_calling.is_set():
            placed.append(await call(port, keys="0"))
            await asyncio.sleep(0.02)

    try:
        wait_log(log, LISTENING, server)
        callers = [asyncio.create_task(traffic()) for _ in range(4)]
        await asyncio.sleep(1.0)
        os.rename(records, rotated[0])
        server.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert server.poll() is None          # SIGHUP does not end the server
        os.rename(records, rotated[1])        # no signal: the writer notices by itself
        await asyncio.sleep(1.5)
        stop_calling.set()
        await asyncio.gather(*callers)
        assert stop(server) == 0
    finally:
        stop_calling.set()
        stop(server)
    by_id = records_of(records, *rotated)
    total = sum(len(p.read_text().splitlines()) for p in [records, *rotated])
    assert len(placed) > 20
    assert total == len(placed) and set(by_id) == {c.call_id for c in placed}
    assert all(p.stat().st_size > 0 for p in [records, *rotated])
    assert "SIGHUP: reopening" in log.read_text()

    from ivr.store.sqlite import SqliteStore
    store = SqliteStore(str(tmp_path / "store.sqlite3"))
    await store.open()
    try:
        missing = [c.call_id for c in placed if await store.get_record(c.call_id) is None]
    finally:
        await store.close()
    assert missing == []
