"""Waiting for an agent against a real Asterisk 22 (the sandbox's instance "waiting"), the
real IVR, the desk with its callback scheduler, and a simulated carrier (a SIP UAS on
loopback, tests/sip_carrier.py) behind the outbound trunk.

Three callers wait while the only agent is busy: each hears its own position and the
expected wait; the second takes the callback and hangs up; when the agent is free the
first caller is connected, then the callback (before the third caller, who joined
later): the agent first, then the carrier receives the call, and the store says
``completed``. A number the carrier refuses ends ``failed`` after the configured attempts.
On an Indonesian public holiday (the clock the test controls) there is no queue: the
callback is offered and scheduled for the next staffed period.
"""
from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from dialplan.sandbox import Sandbox
from ivr.app import running_server
from ivr.asterisk import sounds_played_by
from ivr.config import Settings
from ivr.desk.app import demo_accounts, running_desk, sandbox_settings
from ivr.waiting.hours import StaffedHours, indonesian_holiday

from .conftest import EVIDENCE, until
from .sip_carrier import start_carrier
from .asterisk_sandbox import PORT_SHIFT, ivr_settings, running_sandbox
from .test_asterisk import sounds  # noqa: F401
from .test_desk_asterisk import PASSWORD, Agent

pytestmark = pytest.mark.asyncio(loop_scope="module")

AGI_PORT, SIP_PORT, AMI_PORT = (16773 + PORT_SHIFT, 17260 + PORT_SHIFT, 17238 + PORT_SHIFT)
CARRIER_PORT = 17280 + PORT_SHIFT
RTP_PORTS = f"{40000 + 10 * PORT_SHIFT}-{40998 + 10 * PORT_SHIFT}"
ANNOUNCE_SECONDS = 12
AGENT_HOLD = 5
WATCH_SECONDS = 2.0                 # a lost placeholder is placed again this soon
ANSWERING = "081234567801"          # the carrier answers this one
REFUSING = "089900000002"           # and refuses numbers starting 0899
TO_AGENT = "0"                      # main menu: talk to an agent


@pytest.fixture(scope="module")
def sandbox(sounds):  # noqa: F811
    with running_sandbox("waiting", evidence="asterisk-waiting-full.log", sounds_dir=sounds,
                         agi_address=f"127.0.0.1:{AGI_PORT}", sip_address=f"127.0.0.1:{SIP_PORT}",
                         ami_port=AMI_PORT, rtp_ports=RTP_PORTS, agent_password=PASSWORD,
                         carrier_address=f"127.0.0.1:{CARRIER_PORT}",
                         env={"IVR_WAIT_ANNOUNCE_SECONDS": str(ANNOUNCE_SECONDS),
                              "IVR_CALLBACK_RING_SECONDS": "5"}) as box:
        yield box


