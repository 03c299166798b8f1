"""Asterisk's agents' queue as the desk sees it: a model fed with AMI events, no I/O.

Field names are the ones Asterisk 22 sends (apps/app_queue.c, main/manager_channels.c):
- caller events (QueueCallerJoin/Leave/Abandon) carry the caller's channel snapshot
  (``Channel``, ``Uniqueid``, ...; its ``ChanVariable`` headers, which the link turns into
  ``ChanVariables``) and ``Queue``, ``Position`` (``Count`` on join/leave,
  ``OriginalPosition`` and ``HoldTime`` on abandon);
- agent events (AgentCalled, AgentRingNoAnswer, AgentConnect, AgentComplete, AgentDump)
  carry the caller's snapshot, the agent leg's with the prefix ``Dest`` (``DestChannel``,
  ``DestUniqueid``, ``DestChanVariable``), and ``Queue``, ``MemberName``, ``Interface``;
- member events (QueueMemberAdded/Removed/Pause/Status) carry ``Queue``, ``MemberName``,
  ``Interface``, ``Paused`` (0/1), ``PausedReason``, ``Status`` (device state), ``InCall``;
- QueueStatus answers with QueueParams, then QueueMember, which names the member ``Name``
  and its interface ``Location`` (not MemberName/Interface), then QueueEntry
  (``Position``, ``Channel``, ``Uniqueid``, ``Wait`` in seconds; no channel variables:
  the link reads them with Getvar).

Asterisk sends QueueCallerLeave *before* AgentConnect when an agent answers, so a plain
Leave does not stop the agents' ringing: AgentConnect does (``connected`` for the one who
answered, ``ring_stopped`` for the others), and when no agent answered (the waiting loop's
round ended) the desk settles it a moment later (``ring_settled``). An Abandon (the caller
hung up) stops it at once. It
sends AgentComplete without any caller field when the caller's channel is already gone
(a callback placeholder, the moment its agent hangs up): the agent's leg says which call.
Anything malformed (a missing or non-numeric field) is skipped or taken as empty; ``apply``
never raises on a peer's data.
"""
from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass

# Device states (QueueMemberStatus "Status") in which the queue cannot ring a member.
_UNREACHABLE = {"4", "5"}      # AST_DEVICE_INVALID, AST_DEVICE_UNAVAILABLE
_CALL_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
_CARD = re.compile(r"\d{1,20}")
_TEXT_LIMIT = 100
# Callers who left the queue lately, kept for the AgentConnect that follows a leave.
_RECENTLY_LEFT = 200


@dataclass
class Entry:            # a caller waiting in the queue (or a callback, later)
    call_id: str        # IVR_CALL_ID, else the channel's Uniqueid
    channel: str
    uniqueid: str
    joined_at: float    # epoch seconds
    position: int
    kind: str = "caller"
    transfer_reason: str = ""   # IVR_TRANSFER_REASON ("" when the IVR never decided)
    verified: bool = False      # IVR_VERIFIED == "1"
    member_status: str = ""     # IVR_MEMBER_STATUS
    card: str = ""              # IVR_CARD, kept only when verified


@dataclass
class Member:           # an agent in the queue
    agent: str          # MemberName (= the desk's agent id)
    interface: str
    paused: bool
    pause_reason: str
    ringing: str | None     # call_id being offered to this agent
    on_call: str | None     # call_id connected to this agent
    status: str = ""        # device state ("1" not in use, "2" in use, "5" unavailable...)
    in_call: bool = False   # Asterisk's InCall: on a call (also one begun before a resync)


@dataclass
class Change:           # what an applied event changed, for the desk to act on
    kind: str           # "queue" | "ringing" | "ring_stopped" | "connected" | "ended" | "member"
    agent: str | None = None
    call_id: str | None = None
    entry: Entry | None = None


def _text(value) -> str:
    return value[:_TEXT_LIMIT] if isinstance(value, str) else ""


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _joined(variables) -> float | None:
    """IVR_QUEUE_JOINED: when the caller first joined (the waiting loop leaves and re-enters
    the queue at each announcement; a callback enters it long after), epoch seconds."""
    if not isinstance(variables, dict):
        return None
    try:
        joined = float(variables.get("IVR_QUEUE_JOINED") or "")
    except ValueError:
        return None
    return joined if 1e9 < joined < 1e10 else None


