"""Two ``ivr serve`` processes, each with its own state database, share one real Redis
(``IVR_LOCKOUT_REDIS_URL``): failures counted on one server lock the participant on the
other, so a caller gains nothing by landing on another server."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from bench.proc import wait_port
from ivr.emulator import place_call

from .conftest import EVIDENCE, free_port

CARD, NIK, BORN, PHONE = "0001234567890", "3174015708900003", "17081990", "4821"
WRONG_BORN = "18081990"


@contextlib.contextmanager
def ivr_serve(name: str, membership_url: str, redis_url: str, tmp_path: Path):
    """``ivr serve`` in its own process; yields its FastAGI port."""
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "IVR_AGI_PORT": str(port),
           "IVR_MEMBERSHIP_URL": membership_url, "IVR_LOCKOUT_REDIS_URL": redis_url,
           "IVR_STATE_DB": str(tmp_path / f"state-{name}.sqlite3"),
           "IVR_CALL_RECORDS": str(EVIDENCE / f"calls-serve-{name}-{port}.jsonl"),
           "IVR_SOUNDS_DIR": str(tmp_path / "no-sounds"), "IVR_LOG_LEVEL": "DEBUG",
           "IVR_VAR_DIR": str(tmp_path / name), "IVR_LOCKOUT_ANONYMOUS_FAILURES": "2"}
    with open(EVIDENCE / f"serve-{name}-{port}.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(port, 30, process)
            yield port
        finally:
            process.terminate()
            process.wait(20)


async def test_two_servers_on_one_redis_share_every_count(membership_url, redis_url, tmp_path):
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    with ivr_serve("a", membership_url, redis_url, tmp_path) as a, \
            ivr_serve("b", membership_url, redis_url, tmp_path) as b:
        three = f"1 {CARD}# 1 {WRONG_BORN} {CARD}# 1 {WRONG_BORN} {CARD}# 1 {WRONG_BORN}"
        first = await place_call("127.0.0.1", a, three, caller_id="081111111111")
        assert first.variables["IVR_TRANSFER_REASON"] == "verification_failed"
        two = f"1 {NIK} 1 {WRONG_BORN} {PHONE} {NIK} 1 {BORN} 9999 h"
        await place_call("127.0.0.1", b, two, caller_id="082222222222")
        # five failures for one participant, on two servers, by card and by NIK
        for port, identifier in ((a, NIK), (b, f"{CARD}#")):
            locked = await place_call("127.0.0.1", port, f"1 {identifier} 1 {BORN} {PHONE}",
                                      caller_id="083333333333")
            assert locked.variables["IVR_TRANSFER_REASON"] == "locked", port
            assert "bpjs/enter-birth-date" not in locked.sounds
        # callers without a number: one count (threshold 2 here) for both servers
        await place_call("127.0.0.1", a, f"1 0001100000011# 1 {BORN} h", caller_id="anonymous")
        await place_call("127.0.0.1", b, f"1 0001100000022# 1 {BORN} h", caller_id="unknown")
        withheld = await place_call("127.0.0.1", a, "1 0001100000044# 1 21061988",
                                    caller_id="")
        assert withheld.variables["IVR_TRANSFER_REASON"] == "locked"
    records = [json.loads(line) for path in EVIDENCE.glob(f"calls-serve-*-{a}.jsonl")
               for line in path.read_text().splitlines()]
    assert [r["transfer_reason"] for r in records] == ["verification_failed", "locked", None,
                                                       "locked"]


async def test_when_redis_is_gone_calls_go_to_an_agent(settings, redis_url):
    """Fail closed: a lockout store that cannot be read never lets self-service run
    unchecked (the salt is configured, so the server starts without Redis)."""
    from dataclasses import replace

    from ivr.app import running_server
    gone = f"redis://:x@127.0.0.1:{free_port()}/0"
    async with running_server(replace(settings, lockout_redis_url=gone)) as (server, app):
        call = await place_call("127.0.0.1", server.port, f"1 {CARD}# 1 {BORN}")
    assert call.variables["IVR_OUTCOME"] == "transfer"
    assert call.variables["IVR_TRANSFER_REASON"] == "service_unavailable"
    assert call.variables["IVR_VERIFIED"] == "0"
    # told, not dropped into the queue without a word
    assert call.sounds[-2:] == ["bpjs/service-unavailable", "bpjs/transfer-agent"]
