"""The agent desk against a real Asterisk 22 (the sandbox's instance "desk"), a real IVR
and the reference membership service: an agent logs in, sets ready, a caller the IVR
transfers is offered to them by the queue (the agent-phones context's simulated headset
answers for the agent), and the desk's API and live stream show ringing, connected and
ended with what the IVR learnt; the wrap-up is stored and every look at a call audited.
Asterisk is restarted under the desk: it says so and puts the ready agent back. And a
real headless Chromium logged in as an agent shows the pop of a real transferred call.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from ivr.app import running_server
from ivr.config import Settings
from ivr.desk.app import demo_accounts, running_desk, sandbox_settings

from selenium.webdriver.common.by import By

from .conftest import until
from .test_desk_browser import browser, screenshot, shown, text, wait_for  # noqa: F401
from .asterisk_sandbox import PORT_SHIFT, ivr_settings, running_sandbox
from .test_asterisk import ACTIVE, sounds, status_call  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="module")

AGI_PORT, SIP_PORT, AMI_PORT = (16573 + PORT_SHIFT, 17060 + PORT_SHIFT, 17038 + PORT_SHIFT)
RTP_PORTS = f"{24000 + 2000 * (PORT_SHIFT // 100)}-{25998 + 2000 * (PORT_SHIFT // 100)}"
PASSWORD = "desk-test-password"
AGENT_HOLD = 4          # seconds the simulated headset stays on the line
ASKS_FOR_AN_AGENT = status_call(*ACTIVE) + "WWW0"   # status, then 0 while it plays


@pytest.fixture(scope="module")
def sandbox(sounds):  # noqa: F811
    with running_sandbox("desk", evidence="asterisk-desk-full.log", sounds_dir=sounds,
                         agi_address=f"127.0.0.1:{AGI_PORT}", sip_address=f"127.0.0.1:{SIP_PORT}",
                         ami_port=AMI_PORT, rtp_ports=RTP_PORTS,
                         agent_password=PASSWORD) as box:
        box.cli(f"dialplan set global IVR_DEMO_AGENT_HOLD {AGENT_HOLD}")
        yield box


@pytest.fixture(scope="module")
def settings(membership_url, sounds, tmp_path_factory) -> Settings:  # noqa: F811
    return ivr_settings("desk", membership_url, sounds, tmp_path_factory.mktemp("desk"),
                        agi_port=AGI_PORT, desk_host="127.0.0.1", desk_port=0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(sandbox, settings):
    """The IVR and the desk, both on the sandbox; yields the desk's URL and hub."""
    desk_settings = sandbox_settings(settings, sandbox)
    accounts = demo_accounts(desk_settings)
    async with running_server(settings) as (_server, app), \
            running_desk(desk_settings, accounts=accounts) as (url, desk):
        await until(lambda: desk.asterisk == "up", "the desk logs in to AMI")
        yield url, desk, app


