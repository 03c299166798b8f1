"""A hub for the web side's tests: keeps the ``Desk`` contract (desk-contract.md, section 3)
in memory, strictly. Unknown agents raise, unknown calls are DeskError 404, a stream
unsubscribed twice is an error, and ``test_desk_web`` checks its signatures against the
protocol so that the fake cannot drift from what the real hub offers.

The test drives it like Asterisk would: ``ring``, ``connect``, ``end``, ``set_waiting``,
``set_asterisk``; each pushes the events a real hub pushes to the agents' streams.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from ivr.desk.errors import DeskError

DISPOSITIONS = ["answered", "escalated_to_branch", "data_update_needed", "complaint", "other"]
STATES = ("offline", "ready", "paused", "ringing", "on_call", "wrap_up")


def iso(seconds_ago: float = 0.0) -> str:
    at = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
    return at.isoformat(timespec="milliseconds")


class FakeDesk:
    def __init__(self, agents: dict[str, str] | None = None) -> None:
        self.dispositions = list(DISPOSITIONS)
        self.asterisk = "up"
        names = agents or {"agent1": "Agent 1", "agent2": "Agent 2"}
        self._agents = {a: {"agent": a, "name": n, "state": "offline", "pause_reason": None,
                            "call_id": None} for a, n in names.items()}
        self.calls: dict[str, dict] = {}
        self.waiting: list[dict] = []
        self.callbacks: list[dict] = []
        self.subscribers: dict[str, list[asyncio.Queue]] = {}
        self.happened: list[tuple] = []          # ("logged_in", agent), ("state", ...) ...
        self.audit: list[tuple[str, str]] = []   # (agent, call_id) per context opened
        self.asked: list[str] = []               # every call id the web side passed on
        self.wrapups: dict[str, dict] = {}

    # --- the Desk protocol ---------------------------------------------------------

    async def logged_in(self, agent_id: str) -> None:
        self._agent(agent_id)
        self.happened.append(("logged_in", agent_id))

    async def logged_out(self, agent_id: str) -> None:
        self._agent(agent_id).update(state="offline", pause_reason=None)
        self.happened.append(("logged_out", agent_id))

    def me(self, agent_id: str) -> dict:
        return dict(self._agent(agent_id))

    async def set_state(self, agent_id: str, state: str, reason: str | None) -> dict:
        if state not in ("ready", "paused", "offline"):
            raise AssertionError(f"the web side passed state {state!r}")
        if (state == "paused") != (reason is not None):
            raise AssertionError(f"the web side passed reason {reason!r} with {state!r}")
        self._agent(agent_id).update(state=state, pause_reason=reason)
        self.happened.append(("state", agent_id, state, reason))
        self._push(agent_id, "me", self.me(agent_id))
        self._broadcast("queue", self.queue())
        return self.me(agent_id)

    def queue(self) -> dict:
        states = [a["state"] for a in self._agents.values()]
        return {"waiting": [dict(e) for e in self.waiting],
                "callbacks": [dict(c) for c in self.callbacks],
                "agents": {"ready": states.count("ready"),
                           "on_call": states.count("on_call") + states.count("ringing"),
                           "paused": states.count("paused")}}

    async def call_context(self, agent_id: str, call_id: str) -> dict:
        self._agent(agent_id)
        self.asked.append(call_id)
        if call_id not in self.calls:
            raise DeskError(404, "unknown call")
        self.audit.append((agent_id, call_id))
        return {**self.calls[call_id], "wrapup": self.wrapups.get(call_id)}

    async def wrapup(self, agent_id: str, call_id: str, disposition: str, note: str) -> dict:
        self._agent(agent_id)
        self.asked.append(call_id)
        if call_id not in self.calls:
            raise DeskError(404, "unknown call")
        if disposition not in self.dispositions or len(note) > 1000:
            raise AssertionError("the web side let an invalid wrap-up through")
        saved = {"agent": agent_id, "disposition": disposition, "note": note, "at": iso()}
        self.wrapups[call_id] = saved
        return dict(saved)

    def subscribe(self, agent_id: str) -> asyncio.Queue:
        self._agent(agent_id)
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers.setdefault(agent_id, []).append(queue)
        return queue

    def unsubscribe(self, agent_id: str, queue: asyncio.Queue) -> None:
        self.subscribers[agent_id].remove(queue)       # ValueError when not subscribed

    # --- what the test does in Asterisk's place ------------------------------------

    def add_call(self, context: dict) -> None:
        self.calls[context["call_id"]] = context

    def set_callbacks(self, callbacks: list[dict]) -> None:
        self.callbacks = [dict(c) for c in callbacks]
        self._broadcast("queue", self.queue())

    def set_waiting(self, entries: list[dict], callbacks_unchanged: bool = False) -> None:
        """``callbacks_unchanged``: the update leaves them out, as the hub does."""
        self.waiting = [dict(e) for e in entries]
        update = self.queue()
        if callbacks_unchanged:
            del update["callbacks"]
        self._broadcast("queue", update)

    def ring(self, agent_id: str, call_id: str, kind: str | None = None) -> None:
        self._agent(agent_id).update(state="ringing", call_id=call_id)
        self._push(agent_id, "ringing", {"call_id": call_id, **({"kind": kind} if kind else {})})
        self._push(agent_id, "me", self.me(agent_id))

    def connect(self, agent_id: str, call_id: str) -> None:
        self._agent(agent_id).update(state="on_call", call_id=call_id)
        self.waiting = [e for e in self.waiting if e["call_id"] != call_id]
        self._push(agent_id, "connected", {"call_id": call_id})
        self._push(agent_id, "me", self.me(agent_id))
        self._broadcast("queue", self.queue())

    def end(self, agent_id: str, call_id: str) -> None:
        self._agent(agent_id).update(state="wrap_up", call_id=call_id)
        self._push(agent_id, "ended", {"call_id": call_id})
        self._push(agent_id, "me", self.me(agent_id))

    def set_asterisk(self, state: str) -> None:
        self.asterisk = state
        self._broadcast("asterisk", {"state": state})

    def streams(self, agent_id: str) -> int:
        return len(self.subscribers.get(agent_id, []))

    def _agent(self, agent_id: str) -> dict:
        if agent_id not in self._agents:
            raise KeyError(f"unknown agent {agent_id!r}")
        return self._agents[agent_id]

    def _push(self, agent_id: str, name: str, data: dict) -> None:
        for queue in self.subscribers.get(agent_id, []):
            queue.put_nowait((name, data))

    def _broadcast(self, name: str, data: dict) -> None:
        for agent_id in self.subscribers:
            self._push(agent_id, name, data)


CARD = "0001234567890"


def verified_call(call_id: str = "1764640000.101") -> dict:
    return {
        "call_id": call_id, "started_at": iso(95), "outcome": "transfer",
        "transfer_reason": "caller_request", "verified": True, "card": CARD,
        "identifier_masked": "0001******890", "member_status": "AKTIF",
        "menu_keys": ["1", "1", "0"],
        "transcript": ["Selamat datang di layanan BPJS Kesehatan 1500 400.",
                       "Silakan masukkan nomor kartu: 0001******890.",
                       "Status kepesertaan Bapak/Ibu aktif.",
                       "Mohon tunggu, Bapak/Ibu akan dihubungkan dengan petugas."],
        "ivr_seconds": 74.5,
        "queue": {"joined_at": iso(20), "waited_s": None, "answered_by": None, "result": None},
        "history": [{"call_id": "1764000000.7", "started_at": iso(5 * 86400), "outcome": "transfer",
                     "transfer_reason": "service_unavailable", "disposition": "answered"}],
    }


def unverified_call(call_id: str = "1764640000.202") -> dict:
    return {
        "call_id": call_id, "started_at": iso(60), "outcome": "transfer",
        "transfer_reason": "verification_failed", "verified": False, "card": None,
        "identifier_masked": "3174********012", "member_status": None,
        "menu_keys": ["1", "2"],
        "transcript": ["Selamat datang di layanan BPJS Kesehatan 1500 400.",
                       "Data yang Bapak/Ibu masukkan tidak cocok."],
        "ivr_seconds": 48.0,
        "queue": {"joined_at": iso(8), "waited_s": None, "answered_by": None, "result": None},
        "history": [],
    }


def waiting_entries() -> list[dict]:
    return [
        {"call_id": "1764640000.101", "position": 1, "waiting_s": 20, "kind": "caller",
         "transfer_reason": "caller_request", "verified": True, "member_status": "AKTIF"},
        {"call_id": "1764640000.202", "position": 2, "waiting_s": 8, "kind": "caller",
         "transfer_reason": "verification_failed", "verified": False, "member_status": ""},
        {"call_id": "cb-17", "position": 3, "waiting_s": 3, "kind": "callback",
         "transfer_reason": "locked", "verified": False, "member_status": ""},
    ]


def board_callbacks() -> list[dict]:
    """The scheduler's board: one in line, one to be tried again, one failed, one done."""
    def cb(n: int, status: str, attempts: list[str], due_in_s: float = 0) -> dict:
        return {"id": f"{n:032x}", "call_id": f"cb-{n}", "status": status,
                "number_masked": f"0812*****80{n}", "joined_at": iso(600 - n),
                "due_at": iso(-due_in_s),
                "attempts": [{"n": i, "at": iso(300 - i), "result": r}
                             for i, r in enumerate(attempts, start=1)]}
    return [cb(1, "queued", []), cb(2, "scheduled", ["busy"], due_in_s=240),
            cb(3, "failed", ["busy", "noanswer", "chanunavail"]),
            cb(4, "completed", ["answer"])]
