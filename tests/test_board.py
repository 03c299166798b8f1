"""QueueBoard fed with events as the link delivers them: Asterisk 22's fields (built by the
fake AMI server's channel snapshots and parsed by the link's own parser)."""
from __future__ import annotations

import pytest

from ivr.desk.ami import parse_message
from ivr.desk.board import Change, QueueBoard

from .fake_ami import Channel, QueueMember, frame


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def event(name: str, *headers: tuple[str, str]) -> dict:
    """As the link hands it over: framed, then parsed."""
    return parse_message(frame(("Event", name), *headers).decode()[:-4])


def caller(n: int, **variables: str) -> Channel:
    return Channel(f"PJSIP/test-caller-{n:08x}", f"1795409641.{n}", variables)


def join(c: Channel, position: int, queue: str = "agents") -> dict:
    return event("QueueCallerJoin", *c.snapshot(), ("Queue", queue),
                 ("Position", str(position)), ("Count", str(position)))


def leave(c: Channel, position: int, name: str = "QueueCallerLeave") -> dict:
    return event(name, *c.snapshot(), ("Queue", "agents"), ("Count", "0"),
                 ("Position", str(position)))


def agent(name: str, c: Channel, member: str, *extra: tuple[str, str]) -> dict:
    leg = Channel(f"PJSIP/{member}-00000099", "1795409641.99", dict(c.variables))
    return event(name, *c.snapshot(), *leg.snapshot("Dest"), ("Queue", "agents"),
                 ("Interface", f"PJSIP/{member}"), ("MemberName", member), *extra)


def member_event(name: str, member: str, paused: bool = False, reason: str = "",
                 status: int = 1, queue: str = "agents") -> dict:
    m = QueueMember(member, f"PJSIP/{member}", paused, reason, status)
    return event(name, ("Queue", queue), *m.fields())


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def board(clock):
    board = QueueBoard("agents", clock=clock)
    for name in ("agent1", "agent2"):
        board.apply(member_event("QueueMemberAdded", name))
    return board


def positions(board: QueueBoard) -> list[tuple[str, int]]:
    return [(e.call_id, e.position) for e in board.waiting()]


def test_join_leave_and_abandon_renumber_positions(board, clock):
    a, b, c, d = (caller(n, IVR_CALL_ID=f"call-{n}") for n in (1, 2, 3, 4))
    changes = board.apply(join(a, 1))
    assert changes == [Change("queue", call_id="call-1", entry=board.entry("call-1"))]
    clock.now += 10
    board.apply(join(b, 2))
    board.apply(join(c, 3))
    board.apply(join(d, 2))                     # a higher priority caller, put second
    assert positions(board) == [("call-1", 1), ("call-4", 2), ("call-2", 3), ("call-3", 4)]
    assert board.entry("call-2").joined_at == 1_000_010.0
    board.apply(leave(a, 1))
    assert positions(board) == [("call-4", 1), ("call-2", 2), ("call-3", 3)]
    board.apply(leave(b, 2, "QueueCallerAbandon"))      # Abandon, then Leave, as Asterisk
    board.apply(leave(b, 2))
    assert positions(board) == [("call-4", 1), ("call-3", 2)]
    assert board.entry("call-2") is None
    assert board.apply(leave(b, 2)) == []               # twice: nothing


def test_call_id_from_ivr_variable_else_uniqueid_and_card_only_when_verified(board):
    verified = caller(1, IVR_CALL_ID="c-1", IVR_VERIFIED="1", IVR_CARD="0001234567890",
                      IVR_TRANSFER_REASON="verification_failed", IVR_MEMBER_STATUS="AKTIF")
    unverified = caller(2, IVR_CALL_ID="c-2", IVR_VERIFIED="0", IVR_CARD="0001234567890")
    bare = Channel("PJSIP/x-1", "1795409641.77")        # no channelvars configured
    for n, c in enumerate((verified, unverified, bare), start=1):
        board.apply(join(c, n))
    one, two, three = board.waiting()
    assert (one.call_id, one.verified, one.card, one.transfer_reason, one.member_status,
            one.channel, one.uniqueid, one.kind) == (
        "c-1", True, "0001234567890", "verification_failed", "AKTIF",
        verified.name, verified.uniqueid, "caller")
    assert (two.call_id, two.verified, two.card) == ("c-2", False, "")
    assert (three.call_id, three.verified, three.transfer_reason) == ("1795409641.77", False, "")


