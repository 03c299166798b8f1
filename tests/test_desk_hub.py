"""The desk's hub (ivr/desk/service.py) over a real AMI link to the fake AMI server and a
real SQLite store: presence as AMI actions read back from Asterisk's events, the ringing →
connected → ended flow on the right agent's stream, the wrap-up pause, what an agent may
see of a call, and the resynchronisation after Asterisk comes back."""
from __future__ import annotations

import asyncio
import time

import pytest

from ivr.desk.accounts import Accounts
from ivr.desk.ami import AmiLink
from ivr.desk.board import QueueBoard
from ivr.desk.errors import DeskError
from ivr.desk.service import Desk, Recent
from ivr.store.sqlite import SqliteStore
from ivr.waiting.scheduler import CallbackScheduler

from .conftest import until
from .fake_ami import FakeAmi

CARD = "0001234567890"
VERIFIED = {"IVR_CALL_ID": "call-1", "IVR_VERIFIED": "1", "IVR_CARD": CARD,
            "IVR_TRANSFER_REASON": "caller_request", "IVR_MEMBER_STATUS": "AKTIF"}
UNVERIFIED = {"IVR_CALL_ID": "call-2", "IVR_VERIFIED": "0", "IVR_CARD": "",
              "IVR_TRANSFER_REASON": "verification_failed", "IVR_MEMBER_STATUS": ""}
DISPOSITIONS = ["answered", "complaint", "other"]


@pytest.fixture
async def hub(tmp_path):
    ami = await FakeAmi(secret="hub-secret").start()
    store = SqliteStore(str(tmp_path / "store.sqlite3"))
    await store.open()
    accounts = Accounts.demo("hub-test-password", interface="PJSIP/{agent}")
    desk = Desk(store, QueueBoard("agents"), accounts, dispositions=DISPOSITIONS)
    link = AmiLink("127.0.0.1", ami.port, "desk", "hub-secret", on_event=desk.on_event,
                   on_state=lambda state, detail: (desk.on_state(state, detail),
                                                   state == "up" and desk.resync(link.snapshot)),
                   ping_interval=0.5, action_timeout=1.0, reconnect_min=0.05,
                   reconnect_max=0.2)
    desk.attach(link)
    await desk.start()
    await link.start()
    await until(lambda: desk.asterisk == "up", "the link is up")
    try:
        yield desk, ami, store
    finally:
        await link.stop()
        await desk.stop()
        await store.close()
        await ami.close()


async def stored(read, what: str, ok=bool, seconds: float = 5.0):
    """The store is written in the background: wait until ``read()`` gives what ``ok`` likes."""
    deadline = time.monotonic() + seconds
    while not ok(row := await read()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)
    return row


def drain(stream: asyncio.Queue) -> list[tuple[str, dict]]:
    items = []
    while not stream.empty():
        items.append(stream.get_nowait())
    return items


async def test_presence_is_an_ami_action_and_read_back_from_asterisk(hub):
    desk, ami, _store = hub
    assert desk.me("agent1")["state"] == "offline"
    me = await desk.set_state("agent1", "ready", None)
    assert me["state"] == "ready" and ami.members["agent1"].name == "agent1"
    me = await desk.set_state("agent1", "paused", "break")
    assert (me["state"], me["pause_reason"]) == ("paused", "break")
    assert ami.members["agent1"].paused
    me = await desk.set_state("agent1", "offline", None)
    assert me["state"] == "offline" and "agent1" not in ami.members
    with pytest.raises(DeskError) as bad:
        await desk.set_state("agent1", "paused", "lunch in the sun")
    assert bad.value.status == 400
    with pytest.raises(DeskError) as bad:
        await desk.set_state("agent1", "asleep", None)
    assert bad.value.status == 400