def _flag(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


class QueueBoard:
    def __init__(self, queue: str = "agents", clock=time.time) -> None:
        self.queue = queue
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget everything (before a resync from a QueueStatus snapshot)."""
        self._waiting: list[Entry] = []
        self._members: dict[str, Member] = {}
        # Calls that left the queue but are still rung or connected to an agent, by uniqueid.
        self._offered: dict[str, Entry] = {}
        # The last callers who left (Asterisk sends QueueCallerLeave before AgentConnect).
        self._left: OrderedDict[str, Entry] = OrderedDict()

    # --- Reading

    def waiting(self) -> list[Entry]:
        return list(self._waiting)

    def members(self) -> dict[str, Member]:
        return dict(self._members)

    def counts(self) -> dict[str, int]:
        """On a call (connected or InCall), else paused, else ready (ringing included);
        a member whose device is unavailable is none of these."""
        counts = {"ready": 0, "on_call": 0, "paused": 0}
        for member in self._members.values():
            if member.on_call or member.in_call:
                counts["on_call"] += 1
            elif member.paused:
                counts["paused"] += 1
            elif member.status not in _UNREACHABLE:
                counts["ready"] += 1
        return counts

    def entry(self, call_id: str) -> Entry | None:
        for entry in self._waiting:
            if entry.call_id == call_id:
                return entry
        for entry in self._offered.values():
            if entry.call_id == call_id:
                return entry
        return None

    # --- Events

    def apply(self, event: dict) -> list[Change]:
        if not isinstance(event, dict) or event.get("Queue") != self.queue:
            return []
        handler = getattr(self, "_on_" + str(event.get("Event", "")), None)
        return handler(event) if handler else []

    def _on_QueueCallerJoin(self, event: dict) -> list[Change]:
        uniqueid = _text(event.get("Uniqueid"))
        if not uniqueid:
            return []
        entry = self._find(uniqueid) or Entry(
            call_id=uniqueid, channel="", uniqueid=uniqueid, joined_at=self.clock(),
            position=0)
        entry.channel = _text(event.get("Channel")) or entry.channel
        self._learn(entry, event.get("ChanVariables"))
        self._place(entry, _int(event.get("Position"), len(self._waiting) + 1))
        return [Change("queue", call_id=entry.call_id, entry=entry)]

    def _on_QueueEntry(self, event: dict) -> list[Change]:
        """A waiting caller in a QueueStatus snapshot."""
        changes = self._on_QueueCallerJoin(event)
        if changes and not _joined(event.get("ChanVariables")):
            wait = _int(event.get("Wait"), 0)
            changes[0].entry.joined_at = self.clock() - max(wait, 0)
        return changes

    def _on_QueueCallerLeave(self, event: dict) -> list[Change]:
        uniqueid = _text(event.get("Uniqueid"))
        entry = self._find(uniqueid)
        if entry is None:
            return []
        self._waiting.remove(entry)
        self._renumber()
        changes = [Change("queue", call_id=entry.call_id, entry=entry)]
        if event.get("Event") == "QueueCallerAbandon":
            changes += self._stop_ringing(entry)
        if any(m.on_call == entry.call_id for m in self._members.values()):
            self._offered[uniqueid] = entry
        self._left[uniqueid] = entry
        while len(self._left) > _RECENTLY_LEFT:
            self._left.popitem(last=False)
        return changes

    _on_QueueCallerAbandon = _on_QueueCallerLeave

    def ring_settled(self, uniqueid: str) -> list[Change]:
        """A moment after a caller left the queue: agents still rung for it (no agent
        answered: AgentConnect would have said so) stop ringing."""
        entry = self._left.get(uniqueid)
        if entry is None or self._find(uniqueid) is not None:    # gone, or back in line
            return []
        return self._stop_ringing(entry)

    def _stop_ringing(self, entry: Entry) -> list[Change]:
        changes = []
        for member in self._members.values():
            if member.ringing == entry.call_id:
                member.ringing = None
                changes.append(Change("ring_stopped", member.agent, entry.call_id, entry))
        return changes

    def _on_AgentCalled(self, event: dict) -> list[Change]:
        member = self._member_of(event, create=True)
        entry = self._caller(event)
        if member is None or entry is None:
            return []
        member.ringing = entry.call_id
        return [Change("ringing", member.agent, entry.call_id, entry)]

    def _on_AgentRingNoAnswer(self, event: dict) -> list[Change]:
        member = self._member_of(event)
        entry = self._caller(event, create=False)
        if member is None or entry is None or member.ringing != entry.call_id:
            return []
        member.ringing = None
        self._release(entry)
        return [Change("ring_stopped", member.agent, entry.call_id, entry)]

    def _on_AgentConnect(self, event: dict) -> list[Change]:
        member = self._member_of(event, create=True)
        entry = self._caller(event)
        if member is None or entry is None:
            return []
        changes = []
        for other in self._members.values():     # ringall: the others stop ringing
            if other is not member and other.ringing == entry.call_id:
                other.ringing = None
                changes.append(Change("ring_stopped", other.agent, entry.call_id, entry))
        member.ringing = None
        member.on_call = entry.call_id
        member.in_call = True
        if self._find(entry.uniqueid) is None:
            self._offered[entry.uniqueid] = entry
        changes.append(Change("connected", member.agent, entry.call_id, entry))
        return changes

    def _on_AgentComplete(self, event: dict) -> list[Change]:
        member = self._member_of(event)
        if member is None:
            return []
        entry = self._caller(event, create=False)
        call_id = entry.call_id if entry else self._call_id_of(event)
        if not call_id:
            # No caller fields: the caller's channel was gone before the queue looked it
            # up (apps/app_queue.c sends the event "incomplete"; a callback placeholder
            # ends at once). The agent's leg inherited IVR_CALL_ID; else its one call.
            call_id = self._call_id_of(event, "Dest") or member.on_call or member.ringing or ""
            entry = self.entry(call_id) if call_id else None
        if call_id and member.on_call == call_id or (
                member.on_call is None and member.in_call and event["Event"] == "AgentComplete"):
            member.on_call = None      # (InCall without a call id: connected before a resync)
            member.in_call = False
            kind = "ended"
        elif call_id and member.ringing == call_id:     # AgentDump before the bridge
            member.ringing = None
            kind = "ring_stopped"
        else:
            return []
        if entry is not None:
            self._release(entry)
        return [Change(kind, member.agent, call_id, entry)]

    _on_AgentDump = _on_AgentComplete

    def _on_QueueMemberAdded(self, event: dict) -> list[Change]:
        member = self._member_of(event, create=True)
        if member is None:
            return []
        self._update_member(member, event, event.get("Interface"))
        return [Change("member", member.agent)]

    def _on_QueueMember(self, event: dict) -> list[Change]:
        """A member in a QueueStatus snapshot: ``Name`` and ``Location``."""
        name = _text(event.get("Name"))
        if not name:
            return []
        member = self._members.setdefault(name, Member(name, "", False, "", None, None))
        self._update_member(member, event, event.get("Location"))
        return [Change("member", member.agent)]

    def _on_QueueMemberPause(self, event: dict) -> list[Change]:
        member = self._member_of(event)
        if member is None:
            return []
        before = (member.paused, member.pause_reason)
        self._update_member(member, event, event.get("Interface"))
        return [Change("member", member.agent)] if before != (
            member.paused, member.pause_reason) else []

    def _on_QueueMemberStatus(self, event: dict) -> list[Change]:
        member = self._member_of(event)
        if member is None:
            return []
        before = (member.paused, member.pause_reason, member.status, member.in_call)
        self._update_member(member, event, event.get("Interface"))
        return [Change("member", member.agent)] if before != (
            member.paused, member.pause_reason, member.status, member.in_call) else []

    def _on_QueueMemberRemoved(self, event: dict) -> list[Change]:
        member = self._member_of(event)
        if member is None:
            return []
        del self._members[member.agent]
        return [Change("member", member.agent)]

    # --- Helpers

    def _find(self, uniqueid: str) -> Entry | None:
        for entry in self._waiting:
            if entry.uniqueid == uniqueid:
                return entry
        return None

    def _place(self, entry: Entry, position: int) -> None:
        if entry in self._waiting:
            self._waiting.remove(entry)
        index = min(max(position, 1), len(self._waiting) + 1) - 1
        self._waiting.insert(index, entry)
        self._renumber()

    def _renumber(self) -> None:
        for number, entry in enumerate(self._waiting, start=1):
            entry.position = number

    def _caller(self, event: dict, create: bool = True) -> Entry | None:
        """The caller of an agent event: waiting, or still offered, or (``create``) new to
        the board (an event seen before its QueueCallerJoin, e.g. across a resync)."""
        uniqueid = _text(event.get("Uniqueid"))
        if not uniqueid:
            return None
        entry = self._find(uniqueid) or self._offered.get(uniqueid)
        if entry is None:
            if not create:
                return None
            entry = self._left.pop(uniqueid, None) or Entry(
                call_id=uniqueid, channel=_text(event.get("Channel")), uniqueid=uniqueid,
                joined_at=self.clock(), position=0)
            self._offered[uniqueid] = entry
        self._learn(entry, event.get("ChanVariables"))
        return entry

    def _release(self, entry: Entry) -> None:
        """Forget a call that left the queue once no agent rings it or talks to it."""
        if entry.uniqueid in self._offered and not any(
                entry.call_id in (m.ringing, m.on_call) for m in self._members.values()):
            del self._offered[entry.uniqueid]

    @staticmethod
    def _call_id_of(event: dict, prefix: str = "") -> str:
        """IVR_CALL_ID of the event's caller channel (``prefix`` "Dest": of the agent's
        leg, which inherits it), else that channel's Uniqueid."""
        variables = event.get(prefix + "ChanVariables")
        call_id = variables.get("IVR_CALL_ID") if isinstance(variables, dict) else None
        if isinstance(call_id, str) and _CALL_ID.fullmatch(call_id):
            return call_id
        return _text(event.get(prefix + "Uniqueid")) if not prefix else ""

    @staticmethod
    def _learn(entry: Entry, variables) -> None:
        """The IVR's context from the caller's channel variables, checked."""
        if not isinstance(variables, dict) or not variables:
            return
        call_id = variables.get("IVR_CALL_ID")
        if isinstance(call_id, str) and _CALL_ID.fullmatch(call_id):
            entry.call_id = call_id
        entry.transfer_reason = _text(variables.get("IVR_TRANSFER_REASON", entry.transfer_reason))
        entry.member_status = _text(variables.get("IVR_MEMBER_STATUS", entry.member_status))
        entry.verified = variables.get("IVR_VERIFIED", "1" if entry.verified else "") == "1"
        card = variables.get("IVR_CARD", entry.card)
        entry.card = card if entry.verified and isinstance(card, str) and _CARD.fullmatch(
            card) else ""
        joined = _joined(variables)
        if joined is not None:
            entry.joined_at = joined
        if _CALL_ID.fullmatch(str(variables.get("IVR_CALLBACK_ID") or "")):
            entry.kind = "callback"

    def _member_of(self, event: dict, create: bool = False) -> Member | None:
        name = _text(event.get("MemberName"))
        if not name:
            return None
        member = self._members.get(name)
        if member is None and create:
            member = self._members[name] = Member(
                name, _text(event.get("Interface")), False, "", None, None)
        return member

    @staticmethod
    def _update_member(member: Member, event: dict, interface) -> None:
        member.interface = _text(interface) or member.interface
        if "Paused" in event:
            member.paused = _flag(event["Paused"])
        if "PausedReason" in event or "Paused" in event:
            member.pause_reason = _text(event.get("PausedReason")) if member.paused else ""
        if "Status" in event:
            member.status = _text(event["Status"])
        if "InCall" in event:
            member.in_call = _flag(event["InCall"]) or member.on_call is not None