def test_ringing_connected_ended_for_the_right_agent_and_call(board):
    a, b = caller(1, IVR_CALL_ID="c-a"), caller(2, IVR_CALL_ID="c-b")
    board.apply(join(a, 1))
    board.apply(join(b, 2))
    # ringall: both agents are offered the first caller
    assert board.apply(agent("AgentCalled", a, "agent1")) == [
        Change("ringing", "agent1", "c-a", board.entry("c-a"))]
    board.apply(agent("AgentCalled", a, "agent2"))
    assert board.members()["agent1"].ringing == "c-a" == board.members()["agent2"].ringing
    # agent2 answers: Asterisk sends QueueCallerLeave, then AgentConnect; the Leave alone
    # stops no ring (agent2's page goes from ringing to connected, never to ready between)
    left = board.apply(leave(a, 1))
    assert [(c.kind, c.agent) for c in left] == [("queue", None)]
    assert board.members()["agent2"].ringing == "c-a"
    connected = board.apply(agent("AgentConnect", a, "agent2", ("HoldTime", "12"),
                                  ("RingTime", "3")))
    assert [(c.kind, c.agent, c.call_id) for c in connected] == [
        ("ring_stopped", "agent1", "c-a"), ("connected", "agent2", "c-a")]
    assert board.ring_settled(a.uniqueid) == []                 # answered: nothing to settle
    assert connected[0].entry.uniqueid == a.uniqueid       # the caller's context is kept
    members = board.members()
    assert (members["agent2"].on_call, members["agent2"].ringing) == ("c-a", None)
    assert (members["agent1"].on_call, members["agent1"].ringing) == (None, None)
    assert board.entry("c-a") is not None and positions(board) == [("c-b", 1)]
    assert board.counts() == {"ready": 1, "on_call": 1, "paused": 0}
    # a completion for another agent, or another call, changes nothing
    assert board.apply(agent("AgentComplete", a, "agent1", ("Reason", "caller"))) == []
    assert board.apply(agent("AgentComplete", b, "agent2", ("Reason", "caller"))) == []
    ended = board.apply(agent("AgentComplete", a, "agent2", ("HoldTime", "12"),
                              ("TalkTime", "40"), ("Reason", "agent")))
    assert [(c.kind, c.agent, c.call_id) for c in ended] == [("ended", "agent2", "c-a")]
    assert board.members()["agent2"].on_call is None
    assert board.entry("c-a") is None                       # forgotten once served
    assert board.counts() == {"ready": 2, "on_call": 0, "paused": 0}


def test_an_agentcomplete_without_its_caller_still_ends_the_agents_call(board):
    """Asterisk sends AgentComplete with no caller fields when the caller's channel was
    destroyed first (a callback placeholder ends the moment the agent hangs up): the call
    is the agent leg's IVR_CALL_ID, else the one the agent is on."""
    a, b = caller(1, IVR_CALL_ID="c-a"), caller(2, IVR_CALL_ID="c-b")
    for c, name in ((a, "agent1"), (b, "agent2")):
        board.apply(join(c, 1))
        board.apply(leave(c, 1))
        board.apply(agent("AgentConnect", c, name))
    leg = Channel("Local/agent1@agent-phones-00000007;1", "1795409641.70", {"IVR_CALL_ID": "c-a"})
    incomplete = event("AgentComplete", *leg.snapshot("Dest"), ("Queue", "agents"),
                       ("Interface", "PJSIP/agent1"), ("MemberName", "agent1"),
                       ("Reason", "agent"))
    assert "Uniqueid" not in incomplete and "ChanVariables" not in incomplete
    ended = board.apply(incomplete)
    assert [(c.kind, c.agent, c.call_id) for c in ended] == [("ended", "agent1", "c-a")]
    assert board.entry("c-a") is None and board.members()["agent2"].on_call == "c-b"
    # no variable on the agent's leg either: the one call agent2 is on
    bare = event("AgentComplete", ("Queue", "agents"), ("Interface", "PJSIP/agent2"),
                 ("MemberName", "agent2"), ("Reason", "agent"))
    assert [(c.kind, c.call_id) for c in board.apply(bare)] == [("ended", "c-b")]
    assert board.apply(bare) == []                  # nothing left to end
    assert board.counts()["on_call"] == 0


def test_connect_without_a_leave_stops_the_other_agents_ringing(board):
    a = caller(1, IVR_CALL_ID="c-a")
    board.apply(join(a, 1))
    board.apply(agent("AgentCalled", a, "agent1"))
    board.apply(agent("AgentCalled", a, "agent2"))
    changes = board.apply(agent("AgentConnect", a, "agent1"))
    assert [(c.kind, c.agent) for c in changes] == [("ring_stopped", "agent2"),
                                                     ("connected", "agent1")]