async def test_a_call_rings_connects_and_ends_on_its_agents_stream_only(hub):
    desk, ami, store = hub
    one, two = desk.subscribe("agent1"), desk.subscribe("agent2")
    await desk.set_state("agent1", "ready", None)
    await desk.set_state("agent2", "ready", None)
    drain(one), drain(two)
    caller = ami.caller_join(VERIFIED)
    await until(lambda: desk.queue()["waiting"], "the caller is on the board")
    (waiting,) = desk.queue()["waiting"]
    assert (waiting["call_id"], waiting["position"], waiting["verified"],
            waiting["transfer_reason"], waiting["member_status"]) == (
        "call-1", 1, True, "caller_request", "AKTIF")
    assert "card" not in waiting
    ami.agent_called(caller, "agent1")
    await until(lambda: desk.me("agent1")["state"] == "ringing", "agent1 rings")
    ami.agent_connect(caller, "agent1")
    await until(lambda: desk.me("agent1")["state"] == "on_call", "agent1 talks")
    ami.agent_complete(caller, "agent1")
    await until(lambda: desk.me("agent1")["state"] == "wrap_up", "agent1 wraps up")
    events = [(name, data.get("call_id")) for name, data in drain(one)
              if name in ("ringing", "connected", "ended")]
    assert events == [("ringing", "call-1"), ("connected", "call-1"), ("ended", "call-1")]
    assert [n for n, _ in drain(two) if n in ("ringing", "connected", "ended")] == []
    # the queue will not ring agent1 while the wrap-up is written
    await until(lambda: ami.members["agent1"].paused, "agent1 is paused for it")
    assert ami.members["agent1"].reason == "wrap_up"
    await stored(lambda: store.get_queue("call-1"), "the queue history has the answer",
                 lambda row: row and row.get("answered_by"))
    saved = await desk.wrapup("agent1", "call-1", "answered", "explained the arrears")
    assert saved["disposition"] == "answered"
    assert desk.me("agent1")["state"] == "ready" and not ami.members["agent1"].paused
    assert (await store.get_wrapup("call-1"))["note"] == "explained the arrears"
    queue = await store.get_queue("call-1")
    assert queue["answered_by"] == "agent1" and queue["result"] == "answered"


async def test_the_full_card_goes_only_to_the_agent_who_handles_a_verified_call(hub):
    desk, ami, store = hub
    await desk.set_state("agent1", "ready", None)
    caller = ami.caller_join(VERIFIED)
    ami.caller_join(UNVERIFIED)
    ami.agent_called(caller, "agent1")
    await until(lambda: desk.me("agent1")["state"] == "ringing", "agent1 rings")
    mine = await desk.call_context("agent1", "call-1")
    assert mine["verified"] is True and mine["card"] == CARD
    assert mine["member_status"] == "AKTIF" and mine["transfer_reason"] == "caller_request"
    theirs = await desk.call_context("agent2", "call-1")
    assert theirs["verified"] is True and theirs["card"] is None
    unverified = await desk.call_context("agent1", "call-2")
    assert unverified["verified"] is False and unverified["card"] is None
    audit = await store.audit_log("call-1")
    assert [(e["agent"], e["action"]) for e in audit] == [("agent1", "view_context"),
                                                          ("agent2", "view_context")]
    with pytest.raises(DeskError) as unknown:
        await desk.call_context("agent1", "no-such-call")
    assert unknown.value.status == 404


async def test_wrap_up_refuses_bad_input_and_other_agents_calls(hub):
    desk, ami, _store = hub
    await desk.set_state("agent1", "ready", None)
    caller = ami.caller_join(VERIFIED)
    ami.agent_called(caller, "agent1")
    ami.agent_connect(caller, "agent1")
    await until(lambda: desk.me("agent1")["state"] == "on_call", "agent1 talks")
    for agent, call_id, disposition, note, status in (
            ("agent1", "call-1", "made-up", "", 400),
            ("agent1", "call-1", "answered", "x" * 5000, 400),
            ("agent1", "no-such-call", "answered", "", 404),
            ("agent2", "call-1", "answered", "", 403)):
        with pytest.raises(DeskError) as refused:
            await desk.wrapup(agent, call_id, disposition, note)
        assert refused.value.status == status, (disposition, len(note), agent)


