"""AmiLink and QueueBoard against a real Asterisk 22 (the sandbox of dialplan/sandbox.py, an
instance "ami" of its own, on test_asterisk.py's ports, which it uses only while its own
module runs): the event field names the board relies on, as Asterisk sends them.

One queue story over AMI as the "desk" user of manager.conf (read = call,agent): a test agent
(Local/report@agent/n, which answers, waits 2 s and hangs up) joins paused; two callers
(Local channels whose answered half runs the dialplan's Queue(agents)) wait with the
IVR's variables; the
snapshot reads them back with Getvar; the agent resumes, is rung, answers, completes; the
second caller hangs up while waiting. manager.conf's ``channelvars`` line puts the IVR's
variables on every channel event.
"""
from __future__ import annotations

import asyncio
import re
import time

import pytest
import pytest_asyncio

from dialplan.sandbox import Sandbox
from ivr.desk.ami import IVR_VARIABLES, AmiLink
from ivr.desk.board import QueueBoard

from .asterisk_sandbox import PORT_SHIFT, running_sandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")

# test_asterisk.py's ports (IVR_TEST_PORT_SHIFT moves them): its instance is down by now.
AMI_PORT, SIP_PORT = 15038 + PORT_SHIFT, 15060 + PORT_SHIFT
RTP_PORTS = f"{20000 + 2000 * (PORT_SHIFT // 100)}-{21998 + 2000 * (PORT_SHIFT // 100)}"
AGENT = "agent-ami"
AGENT_INTERFACE = "Local/report@agent/n"


@pytest.fixture(scope="module")
def sandbox():
    with running_sandbox("ami", agi_address=f"127.0.0.1:{14573 + PORT_SHIFT}",
                         sip_address=f"127.0.0.1:{SIP_PORT}", ami_port=AMI_PORT,
                         desk_ami_secret="ami-test-secret", rtp_ports=RTP_PORTS) as box:
        assert "channelvars = " + ",".join(IVR_VARIABLES) in (
            box.host_path(box.layout.config) / "manager.conf").read_text()
        yield box


class Watch:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.states: list[str] = []

    async def until(self, predicate, timeout: float = 30.0):
        async with asyncio.timeout(timeout):
            while not (found := predicate()):
                await asyncio.sleep(0.05)
        return found

    def named(self, name: str) -> list[dict]:
        return [e for e in self.events if e.get("Event") == name]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def link(sandbox):
    watch = Watch()
    link = AmiLink("127.0.0.1", AMI_PORT, "desk", sandbox.desk_ami_secret,
                   on_event=watch.events.append, on_state=lambda s, d: watch.states.append(s),
                   ping_interval=1.0, action_timeout=5.0)
    await link.start()
    await watch.until(lambda: link.state == "up")
    yield link, watch
    await link.stop()


async def place_caller(sandbox: Sandbox, call_id: str, **variables: str) -> str:
    """A caller in the queue: Local/echo@agent answers (and echoes), then its other half,
    the caller, runs the dialplan's queue step, Queue(agents). Returns its name. (Not
    report@agent: that is the agent's device, and the queue rings no agent in use.)"""
    ivr = {"IVR_CALL_ID": call_id, **variables}
    async with sandbox.ami("call") as manager:
        reply = await manager.send_action({
            "Action": "Originate", "Channel": "Local/echo@agent",
            "Context": "hotline-route", "Exten": "queue", "Priority": "1", "Async": "true",
            "Timeout": "10000",
            "Variable": [f"__{k}={v}" for k, v in ivr.items()]})
    replies = reply if isinstance(reply, list) else [reply]
    placed = next(r for r in replies if r.get("Event") == "OriginateResponse")
    assert placed.get("Response") == "Success", replies
    return placed["Channel"]


