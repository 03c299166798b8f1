"""Live announcement and self-service modes: set with ``ivr service`` (a real process)
between two calls of a running server, no restart; the change is kept with who and when."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from ivr.app import running_server
from ivr.emulator import place_call
from ivr.store.sqlite import SqliteStore

from .conftest import EVIDENCE

VERIFIED = "1 0001234567890# 1 17081990"


def ivr_service(settings, *args: str) -> str:
    env = {**os.environ, "IVR_STORE_DB": settings.store_db, "IVR_STORE_URL": ""}
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "service", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    with open(EVIDENCE / "service-cli.log", "a") as log:
        log.write(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr
    return done.stdout


def sounds(call) -> list[str]:
    return [s.rsplit("/", 1)[-1] for s in call.sounds]


async def test_an_announcement_switched_on_and_off_between_two_calls(settings):
    async with running_server(settings) as (server, app):
        app.service.cache_seconds = 0.0
        before = await place_call("127.0.0.1", server.port, "0")
        out = await asyncio.to_thread(ivr_service, settings, "announce",
                                      "announcement-maintenance", "--by", "ops-siti")
        assert "announcement: announcement-maintenance  (by ops-siti at" in out
        during = await place_call("127.0.0.1", server.port, "0")
        await asyncio.to_thread(ivr_service, settings, "announce", "--clear", "--by", "ops-budi")
        after = await place_call("127.0.0.1", server.port, "0")
    assert "announcement-maintenance" not in sounds(before)
    assert sounds(during)[:2] == ["greeting", "announcement-maintenance"]
    assert "announcement-maintenance" not in sounds(after)
    store = SqliteStore(settings.store_db)
    await store.open()
    try:
        log = await store.audit_log("service-settings")
    finally:
        await store.close()
    assert [(e["agent"], e["action"]) for e in log] == [
        ("ops-siti", "announcement=announcement-maintenance"), ("ops-budi", "announcement=")]


async def test_agents_only_and_status_without_billing(settings):
    async with running_server(settings) as (server, app):
        app.service.cache_seconds = 0.0
        await asyncio.to_thread(ivr_service, settings, "mode", "agents_only", "--by", "ops")
        agents = await place_call("127.0.0.1", server.port, VERIFIED)
        await asyncio.to_thread(ivr_service, settings, "mode", "status_only", "--by", "ops")
        status = await place_call("127.0.0.1", server.port, VERIFIED)
        await asyncio.to_thread(ivr_service, settings, "mode", "normal", "--by", "ops")
        normal = await place_call("127.0.0.1", server.port, VERIFIED)
    assert agents.variables["IVR_OUTCOME"] == "transfer"
    assert agents.variables["IVR_TRANSFER_REASON"] == "service_unavailable"
    assert "main-menu" not in sounds(agents)
    assert "status-active" in sounds(status) and "bill-unavailable" in sounds(status)
    assert "bill-amount" not in sounds(status)
    assert "bill-amount" in sounds(normal)


def test_an_unknown_prompt_is_refused(settings):
    env = {**os.environ, "IVR_STORE_DB": settings.store_db}
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "service", "announce", "nope"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a prompt id" in done.stderr