async def test_a_dropped_asterisk_is_said_and_the_ready_agent_put_back(hub):
    desk, ami, _store = hub
    stream = desk.subscribe("agent1")
    await desk.set_state("agent1", "ready", None)
    ami.caller_join(UNVERIFIED)
    await until(lambda: desk.queue()["waiting"], "the caller waits")
    # Asterisk restarts: its dynamic members and callers are gone
    ami.members.clear()
    ami.waiting.clear()
    ami.channels.clear()
    ami.drop()
    await until(lambda: desk.asterisk == "up" and "agent1" in ami.members,
                "the link is back and agent1 is a member again")
    states = [data["state"] for name, data in drain(stream) if name == "asterisk"]
    assert states[0] != "up" and states[-1] == "up"
    assert desk.queue()["waiting"] == []                 # resynchronised, not remembered
    assert desk.me("agent1")["state"] == "ready"
    with pytest.raises(DeskError) as refused:
        ami.drop()
        await until(lambda: desk.asterisk != "up", "the link notices")
        await desk.set_state("agent1", "paused", "break")
    assert refused.value.status == 409


async def test_callbacks_and_their_attempts_are_on_the_queue_board(hub):
    desk, ami, store = hub
    stream = desk.subscribe("agent1")
    callback_id = "0123456789abcdef0123456789abcdef"
    await store.callback_create({"id": callback_id, "call_id": "call-9",
                                 "number": "081234567809", "number_masked": "0812*****809",
                                 "joined_at": "2026-12-02T03:00:00+00:00",
                                 "due_at": "2026-12-02T03:05:00+00:00", "status": "scheduled"})
    await store.callback_attempt(callback_id, "busy", "2026-12-02T03:04:00+00:00")
    scheduler = CallbackScheduler(store, desk.ami, on_board=desk.set_callbacks)
    await scheduler.refresh_board()
    (shown,) = desk.queue()["callbacks"]
    assert (shown["call_id"], shown["status"], shown["number_masked"]) == (
        "call-9", "scheduled", "0812*****809")
    assert [(a["n"], a["result"]) for a in shown["attempts"]] == [(1, "busy")]
    assert "number" not in shown
    # pushed to the agents' streams like any queue change
    pushed = []
    await until(lambda: pushed.extend(d for n, d in drain(stream) if n == "queue")
                or any(d.get("callbacks") for d in pushed), "a queue update with the callback")
    assert "081234567809" not in repr(pushed)
    # later updates of the line leave them out while they stay the same
    ami.caller_join(VERIFIED)
    later = await until(lambda: [d for n, d in drain(stream) if n == "queue" and d["waiting"]],
                        "the next queue update")
    assert all("callbacks" not in d for d in later)
    assert desk.queue()["callbacks"] == [shown]                   # /api/queue: always



async def test_a_call_whose_agentcomplete_lost_its_caller_still_ends_and_asks_a_wrap_up(hub):
    """A callback placeholder is gone the moment its agent hangs up; Asterisk's
    AgentComplete then has no caller fields. The call still ends for its agent: the
    wrap-up is asked, the queue row says answered."""
    desk, ami, store = hub
    stream = desk.subscribe("agent1")
    await desk.set_state("agent1", "ready", None)
    caller = ami.caller_join(VERIFIED)
    await until(lambda: desk.queue()["waiting"], "the caller is on the board")
    ami.agent_called(caller, "agent1")
    ami.agent_connect(caller, "agent1")
    await until(lambda: desk.me("agent1")["state"] == "on_call", "agent1 talks")
    ami.agent_complete(caller, "agent1", reason="agent", caller_gone=True)
    await until(lambda: desk.me("agent1")["state"] == "wrap_up", "agent1 wraps up")
    assert [d["call_id"] for n, d in drain(stream) if n == "ended"] == ["call-1"]
    await stored(lambda: store.get_queue("call-1"), "the queue row is answered",
                 lambda row: row and row["result"] == "answered")
    await until(lambda: ami.members["agent1"].paused, "agent1 is paused for the wrap-up")