def test_ring_no_answer_and_agent_dump(board):
    a = caller(1, IVR_CALL_ID="c-a")
    board.apply(join(a, 1))
    board.apply(agent("AgentCalled", a, "agent1"))
    changes = board.apply(agent("AgentRingNoAnswer", a, "agent1", ("RingTime", "15000")))
    assert [(c.kind, c.agent, c.call_id) for c in changes] == [("ring_stopped", "agent1", "c-a")]
    assert board.members()["agent1"].ringing is None
    assert positions(board) == [("c-a", 1)]                  # still waiting
    assert board.apply(agent("AgentRingNoAnswer", a, "agent1")) == []
    board.apply(agent("AgentCalled", a, "agent2"))
    dumped = board.apply(agent("AgentDump", a, "agent2"))
    assert [(c.kind, c.agent) for c in dumped] == [("ring_stopped", "agent2")]
    board.apply(agent("AgentCalled", a, "agent2"))
    board.apply(leave(a, 1))
    board.apply(agent("AgentConnect", a, "agent2"))
    assert [c.kind for c in board.apply(agent("AgentDump", a, "agent2"))] == ["ended"]


def test_a_caller_who_leaves_unanswered_stops_ringing_once_settled(board):
    """The waiting loop's round ends while an agent is rung: no AgentConnect follows; the
    desk settles the ring a moment later. Back in line by then: still rung."""
    a, b = caller(1, IVR_CALL_ID="c-a"), caller(2, IVR_CALL_ID="c-b")
    for c in (a, b):
        board.apply(join(c, 1))
        board.apply(agent("AgentCalled", c, "agent1" if c is a else "agent2"))
        board.apply(leave(c, 1))
    board.apply(join(b, 1))                                       # b re-entered the queue
    assert [(c.kind, c.agent, c.call_id) for c in board.ring_settled(a.uniqueid)] == [
        ("ring_stopped", "agent1", "c-a")]
    assert board.members()["agent1"].ringing is None
    assert board.ring_settled(b.uniqueid) == []
    assert board.members()["agent2"].ringing == "c-b"
    assert board.ring_settled("no-such-uniqueid") == []


def test_a_caller_who_hangs_up_while_ringing_stops_the_ring(board):
    a = caller(1, IVR_CALL_ID="c-a")
    board.apply(join(a, 1))
    board.apply(agent("AgentCalled", a, "agent1"))
    board.apply(leave(a, 1, "QueueCallerAbandon"))
    assert board.members()["agent1"].ringing is None
    assert board.waiting() == [] and board.entry("c-a") is None


def test_pause_with_reason_and_counts(board):
    changes = board.apply(member_event("QueueMemberPause", "agent1", True, "break"))
    assert changes == [Change("member", "agent1")]
    m = board.members()["agent1"]
    assert (m.paused, m.pause_reason, m.interface) == (True, "break", "PJSIP/agent1")
    assert board.counts() == {"ready": 1, "on_call": 0, "paused": 1}
    assert board.apply(member_event("QueueMemberStatus", "agent1", True, "break")) == []
    board.apply(member_event("QueueMemberPause", "agent1", False, ""))
    assert board.members()["agent1"].pause_reason == ""
    # a softphone that is not registered: neither ready nor paused
    assert board.apply(member_event("QueueMemberStatus", "agent2", status=5)) == [
        Change("member", "agent2")]
    assert board.counts() == {"ready": 1, "on_call": 0, "paused": 0}
    board.apply(member_event("QueueMemberRemoved", "agent1"))
    assert list(board.members()) == ["agent2"]
    assert board.counts() == {"ready": 0, "on_call": 0, "paused": 0}


