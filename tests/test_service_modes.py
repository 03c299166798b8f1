"""Live announcement and self-service modes: set with ``ivr service`` (a real process)
between two calls of a running server, no restart; the change is kept with who and when."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from ivr.app import running_server
from ivr.emulator import place_call
from ivr.service_modes import READ_TIMEOUT, Mode, ServiceModes
from ivr.store.sqlite import SqliteStore

from .conftest import EVIDENCE, until

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


class SilentStore:
    """A store that does not answer until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def service_settings(self) -> dict:
        await self.release.wait()
        return {"mode": {"value": "agents_only", "changed_by": "ops", "changed_at": ""}}


async def test_a_store_that_does_not_answer_holds_up_one_call_not_every_call():
    store = SilentStore()
    modes = ServiceModes(store, cache_seconds=0.0)
    assert (await modes.current()).mode is Mode.NORMAL       # waited READ_TIMEOUT, no more
    for _ in range(20):                                       # the next calls: at once
        assert (await asyncio.wait_for(modes.current(), READ_TIMEOUT / 2)).mode is Mode.NORMAL
    store.release.set()                                       # the store answers again
    await until(lambda: _is(modes, Mode.AGENTS_ONLY), "agents only, as stored", 5)


async def _is(modes: ServiceModes, mode: Mode) -> bool:
    return (await modes.current()).mode is mode