async def test_queue_events_as_asterisk_sends_them(sandbox, link):
    link, watch = link
    board = QueueBoard("agents")
    changes = []
    assert re.fullmatch(r"\d+\.\d+\.\d+", link.version), link.version

    # --- a member joins, paused
    added = await link.action({"Action": "QueueAdd", "Queue": "agents",
                               "Interface": AGENT_INTERFACE, "MemberName": AGENT,
                               "Paused": "true", "Reason": "meeting"})
    assert added["Message"] == "Added interface to queue"
    (member,) = await watch.until(lambda: [e for e in watch.named("QueueMemberAdded")
                                           if e.get("MemberName") == AGENT])
    print("QueueMemberAdded", sorted(member))
    assert (member["Queue"], member["Interface"], member["Paused"], member["PausedReason"],
            member["Membership"]) == ("agents", AGENT_INTERFACE, "1", "meeting", "dynamic")
    assert {"Status", "InCall", "StateInterface", "Wrapuptime"} <= set(member)

    # --- two callers wait, with the IVR's variables
    first = await place_caller(sandbox, "ami-call-1", IVR_VERIFIED="1", IVR_CARD="0001234567890",
                               IVR_TRANSFER_REASON="caller_request", IVR_MEMBER_STATUS="AKTIF")
    second = await place_caller(sandbox, "ami-call-2", IVR_VERIFIED="0",
                                IVR_TRANSFER_REASON="verification_failed")
    joins = await watch.until(lambda: len(watch.named("QueueCallerJoin")) == 2
                              and watch.named("QueueCallerJoin"))
    print("QueueCallerJoin", sorted(joins[0]))
    assert [(j["Channel"], j["Position"], j["Count"], j["Queue"]) for j in joins] == [
        (first, "1", "1", "agents"), (second, "2", "2", "agents")]
    assert joins[0]["ChanVariables"] == {
        "IVR_CALL_ID": "ami-call-1", "IVR_TRANSFER_REASON": "caller_request",
        "IVR_VERIFIED": "1", "IVR_MEMBER_STATUS": "AKTIF", "IVR_CARD": "0001234567890",
        "IVR_QUEUE_JOINED": "", "IVR_CALLBACK_ID": ""}     # no queue-wait route here
    assert joins[1]["ChanVariables"]["IVR_CARD"] == ""

    # --- the snapshot a resync starts from
    snapshot = await link.snapshot("agents")
    print("snapshot", [(e["Event"], sorted(e)) for e in snapshot])
    entries = [e for e in snapshot if e["Event"] == "QueueEntry"]
    assert [(e["Position"], e["Channel"], e["Uniqueid"]) for e in entries] == [
        ("1", first, joins[0]["Uniqueid"]), ("2", second, joins[1]["Uniqueid"])]
    assert entries[0]["ChanVariables"] == joins[0]["ChanVariables"]
    assert int(entries[0]["Wait"]) >= 0
    (snap_member,) = [e for e in snapshot if e["Event"] == "QueueMember" and e["Name"] == AGENT]
    assert (snap_member["Location"], snap_member["Paused"], snap_member["PausedReason"]) == (
        AGENT_INTERFACE, "1", "meeting")
    for event in snapshot:
        board.apply(event)
    assert [e.call_id for e in board.waiting()] == ["ami-call-1", "ami-call-2"]
    assert board.entry("ami-call-1").card == "0001234567890"
    assert board.members()[AGENT].paused

    # --- from here the board follows live events
    seen = len(watch.events)
    async with sandbox.ami("call") as manager:       # the second caller gives up
        await manager.send_action({"Action": "Hangup", "Channel": second})
    await watch.until(lambda: watch.named("QueueCallerLeave"))
    await link.action({"Action": "QueuePause", "Queue": "agents",
                       "Interface": AGENT_INTERFACE, "Paused": "false"})
    await watch.until(lambda: watch.named("AgentComplete"), timeout=40)
    await link.action({"Action": "QueuePause", "Queue": "agents",
                       "Interface": AGENT_INTERFACE, "Paused": "true", "Reason": "break"})
    await watch.until(lambda: [e for e in watch.named("QueueMemberPause")
                               if e.get("PausedReason") == "break"])
    await link.action({"Action": "QueueRemove", "Queue": "agents",
                       "Interface": AGENT_INTERFACE})
    await watch.until(lambda: watch.named("QueueMemberRemoved"))
    live = watch.events[seen:]
    for event in live:
        changes += [(c.kind, c.agent, c.call_id) for c in board.apply(event)]
    order = [e["Event"] for e in live if e["Event"] != "QueueMemberStatus"]
    print("live order", order)
    for name in ("QueueMemberPause", "AgentCalled", "QueueCallerLeave", "AgentConnect",
                 "AgentComplete", "QueueCallerAbandon", "QueueMemberRemoved"):
        print(name, sorted(watch.named(name)[0]))

    (called,) = [e for e in watch.named("AgentCalled") if e["Uniqueid"] == joins[0]["Uniqueid"]]
    assert (called["MemberName"], called["Interface"], called["Queue"]) == (
        AGENT, AGENT_INTERFACE, "agents")
    assert called["DestChannel"].startswith("Local/report@agent-")
    assert called["DestChanVariables"]["IVR_CALL_ID"] == "ami-call-1"
    connect = watch.named("AgentConnect")[0]
    assert {"HoldTime", "RingTime", "DestUniqueid", "MemberName", "Interface"} <= set(connect)
    complete = watch.named("AgentComplete")[0]
    assert complete["Reason"] in ("agent", "caller") and int(complete["TalkTime"]) >= 1
    (abandon,) = watch.named("QueueCallerAbandon")
    assert (abandon["Uniqueid"], abandon["Position"], abandon["OriginalPosition"]) == (
        joins[1]["Uniqueid"], "2", "2")
    assert int(abandon["HoldTime"]) >= 0
    # Abandon before its Leave; the answered caller's Leave before AgentConnect
    assert order.index("QueueCallerAbandon") < order.index("QueueCallerLeave")
    assert order.index("QueueCallerLeave", order.index("AgentCalled")) < order.index(
        "AgentConnect")

    assert [c for c in changes if c[0] != "member"] == [
        ("queue", None, "ami-call-2"),
        ("ringing", AGENT, "ami-call-1"),
        ("queue", None, "ami-call-1"),              # the Leave before the answer stops no ring
        ("connected", AGENT, "ami-call-1"), ("ended", AGENT, "ami-call-1")]
    assert board.waiting() == [] and board.entry("ami-call-1") is None
    paused = [c for c in changes if c == ("member", AGENT, None)]
    assert len(paused) >= 3                            # resumed, paused, removed
    assert AGENT not in board.members()
    # queues.conf's static members: softphones that never registered are not "ready"
    print("static members", board.members(), board.counts())
    assert board.counts() == {"ready": 0, "on_call": 0, "paused": 0}
    assert watch.states == ["connecting", "up"]        # never dropped meanwhile


async def test_getvar_of_a_gone_channel_and_a_wrong_secret(sandbox, link):
    link, watch = link
    assert await link.channel_variables("Local/nobody@nowhere-00000000;2", IVR_VARIABLES) == {}
    states = []
    wrong = AmiLink("127.0.0.1", AMI_PORT, "desk", "not-the-secret", on_event=lambda e: None,
                    on_state=lambda s, d: states.append((s, d)), reconnect_max=30)
    started = time.monotonic()
    await wrong.start()
    try:
        await watch.until(lambda: any(s == "auth_failed" for s, _ in states), timeout=15)
    finally:
        await wrong.stop()
    print(f"auth_failed after {time.monotonic() - started:.2f} s:", states[1][1])
    assert [s for s, _ in states] == ["connecting", "auth_failed", "down"]
    assert "Authentication failed" in states[1][1]