def test_a_queue_status_snapshot_after_reset(board, clock):
    board.apply(join(caller(9, IVR_CALL_ID="stale"), 1))
    board.reset()
    assert board.waiting() == [] and board.members() == {}
    snapshot = [
        event("QueueParams", ("Queue", "agents"), ("Max", "0"), ("Strategy", "ringall"),
              ("Calls", "2")),
        event("QueueMember", ("Queue", "agents"), ("Name", "agent1"),
              ("Location", "PJSIP/agent1"), ("StateInterface", "PJSIP/agent1"),
              ("Membership", "dynamic"), ("InCall", "0"), ("Status", "1"), ("Paused", "1"),
              ("PausedReason", "meeting"), ("Wrapuptime", "0")),
        event("QueueMember", ("Queue", "agents"), ("Name", "agent2"),
              ("Location", "PJSIP/agent2"), ("InCall", "1"), ("Status", "2"), ("Paused", "0"),
              ("PausedReason", "")),
        event("QueueEntry", ("Queue", "agents"), ("Position", "1"),
              ("Channel", "PJSIP/c-1"), ("Uniqueid", "1.1"), ("Wait", "42"), ("Priority", "0")),
        event("QueueEntry", ("Queue", "agents"), ("Position", "2"),
              ("Channel", "PJSIP/c-2"), ("Uniqueid", "1.2"), ("Wait", "5")),
    ]
    snapshot[3]["ChanVariables"] = {"IVR_CALL_ID": "c-1", "IVR_VERIFIED": "1",
                                    "IVR_CARD": "0001234567890"}   # merged by the link
    for e in snapshot:
        board.apply(e)
    assert positions(board) == [("c-1", 1), ("1.2", 2)]
    assert board.entry("c-1").joined_at == clock.now - 42 and board.entry("c-1").card
    m1, m2 = board.members()["agent1"], board.members()["agent2"]
    assert (m1.interface, m1.paused, m1.pause_reason) == ("PJSIP/agent1", True, "meeting")
    assert (m2.interface, m2.in_call, m2.on_call) == ("PJSIP/agent2", True, None)
    assert board.counts() == {"ready": 0, "on_call": 1, "paused": 1}
    # the call agent2 was on before the resync ends
    ended = board.apply(agent("AgentComplete", caller(5, IVR_CALL_ID="old"), "agent2"))
    assert [(c.kind, c.call_id) for c in ended] == [("ended", "old")]
    assert board.counts() == {"ready": 1, "on_call": 0, "paused": 1}


def test_events_for_other_queues_are_ignored(board):
    a = caller(1, IVR_CALL_ID="c-a")
    assert board.apply(join(a, 1, queue="supervisors")) == []
    assert board.apply(member_event("QueueMemberAdded", "boss", queue="supervisors")) == []
    assert board.apply(member_event("QueueMemberPause", "agent1", True, "x",
                                    queue="supervisors")) == []
    assert board.waiting() == [] and set(board.members()) == {"agent1", "agent2"}
    assert not board.members()["agent1"].paused


@pytest.mark.parametrize("garbage", [
    {}, {"Event": "QueueCallerJoin"}, {"Event": "QueueCallerJoin", "Queue": "agents"},
    {"Event": "QueueCallerJoin", "Queue": "agents", "Uniqueid": "1.5", "Position": "abc"},
    {"Event": "QueueCallerJoin", "Queue": "agents", "Uniqueid": "1.6", "Position": "-7",
     "ChanVariables": "not a dict"},
    {"Event": "QueueCallerJoin", "Queue": "agents", "Uniqueid": "1.7",
     "ChanVariables": {"IVR_CALL_ID": "bad id\nwith newline", "IVR_VERIFIED": "1",
                       "IVR_CARD": "<script>"}},
    {"Event": "QueueEntry", "Queue": "agents", "Uniqueid": "1.8", "Wait": "soon"},
    {"Event": "QueueCallerLeave", "Queue": "agents"},
    {"Event": "AgentCalled", "Queue": "agents", "MemberName": "agent1"},
    {"Event": "AgentCalled", "Queue": "agents", "Uniqueid": "1.9"},
    {"Event": "AgentConnect", "Queue": "agents", "Uniqueid": "1.9", "MemberName": ""},
    {"Event": "AgentComplete", "Queue": "agents", "MemberName": "nobody"},
    {"Event": "AgentDump", "Queue": "agents", "MemberName": "agent1"},
    {"Event": "AgentRingNoAnswer", "Queue": "agents", "MemberName": "agent1", "Uniqueid": 5},
    {"Event": "QueueMember", "Queue": "agents"},
    {"Event": "QueueMemberPause", "Queue": "agents", "MemberName": "agent1", "Paused": None},
    {"Event": "QueueMemberStatus", "Queue": "agents", "MemberName": "ghost"},
    {"Event": "QueueMemberRemoved", "Queue": "agents", "MemberName": "ghost"},
    {"Event": "QueueMemberAdded", "Queue": "agents"},
    {"Event": "__init__", "Queue": "agents"}, {"Event": None, "Queue": "agents"},
    {"Event": ["QueueCallerJoin"], "Queue": "agents"},
])
def test_garbage_never_raises(board, garbage):
    board.apply(garbage)
    board.counts()
    for entry in board.waiting():
        assert entry.position >= 1
        assert "\n" not in entry.call_id and entry.card == ""
