"""AmiLink against the fake AMI server over real TCP on loopback: connection life cycle,
the guards against panoramisk's traps, and the snapshot a hub resynchronises from."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

import pytest

from ivr.desk.ami import (MAX_MESSAGE_BYTES, AmiError, AmiLink, AmiUnavailable,
                          parse_message)
from ivr.desk.board import Change, QueueBoard

from .fake_ami import FakeAmi

SECRET = "fake-ami-secret"


class Recorder:
    """on_event / on_state of a link, with waits."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.states: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def on_event(self, event: dict) -> None:
        self.events.append(event)
        self._changed.set()

    def on_state(self, state: str, detail: str) -> None:
        self.states.append((state, detail))
        self._changed.set()

    async def until(self, predicate, timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (it may look at the fake server too)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await self._changed.wait()

    def state_count(self, state: str) -> int:
        return sum(1 for s, _ in self.states if s == state)


def make_link(port: int, rec: Recorder, secret: str = SECRET, **kwargs) -> AmiLink:
    options = dict(ping_interval=0.2, action_timeout=0.5, reconnect_min=0.05,
                   reconnect_max=0.2)
    options.update(kwargs)
    return AmiLink("127.0.0.1", port, "desk", secret, on_event=rec.on_event,
                   on_state=rec.on_state, **options)


@pytest.fixture
async def ami():
    server = await FakeAmi(secret=SECRET).start()
    yield server
    await server.close()


@pytest.fixture
async def up(ami):
    """A link logged in to the fake: (link, recorder, fake)."""
    rec = Recorder()
    link = make_link(ami.port, rec)
    await link.start()
    await rec.until(lambda: link.state == "up")
    yield link, rec, ami
    await link.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_refused_then_asterisk_comes_up():
    port = free_port()
    rec = Recorder()
    link = make_link(port, rec)
    await link.start()
    try:
        await rec.until(lambda: link.state == "down")
        assert "cannot connect" in link.detail
        server = await FakeAmi(secret=SECRET).start(port)
        try:
            await rec.until(lambda: link.state == "up")
            assert [s for s, _ in rec.states] == ["connecting", "down", "up"]
            assert link.version == "11.0.0"
            assert (await link.action({"Action": "Ping"}))["Ping"] == "Pong"
        finally:
            await link.stop()
            await server.close()
    finally:
        await link.stop()
    assert link.state == "down" and link.detail == "stopped"


async def test_wrong_secret_is_auth_failed_said_once_and_never_up(ami, caplog):
    rec = Recorder()
    link = make_link(ami.port, rec, secret="wrong-secret", reconnect_min=0.01,
                     reconnect_max=0.3)
    with caplog.at_level(logging.DEBUG, logger="ivr.desk.ami"):
        await link.start()
        try:
            await rec.until(lambda: len(ami.logins) >= 3)       # retried, slowly
        finally:
            await link.stop()
    assert ami.logins[:3] == [("desk", False)] * 3
    # slowly: reconnect_max between attempts, not the backoff of a refused connection
    times = ami.login_times
    assert all(later - earlier >= 0.3 for earlier, later in zip(times, times[1:]))
    assert link.state == "down"
    assert [s for s, _ in rec.states] == ["connecting", "auth_failed", "down"]
    assert "Authentication failed" in rec.states[1][1]
    said = [r for r in caplog.records if "auth_failed" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert not any("wrong-secret" in r.getMessage() for r in caplog.records)


async def test_no_secret_means_no_connection(ami):
    rec = Recorder()
    link = make_link(ami.port, rec, secret="")
    await link.start()
    await asyncio.sleep(0.1)
    assert link.state == "down" and "IVR_AMI_SECRET" in link.detail
    assert ami.logins == []
    with pytest.raises(AmiUnavailable):
        await link.action({"Action": "Ping"})
    await link.stop()


async def test_events_arrive_in_order_with_channel_variables(up):
    link, rec, ami = up
    caller = ami.caller_join({"IVR_CALL_ID": "call-1", "IVR_VERIFIED": "1",
                              "IVR_CARD": "0001234567890", "IVR_TRANSFER_REASON": "a=b"})
    ami.add_member("agent1", "PJSIP/agent1")
    ami.agent_called(caller, "agent1")
    await rec.until(lambda: len(rec.events) == 3)
    join, added, called = rec.events
    assert [e["Event"] for e in rec.events] == ["QueueCallerJoin", "QueueMemberAdded",
                                                 "AgentCalled"]
    assert join["ChanVariables"] == {"IVR_CALL_ID": "call-1", "IVR_TRANSFER_REASON": "a=b",
                                     "IVR_VERIFIED": "1", "IVR_MEMBER_STATUS": "",
                                     "IVR_CARD": "0001234567890"}
    assert "ChanVariable" not in join and join["AccountCode"] == ""
    assert join["Position"] == "1" and join["Uniqueid"] == caller.uniqueid
    assert called["DestChanVariables"]["IVR_CALL_ID"] == "call-1"
    assert called["DestChannel"].startswith("PJSIP/agent1-")
    assert all(isinstance(v, str) for e in rec.events for k, v in e.items()
               if not k.endswith("ChanVariables"))


def test_parse_message_keeps_empty_values_and_splits_variables():
    message = parse_message("Event: X\r\nChanVariable: A=1=2\r\nChanVariable: B=\r\n"
                            "DestChanVariable: C\r\nPausedReason: \r\nEmpty:\r\n"
                            "garbage line\r\nOutput: one\r\nOutput: two")
    assert message == {"Event": "X", "ChanVariables": {"A": "1=2", "B": ""},
                       "DestChanVariables": {"C": ""}, "PausedReason": "", "Empty": "",
                       "Output": "one\ntwo"}
    escaped = parse_message('Event: X\r\nChanVariable: Q=say \\"hi\\"\\n\\\\ok')
    assert escaped["ChanVariables"] == {"Q": 'say "hi"\n\\ok'}
    assert parse_message("no headers here") is None
    assert parse_message("Foo: bar") is None


async def test_a_single_chanvariable_header_is_a_dict_too(up):
    link, rec, ami = up
    ami.push_raw(b"Event: QueueCallerJoin\r\nQueue: agents\r\nUniqueid: 1.1\r\n"
                 b"ChanVariable: IVR_CALL_ID=only-one\r\n\r\n")
    await rec.until(lambda: rec.events)
    assert rec.events[0]["ChanVariables"] == {"IVR_CALL_ID": "only-one"}


async def test_dropped_connection_goes_down_reconnects_and_resyncs(up):
    link, rec, ami = up
    board = QueueBoard()
    resyncs: list[int] = []

    async def resync() -> None:          # what the desk's hub does on "up"
        snapshot = await link.snapshot("agents")
        board.reset()
        for event in snapshot:
            board.apply(event)
        resyncs.append(len(snapshot))

    link._on_state = lambda state, detail: (rec.on_state(state, detail), state == "up"
                                            and asyncio.get_running_loop().create_task(resync()))
    link._on_event = lambda event: (rec.on_event(event), board.apply(event))
    ami.add_member("agent1", "PJSIP/agent1")
    first = ami.caller_join({"IVR_CALL_ID": "first"})
    await rec.until(lambda: len(board.waiting()) == 1)

    ami.drop()
    await rec.until(lambda: link.state == "down")
    assert "closed" in link.detail or "lost" in link.detail
    # Meanwhile Asterisk moved on: events the desk never sees.
    ami.caller_leave(first, abandon=True)
    ami.caller_join({"IVR_CALL_ID": "second", "IVR_VERIFIED": "1", "IVR_CARD": "0001234567890"})
    ami.members["agent1"].paused, ami.members["agent1"].reason = True, "break"
    await rec.until(lambda: rec.state_count("up") == 2)
    await rec.until(lambda: resyncs)
    assert [s for s, _ in rec.states] == ["connecting", "up", "down", "up"]
    assert [e.call_id for e in board.waiting()] == ["second"]
    assert board.entry("second").card == "0001234567890"
    assert board.members()["agent1"].paused and board.members()["agent1"].pause_reason == "break"
    assert len(ami.logins) == 2


async def test_half_open_peer_that_stops_answering_ping_is_noticed(up):
    link, rec, ami = up
    ami.stall()
    await rec.until(lambda: link.state == "down")
    assert "no reply to Ping" in link.detail
    await rec.until(lambda: rec.state_count("up") == 2)        # a fresh connection
    assert (await link.action({"Action": "Ping"}))["Response"] == "Success"


async def test_an_action_whose_reply_never_comes_times_out(up):
    link, rec, ami = up
    ami.silent.add("queuepause")
    with pytest.raises(AmiUnavailable, match="no reply to QueuePause"):
        await link.action({"Action": "QueuePause", "Interface": "PJSIP/agent1",
                           "Paused": "true"})
    assert link.state == "up"
    assert (await link.action({"Action": "Ping"}))["Ping"] == "Pong"
    assert not link._manager.protocol.responses                # nothing left waiting


async def test_an_action_in_flight_when_the_connection_drops_fails_at_once(ami):
    rec = Recorder()
    link = make_link(ami.port, rec, action_timeout=30, ping_interval=30)
    await link.start()
    await rec.until(lambda: link.state == "up")
    try:
        ami.silent.add("queuestatus")
        pending = asyncio.create_task(link.action_list({"Action": "QueueStatus"}))
        await rec.until(lambda: any(a.get("Action") == "QueueStatus" for a in ami.actions))
        ami.drop()
        with pytest.raises(AmiUnavailable, match="lost"):
            await pending
        # and it is not sent again after the reconnect
        await rec.until(lambda: rec.state_count("up") == 2)
        assert sum(a.get("Action") == "QueueStatus" for a in ami.actions) == 1
    finally:
        await link.stop()


async def test_response_error_is_ami_error_with_its_message(up):
    link, rec, ami = up
    with pytest.raises(AmiError) as error:
        await link.action({"Action": "Getvar", "Channel": "PJSIP/gone-1", "Variable": "X"})
    assert error.value.message == "No such channel" and error.value.action == "Getvar"
    with pytest.raises(AmiError, match="Invalid/unknown command"):
        await link.action_list({"Action": "NoSuchListAction"})
    assert link.state == "up"


async def test_action_list_collects_to_complete_and_keeps_items_off_on_event(up):
    link, rec, ami = up
    ami.add_member("agent1", "PJSIP/agent1", paused=True, reason="meeting")
    caller = ami.caller_join({"IVR_CALL_ID": "c9"})
    await rec.until(lambda: len(rec.events) == 2)
    items = await link.action_list({"Action": "QueueStatus", "Queue": "agents"})
    assert [i.get("Event", i.get("Response")) for i in items] == [
        "Success", "QueueParams", "QueueMember", "QueueEntry", "QueueStatusComplete"]
    member, entry = items[2], items[3]
    assert (member["Name"], member["Location"], member["Paused"], member["PausedReason"]) == (
        "agent1", "PJSIP/agent1", "1", "meeting")
    assert (entry["Channel"], entry["Position"]) == (caller.name, "1")
    snapshot = await link.snapshot("agents")
    assert snapshot[-1]["ChanVariables"]["IVR_CALL_ID"] == "c9"
    assert len(rec.events) == 2


async def test_header_injection_is_refused(up):
    link, rec, ami = up
    with pytest.raises(ValueError):
        await link.action({"Action": "Ping\r\nAction: Originate"})
    with pytest.raises(ValueError):
        await link.action({"Action": "QueuePause", "Reason": "x\r\n\r\nAction: Logoff"})
    assert not any(a.get("Action") in ("Originate", "Logoff") for a in ami.actions)


async def test_malformed_and_huge_messages_are_dropped_and_the_link_survives(up):
    link, rec, ami = up
    ami.push_raw(b"x" * (MAX_MESSAGE_BYTES * 3) + b"\r\n\r\n")          # huge, no header
    ami.push_raw(b"Event: Huge\r\nData: " + b"y" * (MAX_MESSAGE_BYTES + 10) + b"\r\n\r\n")
    ami.push_raw(b"garbage without colons\r\n\xff\xfe\r\n\r\n")
    ami.push_raw(b"Event: Broken\r\nQueue: agents\r\nBad: \xff\xfe\r\n\r\n")
    # a UTF-8 character split across two TCP writes
    name = "Event: Named\r\nQueue: agents\r\nCallerIDName: Sit\u00ed\r\n\r\n".encode()
    split = name.index("\u00ed".encode()) + 1
    ami.push_raw(name[:split])
    await asyncio.sleep(0.05)
    ami.push_raw(name[split:])
    await rec.until(lambda: any(e["Event"] == "Named" for e in rec.events))
    assert [e["Event"] for e in rec.events] == ["Broken", "Named"]
    assert rec.events[0]["Bad"] == "\ufffd\ufffd"
    assert rec.events[1]["CallerIDName"] == "Sit\u00ed"
    assert link.state == "up" and rec.state_count("down") == 0
    assert (await link.action({"Action": "Ping"}))["Ping"] == "Pong"


async def test_a_handler_that_raises_does_not_drop_the_link(up, caplog):
    link, rec, ami = up
    seen = []

    def fragile(event: dict) -> None:
        seen.append(event["Event"])
        if event["Event"] == "QueueCallerJoin":
            raise KeyError("handler bug")

    link._on_event = fragile
    with caplog.at_level(logging.ERROR, logger="ivr.desk.ami"):
        ami.caller_join({})
        ami.add_member("agent1", "PJSIP/agent1")
        await rec.until(lambda: len(seen) == 2)
    assert seen == ["QueueCallerJoin", "QueueMemberAdded"]
    assert any("event handler failed" in r.getMessage() for r in caplog.records)
    assert link.state == "up" and rec.state_count("down") == 0


async def test_a_peer_that_is_not_asterisk_is_refused():
    async def http(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    rec = Recorder()
    link = make_link(server.sockets[0].getsockname()[1], rec)
    await link.start()
    try:
        await rec.until(lambda: link.state == "down")
        assert "not an Asterisk manager" in link.detail
    finally:
        await link.stop()
        server.close()


async def test_stop_ends_everything(up):
    link, rec, ami = up
    await link.stop()
    assert link.state == "down"
    await asyncio.sleep(0.3)
    assert ami.logged_in == [] and len(ami.logins) == 1      # no reconnect after stop
    with pytest.raises(AmiUnavailable):
        await link.action({"Action": "Ping"})


def test_settings_name_the_link():
    from ivr.config import Settings
    settings = Settings.from_env({"IVR_AMI_HOST": "127.0.0.2", "IVR_AMI_PORT": "15999",
                                  "IVR_AMI_SECRET": "x"})
    link = AmiLink.from_settings(settings, on_event=print, on_state=print)
    assert (link.host, link.port, link.username, link._secret) == ("127.0.0.2", 15999, "desk", "x")
    assert Settings.from_env({}).ami_secret == "" and Settings.from_env({}).desk_queue == "agents"


async def test_benchmark_500_waiting_callers_and_50_agents(up):
    """Figures, printed: a resync (QueueStatus and 5 Getvar per waiting caller) and the
    way from an AgentCalled written by Asterisk to the board's "ringing" change."""
    link, rec, ami = up
    board = QueueBoard()
    changes: list = []
    link._on_event = lambda event: (rec.on_event(event), changes.extend(board.apply(event)))
    for n in range(50):
        ami.add_member(f"agent{n}", f"PJSIP/agent{n}")
    callers = [ami.caller_join({"IVR_CALL_ID": f"c{n}", "IVR_VERIFIED": "1",
                                "IVR_CARD": "0001234567890", "IVR_TRANSFER_REASON": "menu"})
               for n in range(500)]
    await rec.until(lambda: len(board.waiting()) == 500)

    started = time.perf_counter()
    snapshot = await link.snapshot("agents")
    resync = time.perf_counter() - started
    board.reset()
    for event in snapshot:
        board.apply(event)
    assert [e.call_id for e in board.waiting()] == [f"c{n}" for n in range(500)]
    assert len(board.members()) == 50 and board.entry("c499").card == "0001234567890"

    delays = []
    for n in range(50):
        changes.clear()
        started = time.perf_counter()
        ami.agent_called(callers[n], f"agent{n}")
        await rec.until(lambda: changes)
        delays.append(time.perf_counter() - started)
        assert changes == [Change("ringing", f"agent{n}", f"c{n}", board.entry(f"c{n}"))]
    delays.sort()
    print(f"\nresync of 500 waiting callers and 50 agents: {resync * 1000:.0f} ms "
          f"({len(ami.actions)} actions); AgentCalled -> ringing change: median "
          f"{delays[25] * 1000:.2f} ms, max {delays[-1] * 1000:.2f} ms")