async def test_the_answering_agent_goes_from_ringing_to_connected_and_an_unanswered_ring_ends(
        hub):
    """Asterisk sends the caller's Leave just before AgentConnect: the agent's page must not
    see "ready" in between (it would close the pop and open it again). A Leave that no
    AgentConnect follows (the waiting loop's round ended) stops the ring a moment later."""
    desk, ami, _store = hub
    stream = desk.subscribe("agent1")
    await desk.set_state("agent1", "ready", None)
    caller = ami.caller_join(VERIFIED)
    await until(lambda: desk.queue()["waiting"], "the caller is on the board")
    ami.agent_called(caller, "agent1")
    await until(lambda: desk.me("agent1")["state"] == "ringing", "agent1 rings")
    drain(stream)
    ami.agent_connect(caller, "agent1")                   # Leave, then AgentConnect
    await until(lambda: desk.me("agent1")["state"] == "on_call", "agent1 talks")
    await asyncio.sleep(0.3)
    states = [d["state"] for n, d in drain(stream) if n == "me"]
    assert states and "ready" not in states and states[-1] == "on_call"
    ami.agent_complete(caller, "agent1")
    await desk.wrapup("agent1", "call-1", "answered", "")
    # a second caller rung, then out of the queue with no answer
    other = ami.caller_join(UNVERIFIED)
    await until(lambda: desk.queue()["waiting"], "the second caller is on the board")
    ami.agent_called(other, "agent1")
    await until(lambda: desk.me("agent1")["state"] == "ringing", "agent1 rings again")
    ami.caller_leave(other, hang_up=False)
    await asyncio.sleep(0.2)
    assert desk.me("agent1")["state"] == "ringing"       # not yet: an answer may follow
    await until(lambda: desk.me("agent1")["state"] == "ready", "the ring settles", 5)


async def test_every_agent_rung_sees_the_card_while_rung_and_only_the_one_who_answers_after(hub):
    """ringall rings every ready agent: each may see the verified card while rung; once
    one answers, the others no longer may (nor write its wrap-up)."""
    desk, ami, _store = hub
    await desk.set_state("agent1", "ready", None)
    await desk.set_state("agent2", "ready", None)
    caller = ami.caller_join(VERIFIED)
    ami.agent_called(caller, "agent1")
    ami.agent_called(caller, "agent2")
    await until(lambda: desk.me("agent2")["state"] == "ringing", "both ring")
    for agent in ("agent1", "agent2"):
        assert (await desk.call_context(agent, "call-1"))["card"] == CARD, agent
    ami.agent_connect(caller, "agent1")
    await until(lambda: desk.me("agent2")["state"] == "ready", "agent2 stops ringing")
    assert (await desk.call_context("agent1", "call-1"))["card"] == CARD
    assert (await desk.call_context("agent2", "call-1"))["card"] is None
    with pytest.raises(DeskError) as refused:
        await desk.wrapup("agent2", "call-1", "answered", "")
    assert refused.value.status == 403
    ami.agent_complete(caller, "agent1")
    await until(lambda: desk.me("agent1")["state"] == "wrap_up", "agent1 wraps up")
    assert (await desk.wrapup("agent1", "call-1", "answered", ""))["agent"] == "agent1"


async def test_an_agent_who_logs_out_while_asterisk_is_away_is_not_put_back(hub):
    desk, ami, _store = hub
    await desk.set_state("agent1", "ready", None)
    ami.members.clear()                     # Asterisk restarts and forgets its members
    ami.drop()
    await until(lambda: desk.asterisk != "up", "the link notices")
    await desk.logged_out("agent1")         # the agent leaves meanwhile
    await until(lambda: desk.asterisk == "up", "the link is back")
    await asyncio.sleep(0.5)                # the resync and its presence restoring are done
    assert "agent1" not in ami.members and desk.me("agent1")["state"] == "offline"


def test_the_desk_remembers_only_the_latest_calls():
    recent = Recent(2)
    for call_id in ("a", "b", "a", "c"):
        recent.add(call_id)
    assert "a" in recent and "c" in recent and "b" not in recent


async def test_a_resync_that_fails_is_tried_again(hub):
    """Asterisk back, but its QueueStatus unanswered: the desk asks again until it has the
    queue, then puts the ready agent back."""
    desk, ami, _store = hub
    await desk.set_state("agent1", "ready", None)
    ami.members.clear()                          # Asterisk restarted
    ami.silent.add("queuestatus")
    ami.drop()
    await until(lambda: desk.asterisk == "up", "the link is back")
    await asyncio.sleep(1.5)                     # the first snapshot times out (1 s)
    assert "agent1" not in ami.members
    ami.silent.clear()
    await until(lambda: "agent1" in ami.members, "agent1 put back after a second try", 10)