class Agent:
    """An agent's browser, as HTTP: its own cookies, the page's Origin on every change, and
    the live stream read in the background."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          headers={"Origin": url})
        self.events: list[tuple[str, dict]] = []
        self.arrived: dict[str, float] = {}        # event name -> wall clock of its last
        self._reader: asyncio.Task | None = None

    async def login(self, username: str, password: str = PASSWORD) -> None:
        async with self.http.post(self.url + "/login", allow_redirects=False,
                                  data={"username": username, "password": password}) as r:
            assert r.status == 303, await r.text()
        self._reader = asyncio.create_task(self._read_stream())

    async def _read_stream(self) -> None:
        async with self.http.get(self.url + "/api/events") as response:
            assert response.status == 200
            name, data = "message", ""
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line and data:
                    self.events.append((name, json.loads(data)))
                    self.arrived[name] = time.time()
                    name, data = "message", ""

    def named(self, *names: str) -> list[tuple[str, dict]]:
        return [(n, d) for n, d in self.events if n in names]

    async def get(self, path: str) -> tuple[int, dict]:
        async with self.http.get(self.url + path) as r:
            return r.status, await r.json()

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        async with self.http.post(self.url + path, json=body) as r:
            return r.status, await r.json()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.http.close()


@pytest_asyncio.fixture(loop_scope="module")
async def agents(stack):
    url = stack[0]
    one, two = Agent(url), Agent(url)
    await one.login("agent1")
    await two.login("agent2")
    yield one, two
    for agent in (one, two):
        await agent.post("/api/me/state", {"state": "offline"})
        await agent.close()


async def test_a_transferred_caller_pops_up_verified_and_the_wrap_up_is_kept(
        stack, agents, sandbox):
    url, desk, app = stack
    one, two = agents
    status, me = await one.post("/api/me/state", {"state": "ready"})
    assert status == 200 and me["state"] == "ready", me
    assert "agent1" in sandbox.cli("queue show agents")           # Asterisk has the member

    report = await sandbox.originate_local_async(keys=ASKS_FOR_AN_AGENT, hold=60,
                                                 caller_id="0811000101", timeout=150)
    assert report.route["Outcome"] == "transfer" and report.route["Verified"] == "1"
    call_id = report.route["CallId"]
    await until(lambda: one.named("ended"), "the call has ended on agent1's stream", 30)

    flow = [(n, d["call_id"]) for n, d in one.named("ringing", "connected", "ended")]
    assert flow == [("ringing", call_id), ("connected", call_id), ("ended", call_id)]
    assert two.named("ringing", "connected", "ended") == []       # only the agent offered
    (_, ringing), = one.named("ringing")
    assert ringing["transfer_reason"] == "caller_request" and ringing["verified"] is True
    delay = one.arrived["ringing"] - ringing["asterisk_at"]
    print(f"figure: Asterisk rang agent1 -> ringing on the agent's stream: {delay * 1000:.1f} ms")
    assert delay > 0
    assert "card" not in ringing                                   # the pop fetches it

    status, context = await one.get(f"/api/calls/{call_id}")
    assert status == 200
    assert context["verified"] is True and context["card"] == ACTIVE[0]
    assert context["member_status"] == "AKTIF" and context["transfer_reason"] == "caller_request"
    assert context["identifier_masked"] == "0001******890"
    assert context["transcript"] and ACTIVE[0] not in json.dumps(context["transcript"])
    assert context["menu_keys"][-1] == "0" and context["ivr_seconds"] > 0
    assert context["queue"]["answered_by"] == "agent1" and context["queue"]["waited_s"] >= 0
    status, me = await one.get("/api/me")
    assert me["state"] == "wrap_up" and me["call_id"] == call_id

    # Another agent may not see the number of a call they did not handle.
    status, theirs = await two.get(f"/api/calls/{call_id}")
    assert status == 200 and theirs["verified"] is True and theirs["card"] is None

    status, saved = await one.post(f"/api/calls/{call_id}/wrapup",
                                   {"disposition": "answered", "note": "status explained"})
    assert status == 200 and saved["disposition"] == "answered"
    status, context = await one.get(f"/api/calls/{call_id}")
    assert context["wrapup"]["note"] == "status explained"
    assert context["queue"]["result"] == "answered"
    await until(lambda: desk.me("agent1")["state"] == "ready", "agent1 is ready again")
    # Asterisk's log at its default level names no file played: a read-back is a row of
    # digit files ("bpjs/num-0&bpjs/num-0&...") at level 3
    log_text = sandbox.full_log.read_text(errors="replace")
    assert "HOTLINE IvrRoute" in log_text and "bpjs/num-" not in log_text
    seen = await desk.store.audit_log(call_id)
    assert {(e["agent"], e["action"]) for e in seen} >= {("agent1", "view_context"),
                                                         ("agent2", "view_context")}


async def test_the_desk_says_when_it_loses_asterisk_and_puts_ready_agents_back(
        stack, agents, sandbox):
    url, desk, _app = stack
    one, _two = agents
    status, me = await one.post("/api/me/state", {"state": "ready"})
    assert me["state"] == "ready"
    sandbox.down()
    await until(lambda: desk.asterisk != "up", "the desk notices Asterisk is gone")
    status, queue = await one.get("/api/queue")
    assert status == 200                                   # the desk keeps serving
    status, refused = await one.post("/api/me/state", {"state": "paused", "reason": "break"})
    assert status == 409 and "Asterisk" in refused["error"]
    sandbox.up(timeout=120)
    sandbox.cli(f"dialplan set global IVR_DEMO_AGENT_HOLD {AGENT_HOLD}")
    await until(lambda: desk.asterisk == "up", "the desk logs in again", 60)
    await until(lambda: "agent1" in sandbox.cli("queue show agents"),
                "agent1 is back in Asterisk's queue", 20)
    states = [d["state"] for n, d in one.named("asterisk")]
    assert "up" in states and any(s != "up" for s in states)
    assert desk.me("agent1")["state"] == "ready"


def browse_to_the_pop(driver, url: str, card: str) -> dict[str, str]:
    """In a thread (Selenium blocks): log in as agent2, set ready, wait for the pop of the
    caller the test places meanwhile; returns what the page shows."""
    driver.get(url + "/")
    wait_for(driver, lambda: shown(driver, "login-view"))
    driver.find_element(By.ID, "login-username").send_keys("agent2")
    driver.find_element(By.ID, "login-password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait_for(driver, lambda: shown(driver, "desk-view"))
    driver.find_element(By.ID, "btn-ready").click()
    wait_for(driver, lambda: text(driver, "agent-state") == "Ready")
    READY.set()
    wait_for(driver, lambda: text(driver, "pop-phase") in ("Ringing", "Connected")
             and card in text(driver, "pop-identity")
             and len(driver.find_elements(By.CSS_SELECTOR, "#pop-transcript li")) > 3, 120)
    wait_for(driver, lambda: text(driver, "pop-phase") == "Connected", 30)
    shot = screenshot(driver, "desk-real-call-1366x768.png")
    return {"reason": text(driver, "pop-reason"), "identity": text(driver, "pop-identity"),
            "member": text(driver, "pop-member"), "shot": str(shot),
            "transcript": "\n".join(li.text for li in driver.find_elements(
                By.CSS_SELECTOR, "#pop-transcript li"))}


READY = threading.Event()


async def test_a_real_browser_shows_the_pop_of_a_real_transferred_call(stack, sandbox, browser):
    url, desk, _app = stack
    READY.clear()
    seen = asyncio.create_task(asyncio.to_thread(browse_to_the_pop, browser, url, ACTIVE[0]))
    await until(READY.is_set, "the agent in the browser is ready", 60)
    call = await sandbox.originate_local_async(keys=ASKS_FOR_AN_AGENT, hold=60,
                                               caller_id="0811000102", timeout=150)
    page = await seen
    assert call.route["Outcome"] == "transfer"
    assert page["reason"] == "Caller asked for an agent"
    assert "VERIFIED" in page["identity"] and ACTIVE[0] in page["identity"]
    assert page["member"] == "Active (AKTIF)"
    assert page["transcript"].startswith("Selamat datang") and "petugas" in page["transcript"]
    assert ACTIVE[0] not in page["transcript"]
    assert Path(page["shot"]).stat().st_size > 10_000
    await asyncio.to_thread(browser.find_element(By.ID, "btn-offline").click)
    await until(lambda: desk.me("agent2")["state"] in ("offline", "wrap_up"), "agent2 leaves")
