"""A small Asterisk manager (AMI) server on loopback, for the desk's tests and benchmark.

It speaks the real framing (banner ``Asterisk Call Manager/<version>``, CRLF header
lines, a blank line after each message; ``Action``/``ActionID`` in, ``Response:
Success|Error`` out, lists as ``EventList: start`` ... ``...Complete``, events pushed at
will) and keeps a small model of one queue, so that what it sends has the fields Asterisk
22 sends (apps/app_queue.c, main/manager_channels.c; checked against the real one in
tests/test_ami_asterisk.py):

    ami = FakeAmi(secret="s3cret")
    await ami.start()                       # ami.port
    caller = ami.caller_join({"IVR_CALL_ID": "c1", "IVR_VERIFIED": "1"})
    ami.agent_called(caller, "agent1")      # after ami.add_member("agent1", "PJSIP/agent1")
    ami.agent_connect(caller, "agent1"); ami.agent_complete(caller, "agent1")
    await ami.close()

Actions answered: Login, Logoff, Ping, QueueStatus, Getvar, QueueAdd, QueueRemove,
QueuePause; any other gets Asterisk's "Invalid/unknown command" error. Misbehaviour on
demand: ``silent`` (actions never answered), ``stall()`` (the connections now open stop
reading and answering: a half-open peer), ``drop()`` (close every connection),
``push_raw()`` (any bytes).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

CHANNEL_VARIABLES = ("IVR_CALL_ID", "IVR_TRANSFER_REASON", "IVR_VERIFIED",
                     "IVR_MEMBER_STATUS", "IVR_CARD")
_MAX_ACTION_BYTES = 64 * 1024


def frame(*headers: tuple[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers).encode() + b"\r\n"


@dataclass
class Channel:
    name: str
    uniqueid: str
    variables: dict[str, str] = field(default_factory=dict)
    caller_num: str = "<unknown>"
    context: str = "hotline-route"
    exten: str = "queue"
    joined: float = field(default_factory=time.time)

    def snapshot(self, prefix: str = "", channelvars=CHANNEL_VARIABLES) -> list[tuple[str, str]]:
        """ast_manager_build_channel_state_string_prefix()."""
        headers = [("Channel", self.name), ("ChannelState", "6"), ("ChannelStateDesc", "Up"),
                   ("CallerIDNum", self.caller_num), ("CallerIDName", "<unknown>"),
                   ("ConnectedLineNum", "<unknown>"), ("ConnectedLineName", "<unknown>"),
                   ("Language", "id"), ("AccountCode", ""), ("Context", self.context),
                   ("Exten", self.exten), ("Priority", "1"), ("Uniqueid", self.uniqueid),
                   ("Linkedid", self.uniqueid)]
        headers = [(prefix + k, v) for k, v in headers]
        for name in channelvars:
            headers.append((prefix + "ChanVariable", f"{name}={self.variables.get(name, '')}"))
        return headers


@dataclass
class QueueMember:
    name: str
    interface: str
    paused: bool = False
    reason: str = ""
    status: int = 1                     # AST_DEVICE_NOT_INUSE
    in_call: bool = False
    calls: int = 0

    def fields(self) -> list[tuple[str, str]]:
        """queue_member_blob_create(), less Queue."""
        return [("MemberName", self.name), ("Interface", self.interface),
                ("StateInterface", self.interface), ("Membership", "dynamic"),
                ("Penalty", "0"), ("CallsTaken", str(self.calls)), ("LastCall", "0"),
                ("LastPause", "0"), ("LoginTime", str(int(time.time()))),
                ("InCall", str(int(self.in_call))), ("Status", str(self.status)),
                ("Paused", str(int(self.paused))), ("PausedReason", self.reason),
                ("Ringinuse", "0"), ("Wrapuptime", "0")]


class Session:
    def __init__(self, ami: "FakeAmi", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.ami, self.reader, self.writer = ami, reader, writer
        self.user = ""
        self.events: set[str] | None = None     # None: none; {"all"}: every class
        self.stalled = False

    def send(self, data: bytes) -> None:
        if not self.stalled and not self.writer.is_closing():
            self.writer.write(data)

    def wants(self, category: str) -> bool:
        return self.events is not None and ("all" in self.events or category in self.events)

    async def serve(self) -> None:
        self.writer.write(f"Asterisk Call Manager/{self.ami.version}\r\n".encode())
        try:
            while True:
                raw = await self.reader.readuntil(b"\r\n\r\n")
                if self.stalled:
                    await asyncio.Event().wait()           # a peer that no longer answers
                headers: dict[str, str | list[str]] = {}
                for line in raw.decode("utf-8", "replace").split("\r\n"):
                    name, _, value = line.partition(": ")
                    if name:
                        old = headers.get(name)
                        headers[name] = value if old is None else (
                            [*old, value] if isinstance(old, list) else [old, value])
                if not await self.ami._answer(self, headers):
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self.writer.close()


class FakeAmi:
    def __init__(self, username: str = "desk", secret: str = "desk-secret", *,
                 queue: str = "agents", version: str = "11.0.0",
                 auth_delay: float = 0.05) -> None:
        """``auth_delay``: Asterisk waits 1 s before it refuses a login; tests wait less."""
        self.username, self.secret, self.queue = username, secret, queue
        self.version, self.auth_delay = version, auth_delay
        self.host, self.port = "127.0.0.1", 0
        self.sessions: list[Session] = []
        self.logins: list[tuple[str, bool]] = []
        self.login_times: list[float] = []      # time.monotonic() of each Login
        self.actions: list[dict] = []
        self.silent: set[str] = set()           # action names (lower case) never answered
        self.members: dict[str, QueueMember] = {}
        self.waiting: list[Channel] = []
        self.channels: dict[str, Channel] = {}  # by name
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- Server

    async def start(self, port: int = 0) -> "FakeAmi":
        self._server = await asyncio.start_server(self._accept, self.host, port,
                                                  limit=_MAX_ACTION_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader, writer) -> None:
        session = Session(self, reader, writer)
        self.sessions.append(session)
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await session.serve()
        finally:
            self._tasks.discard(task)
            if session in self.sessions:
                self.sessions.remove(session)

    @property
    def logged_in(self) -> list[Session]:
        return [s for s in self.sessions if s.user]

    def drop(self) -> None:
        """Close every connection (Asterisk restarting, a network cut)."""
        for session in self.sessions:
            session.writer.transport.abort()

    def stall(self) -> None:
        """The connections open now stop reading and answering, and stay open."""
        for session in self.sessions:
            session.stalled = True

    def push(self, event: str, headers: list[tuple[str, str]], category: str = "agent") -> None:
        data = frame(("Event", event), ("Privilege", f"{category},all"), *headers)
        for session in self.logged_in:
            if session.wants(category):
                session.send(data)

    def push_raw(self, data: bytes) -> None:
        for session in self.logged_in:
            session.send(data)

    # --- Actions

    async def _answer(self, session: Session, action: dict) -> bool:
        self.actions.append(action)
        name = str(action.get("Action", ""))
        aid = action.get("ActionID")
        idh = [("ActionID", aid)] if isinstance(aid, str) else []

        def reply(response: str, *headers: tuple[str, str]) -> None:
            session.send(frame(("Response", response), *idh, *headers))

        if name.lower() in self.silent:
            return True
        if name.lower() == "login":
            ok = action.get("Username") == self.username and action.get("Secret") == self.secret
            self.logins.append((str(action.get("Username")), ok))
            self.login_times.append(time.monotonic())
            if not ok:
                await asyncio.sleep(self.auth_delay)
                reply("Error", ("Message", "Authentication failed"))
                return False                      # Asterisk closes the session
            session.user = self.username
            wanted = str(action.get("Events", "on")).lower()
            session.events = (None if wanted == "off" else {"all"} if wanted in ("on", "")
                              else {c.strip() for c in wanted.split(",")})
            reply("Success", ("Message", "Authentication accepted"))
            return True
        if not session.user:
            reply("Error", ("Message", "Authentication Required"))
            return True
        handler = getattr(self, "_action_" + name.lower(), None)
        if handler is None:
            reply("Error", ("Message", f"Invalid/unknown command: {name}. Use Action: "
                                       "ListCommands to show available commands."))
            return True
        return handler(session, action, reply, idh) is not False

    def _action_logoff(self, session, action, reply, idh):
        reply("Goodbye", ("Message", "Thanks for all the fish."))
        return False

    def _action_ping(self, session, action, reply, idh):
        reply("Success", ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}"))

    def _action_getvar(self, session, action, reply, idh):
        channel = self.channels.get(str(action.get("Channel", "")))
        if channel is None:
            reply("Error", ("Message", "No such channel"))
        else:
            variable = str(action.get("Variable", ""))
            reply("Success", ("Variable", variable),
                  ("Value", channel.variables.get(variable, "")))

    def _action_queuestatus(self, session, action, reply, idh):
        if action.get("Queue") not in (None, "", self.queue):
            items = []
        else:
            items = [frame(("Event", "QueueParams"), ("Queue", self.queue), ("Max", "0"),
                           ("Strategy", "ringall"), ("Calls", str(len(self.waiting))),
                           ("Holdtime", "0"), ("TalkTime", "0"), ("Completed", "0"),
                           ("Abandoned", "0"), ("ServiceLevel", "0"),
                           ("ServicelevelPerf", "0.0"), ("ServicelevelPerf2", "0.0"),
                           ("Weight", "0"), *idh)]
            for m in self.members.values():
                items.append(frame(
                    ("Event", "QueueMember"), ("Queue", self.queue), ("Name", m.name),
                    ("Location", m.interface), ("StateInterface", m.interface),
                    ("Membership", "dynamic"), ("Penalty", "0"), ("CallsTaken", str(m.calls)),
                    ("LastCall", "0"), ("LastPause", "0"), ("LoginTime", "0"),
                    ("InCall", str(int(m.in_call))), ("Status", str(m.status)),
                    ("Paused", str(int(m.paused))), ("PausedReason", m.reason),
                    ("Wrapuptime", "0"), *idh))
            now = time.time()
            for position, c in enumerate(self.waiting, start=1):
                items.append(frame(
                    ("Event", "QueueEntry"), ("Queue", self.queue), ("Position", str(position)),
                    ("Channel", c.name), ("Uniqueid", c.uniqueid),
                    ("CallerIDNum", "unknown"), ("CallerIDName", "unknown"),
                    ("ConnectedLineNum", "unknown"), ("ConnectedLineName", "unknown"),
                    ("Wait", str(int(now - c.joined))), ("Priority", "0"), *idh))
        reply("Success", ("EventList", "start"), ("Message", "Queue status will follow"))
        session.send(b"".join(items) + frame(
            ("Event", "QueueStatusComplete"), *idh, ("EventList", "Complete"),
            ("ListItems", str(len(items)))))

    def _action_queueadd(self, session, action, reply, idh):
        interface = str(action.get("Interface", ""))
        name = str(action.get("MemberName", "")) or interface
        if action.get("Queue") != self.queue:
            reply("Error", ("Message", "Unable to add interface to queue: No such queue"))
        elif any(m.interface == interface for m in self.members.values()):
            reply("Error", ("Message", "Unable to add interface: Already there"))
        else:
            paused = str(action.get("Paused", "")).lower() in ("1", "true", "yes")
            member = self.add_member(name, interface, paused=paused,
                                     reason=str(action.get("Reason", "")), announce=False)
            reply("Success", ("Message", "Added interface to queue"))
            self._member_event("QueueMemberAdded", member)

    def _action_queueremove(self, session, action, reply, idh):
        member = self._by_interface(str(action.get("Interface", "")))
        if member is None:
            reply("Error", ("Message", "Unable to remove interface: Not there"))
        else:
            del self.members[member.name]
            reply("Success", ("Message", "Removed interface from queue"))
            self._member_event("QueueMemberRemoved", member)

    def _action_queuepause(self, session, action, reply, idh):
        member = self._by_interface(str(action.get("Interface", "")))
        if member is None:
            reply("Error", ("Message", "Interface not found"))
            return
        member.paused = str(action.get("Paused", "")).lower() in ("1", "true", "yes")
        member.reason = str(action.get("Reason", "")) if member.paused else ""
        reply("Success", ("Message", "Interface paused successfully" if member.paused
                          else "Interface unpaused successfully"))
        self._member_event("QueueMemberPause", member)

    def _by_interface(self, interface: str) -> QueueMember | None:
        return next((m for m in self.members.values() if m.interface == interface), None)

    # --- The queue, as app_queue reports it

    def _member_event(self, event: str, member: QueueMember) -> None:
        self.push(event, [("Queue", self.queue), *member.fields()])

    def add_member(self, name: str, interface: str, *, paused: bool = False,
                   reason: str = "", announce: bool = True) -> QueueMember:
        member = self.members[name] = QueueMember(name, interface, paused, reason)
        if announce:
            self._member_event("QueueMemberAdded", member)
        return member

    def caller_join(self, variables: dict[str, str] | None = None, *,
                    position: int | None = None) -> Channel:
        n = next(self._ids)
        channel = Channel(f"PJSIP/test-caller-{n:08x}", f"1795409641.{n}", dict(variables or {}))
        self.channels[channel.name] = channel
        index = len(self.waiting) if position is None else max(0, min(position - 1,
                                                                     len(self.waiting)))
        self.waiting.insert(index, channel)
        self.push("QueueCallerJoin", [*channel.snapshot(), ("Queue", self.queue),
                                      ("Position", str(index + 1)),
                                      ("Count", str(len(self.waiting)))])
        return channel

    def caller_leave(self, channel: Channel, *, abandon: bool = False,
                     hang_up: bool = True) -> None:
        position = self.waiting.index(channel) + 1
        self.waiting.remove(channel)
        if abandon:
            self.push("QueueCallerAbandon", [
                *channel.snapshot(), ("Queue", self.queue), ("Position", str(position)),
                ("OriginalPosition", str(position)),
                ("HoldTime", str(int(time.time() - channel.joined)))])
        self.push("QueueCallerLeave", [*channel.snapshot(), ("Queue", self.queue),
                                       ("Count", str(len(self.waiting))),
                                       ("Position", str(position))])
        if hang_up:
            self.channels.pop(channel.name, None)

    def _agent_leg(self, member: QueueMember, caller: Channel) -> Channel:
        n = next(self._ids)
        # The agent's leg inherits the caller's "__" variables.
        return Channel(f"{member.interface}-{n:08x}", f"1795409641.{n}",
                       dict(caller.variables), context="from-queue", exten="s")

    def _agent_event(self, event: str, caller: Channel, name: str,
                     *extra: tuple[str, str], caller_gone: bool = False) -> None:
        member = self.members[name]
        leg = self._agent_leg(member, caller)
        fields = [] if caller_gone else caller.snapshot()
        self.push(event, [*fields, *leg.snapshot("Dest"), ("Queue", self.queue),
                          ("Interface", member.interface), ("MemberName", member.name),
                          *extra])

    def agent_called(self, caller: Channel, name: str) -> None:
        self._agent_event("AgentCalled", caller, name)

    def agent_ring_no_answer(self, caller: Channel, name: str, ring_ms: int = 15000) -> None:
        self._agent_event("AgentRingNoAnswer", caller, name, ("RingTime", str(ring_ms)))

    def agent_connect(self, caller: Channel, name: str, ring_s: int = 2) -> None:
        """As Asterisk: the caller leaves the queue, then AgentConnect."""
        self.caller_leave(caller, hang_up=False)
        member = self.members[name]
        member.in_call, member.status = True, 2
        self._agent_event("AgentConnect", caller, name,
                          ("HoldTime", str(int(time.time() - caller.joined))),
                          ("RingTime", str(ring_s)))

    def agent_complete(self, caller: Channel, name: str, reason: str = "caller",
                       caller_gone: bool = False) -> None:
        """``caller_gone``: as Asterisk sends it when the caller's channel was destroyed
        before the queue looked it up (no caller fields at all, apps/app_queue.c)."""
        member = self.members[name]
        member.in_call, member.status, member.calls = False, 1, member.calls + 1
        self._agent_event("AgentComplete", caller, name,
                          ("HoldTime", str(int(time.time() - caller.joined))),
                          ("TalkTime", "5"), ("Reason", reason), caller_gone=caller_gone)
        self.channels.pop(caller.name, None)

    def agent_dump(self, caller: Channel, name: str) -> None:
        self._agent_event("AgentDump", caller, name)