@pytest.fixture(scope="module")
def settings(membership_url, sounds, tmp_path_factory) -> Settings:  # noqa: F811
    return ivr_settings("waiting", membership_url, sounds, tmp_path_factory.mktemp("waiting"),
                        agi_port=AGI_PORT, desk_host="127.0.0.1", desk_port=0,
                        callback_offer_after=0.0, wait_stay_at=1, callback_attempts=2,
                        callback_retry_seconds=2.0, callback_watch_seconds=WATCH_SECONDS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def carrier():
    carrier, transports = await start_carrier(CARRIER_PORT, lambda n: not n.startswith("0899"))
    yield carrier
    for transport in transports:
        transport.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(sandbox, settings, carrier):
    desk_settings = sandbox_settings(settings, sandbox)
    async with running_server(settings) as (_server, app), \
            running_desk(desk_settings, accounts=demo_accounts(desk_settings)) as (url, desk):
        await until(lambda: desk.asterisk == "up", "the desk logs in to AMI")
        agent = Agent(url)
        await agent.login("agent1")
        try:
            yield url, desk, app, agent
        finally:
            await agent.post("/api/me/state", {"state": "offline"})
            await agent.close()


class Caller:
    """One test caller: the AGI commands its call ran, keys pressed when a prompt starts."""

    def __init__(self, sandbox: Sandbox, caller_id: str, on_prompt: dict[str, str] | None = None,
                 hold: float = 240) -> None:
        self.commands: list[str] = []
        self.keys: asyncio.Queue = asyncio.Queue()
        self.on_prompt = dict(on_prompt or {})
        self.task = asyncio.create_task(sandbox.originate_local_async(
            keys=TO_AGENT, wait=2, hold=hold, caller_id=caller_id, live_keys=self.keys,
            on_agi_command=self._seen, timeout=400))

    def _seen(self, command: str) -> None:
        """``on_prompt``: {"prompt": key} presses at its first playing, {"prompt#2": key}
        at its second."""
        self.commands.append(command)
        for wanted, key in list(self.on_prompt.items()):
            prompt, _, nth = wanted.partition("#")
            if (f"bpjs/{prompt}" in sounds_played_by(command)
                    and self.played().count(prompt) == int(nth or 1)):
                del self.on_prompt[wanted]
                self.keys.put_nowait(key)

    def in_line(self) -> int:
        """How many times the queue-wait route has sent the caller (back) into the queue."""
        return sum(1 for c in self.commands if c.startswith("SET VARIABLE IVR_QUEUE_PRIO"))

    def played(self) -> list[str]:
        return [sound.removeprefix("bpjs/") for c in self.commands
                for sound in sounds_played_by(c)]

    def first_announcement(self) -> list[str]:
        """The prompts of the first queue-wait run: from the first wait- prompt on."""
        played = self.played()
        start = next(i for i, p in enumerate(played) if p.startswith("wait-"))
        end = next((i for i, p in enumerate(played[start + 1:], start + 1)
                    if p in ("wait-next", "wait-position")), len(played))
        return played[start:end]

    def announcements(self) -> int:
        return sum(1 for p in self.played() if p in ("wait-next", "wait-position"))

    def hang_up(self) -> None:
        self.keys.put_nowait(None)


async def wrap_up_when_asked(agent: Agent, desk, done) -> list[str]:
    """Save the wrap-up of every call agent1 ends, until ``done()``; returns them."""
    wrapped: list[str] = []
    while not done():
        me = desk.me("agent1")
        if me["state"] == "wrap_up" and me["call_id"] not in wrapped:
            wrapped.append(me["call_id"])
            status, _ = await agent.post(f"/api/calls/{me['call_id']}/wrapup",
                                         {"disposition": "answered", "note": ""})
            assert status == 200
        await asyncio.sleep(0.1)
    return wrapped


def connected(agent: Agent) -> list[str]:
    return [d["call_id"] for n, d in agent.named("connected")]


async def test_three_callers_hear_their_places_and_the_callback_keeps_the_second_place(
        stack, sandbox, carrier):
    url, desk, app, agent = stack
    status, me = await agent.post("/api/me/state", {"state": "ready"})
    assert me["state"] == "ready"
    # The agent is busy with another caller for as long as the test wants.
    sandbox.cli("dialplan set global IVR_DEMO_AGENT_HOLD 300")
    busy = Caller(sandbox, "0811000200")
    await until(lambda: desk.me("agent1")["state"] == "on_call", "agent1 is on a call", 60)
    sandbox.cli(f"dialplan set global IVR_DEMO_AGENT_HOLD {AGENT_HOLD}")

    # Each joins once the one before is in line; the second takes the callback at its
    # second announcement, once all three have heard their places.
    first = Caller(sandbox, "0811000201")
    await until(lambda: first.in_line() >= 1, "the first caller waits", 60)
    second = Caller(sandbox, ANSWERING, {"callback-offer#2": "1", "callback-confirm": "1"})
    await until(lambda: second.in_line() >= 1, "the second caller waits", 60)
    third = Caller(sandbox, "0811000203")
    await until(lambda: third.in_line() >= 1, "the third caller waits", 60)

    # Each heard its own place and the expected wait (one agent, taking calls).
    assert first.first_announcement()[:2] == ["wait-next", "wait-estimate"]
    assert second.first_announcement()[:3] == ["wait-position", "num-2", "wait-estimate"]
    assert third.first_announcement()[:3] == ["wait-position", "num-3", "wait-estimate"]
    for caller in (second, third):
        assert "wait-estimate" in caller.first_announcement()

    # The second takes the callback with its caller id, confirmed, and hangs up.
    report = await asyncio.wait_for(second.task, 90)
    assert report.final["Route"] == "callback"
    second_id = report.route["CallId"]
    (callback,) = await desk.store.callbacks(second_id)
    assert callback["number_masked"] == "0812*****801"
    await until(lambda: any(e["kind"] == "callback" for e in desk.queue()["waiting"]),
                "the callback waits on the desk's board", 30)
    board = desk.queue()["waiting"]
    kinds = [(e["call_id"], e["kind"]) for e in board]
    assert (second_id, "callback") in kinds
    entry = next(e for e in board if e["kind"] == "callback")
    assert entry["waiting_s"] >= 5               # since the caller first joined, not now

    # The agent becomes free. The first caller, at the head, stayed in the queue after
    # the announcement (IVR_WAIT_STAY_AT=1): it is never out of it when an agent is free.
    assert first.in_line() == 1 and first.announcements() == 1
    busy.hang_up()
    wrapping = asyncio.create_task(wrap_up_when_asked(agent, desk, third.task.done))
    await until(lambda: len(connected(agent)) >= 4, "four calls connected to agent1", 150)
    first_id = (await first.task).route["CallId"]
    third_report = await asyncio.wait_for(third.task, 60)
    wrapping.cancel()
    await asyncio.gather(wrapping, return_exceptions=True)
    busy_id = (await busy.task).route["CallId"]
    assert connected(agent) == [busy_id, first_id, second_id, third_report.route["CallId"]]

    # The agent first (desk pop), then the carrier receives the call; completed.
    await until(lambda: carrier.invites, "the carrier receives the callback", 30)
    (invite,) = carrier.invites
    assert invite.number == ANSWERING and invite.answered
    # the queue row says "answered" by agent1 once the agent's leg of the callback has
    # ended, and agent1 was connected before the number was dialled
    await until(lambda: queue_result(desk, second_id, "answered"),
                "the callback's queue row is answered", 60)
    queue = await desk.store.get_queue(second_id)
    assert queue["answered_by"] == "agent1"
    answered_at = datetime.fromisoformat(queue["joined_at"]).timestamp() + queue["waited_s"]
    assert answered_at < invite.at
    await until(lambda: callback_status(desk, callback["id"], "completed"),
                "the callback is completed", 30)
    done = await desk.store.get_callback(callback["id"])
    assert [a["result"] for a in done["attempts"]] == ["answer"]     # placed once, never again
    # the board shows how it ended
    await until(lambda: board_callback(desk, callback["id"])["status"] == "completed",
                "the board shows the callback completed", 15)
    assert [a["result"] for a in board_callback(desk, callback["id"])["attempts"]] == ["answer"]


async def callback_status(desk, callback_id: str, status: str) -> bool:
    callback = await desk.store.get_callback(callback_id)
    return callback is not None and callback["status"] == status


async def queue_result(desk, call_id: str, result: str) -> bool:
    queue = await desk.store.get_queue(call_id)
    return queue is not None and queue["result"] == result


def board_callback(desk, callback_id: str) -> dict:
    """The callback as the desk's queue board shows it ({} when it is not there)."""
    return next((c for c in desk.queue()["callbacks"] if c["id"] == callback_id), {})


async def test_a_callback_that_is_never_answered_fails_after_the_attempts(
        stack, sandbox, carrier):
    """Also: its placeholder lost in Asterisk (hung up there: as after the queue's timeout
    or a restart) is placed again, in its place, without counting an attempt."""
    url, desk, app, agent = stack
    await agent.post("/api/me/state", {"state": "paused", "reason": "break"})
    before = len(carrier.invites)
    caller = Caller(sandbox, REFUSING, {"callback-offer": "1", "callback-confirm": "1"})
    report = await asyncio.wait_for(caller.task, 120)
    assert report.final["Route"] == "callback"
    (callback,) = await desk.store.callbacks(report.route["CallId"])
    assert "wait-no-estimate" in caller.played()        # nobody taking calls: no figure
    await until(lambda: placeholders(sandbox), "the placeholder waits in Asterisk", 30)
    await until(lambda: board_callback(desk, callback["id"]).get("status") == "queued",
                "the board shows the callback waiting in line", 15)
    lost = await placeholders(sandbox)
    for channel in lost:
        sandbox.cli(f"channel request hangup {channel}")

    async def placed_again() -> bool:
        now = await placeholders(sandbox)
        return bool(now) and now != lost
    await until(placed_again, "the watchdog places the callback again", 30)
    again = await desk.store.get_callback(callback["id"])
    assert again["status"] == "queued" and again["attempts"] == []
    assert again["joined_at"] == callback["joined_at"]
    status, _ = await agent.post("/api/me/state", {"state": "ready"})
    wrapping = asyncio.create_task(wrap_up_when_asked(agent, desk, lambda: False))
    try:
        await until(lambda: callback_status(desk, callback["id"], "failed"),
                    "the callback has failed", 120)
    finally:
        wrapping.cancel()
        await asyncio.gather(wrapping, return_exceptions=True)
    failed = await desk.store.get_callback(callback["id"])
    assert [a["result"] for a in failed["attempts"]] == ["busy", "busy"]
    assert [i.number for i in carrier.invites[before:]] == [REFUSING, REFUSING]
    await until(lambda: board_callback(desk, callback["id"]).get("status") == "failed",
                "the board shows the callback failed", 15)
    shown = board_callback(desk, callback["id"])
    assert [a["result"] for a in shown["attempts"]] == ["busy", "busy"]
    assert shown["number_masked"] == "0899*****002" and REFUSING not in json.dumps(desk.queue())


async def placeholders(sandbox: Sandbox) -> list[str]:
    """The callback placeholders' queue halves now in Asterisk (channel names)."""
    lines = (await asyncio.to_thread(sandbox.cli, "core show channels concise")).splitlines()
    return sorted(line.split("!", 1)[0] for line in lines
                  if line.startswith("Local/queue@waiting-callback-") and ";2!" in line)


async def test_on_a_public_holiday_no_queue_only_the_callback_for_the_next_period(
        stack, sandbox):
    url, desk, app, agent = stack
    year = datetime.now().year + 1             # the next one: its callback is in the future
    wib = ZoneInfo("Asia/Jakarta")
    holiday = datetime(year, 8, 17, 10, 0, tzinfo=wib)
    route = app.waiting
    saved = route.hours, route.clock
    route.clock = lambda: holiday
    route.hours = StaffedHours("mon-sat 08:00-20:00", clock=lambda: holiday)
    try:
        caller = Caller(sandbox, "081234567809", {"closed-callback-offer": "1",
                                                  "callback-confirm": "1"})
        report = await asyncio.wait_for(caller.task, 120)
    finally:
        route.hours, route.clock = saved
    played = caller.played()
    assert "closed-now" in played and "callback-next-period" in played
    assert "wait-position" not in played and "wait-next" not in played
    assert report.final["Route"] == "callback"
    (callback,) = await desk.store.callbacks(report.route["CallId"])
    next_day = date(year, 8, 18)
    while next_day.weekday() == 6 or indonesian_holiday(next_day):
        next_day += timedelta(days=1)
    assert datetime.fromisoformat(callback["due_at"]) == datetime.combine(
        next_day, datetime.min.time().replace(hour=8), wib)
    assert callback["status"] == "scheduled"
    assert await desk.store.get_queue(report.route["CallId"]) is None   # never queued


async def test_callback_numbers_never_reach_the_logs_or_records_in_clear(stack):
    for name in ("suite.log", "calls-waiting.jsonl"):
        text = (EVIDENCE / name).read_text(errors="replace")
        for number in (ANSWERING, REFUSING, "081234567809"):
            assert number not in text, (name, number[:4])
    assert "0812*****801" in (EVIDENCE / "suite.log").read_text(errors="replace")
    records = [json.loads(line) for line in
               (EVIDENCE / "calls-waiting.jsonl").read_text().splitlines() if line]
    assert records and all(ANSWERING not in json.dumps(r) for r in records)
