"""The scripted calls of the benchmark, the synthetic participants they use, and the
recording of the commands the hotline sends on each path (which the baselines replay).

Every path is a ``ScriptedCaller`` script (``ivr.emulator``). ``{card}``, ``{born}`` are
filled per call, so failed verifications are spread over many synthetic participants, as
a day of real traffic spreads them over many people: the lockout store then does the work
it does in production (one failure row per caller and identifier) without locking anybody
out mid-run.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ivr.emulator import AsteriskEmulator, ScriptedCaller
from ivr.membership import demo
from ivr.membership.reference import SCHEMA

DEMO_CARD, DEMO_BORN = "0001234567890", "17081990"
WRONG_BORN = "01011991"
# Synthetic participants for the wrong-birth-date path: SITI RAHAYU's record under other
# card numbers and NIKs (invented, outside the demo's ranges).
SYNTHETIC_PREFIX = "0002"
SYNTHETIC_COUNT = 50_000
SYNTHETIC_NIK_PREFIX = "3174015708"


@dataclass(frozen=True)
class CallPath:
    name: str
    script: str          # ScriptedCaller keys, with {card} / {born} filled per call
    weight: int
    outcome: str         # IVR_OUTCOME the call must leave
    synthetic: bool = False

    def keys(self, n: int) -> str:
        card = synthetic_card(n) if self.synthetic else DEMO_CARD
        return self.script.format(card=card, born=DEMO_BORN, wrong=WRONG_BORN)


PATHS = (
    # Main menu 1, card, confirm, birth date: status and billing read out; silence at the
    # post-menu ends the call.
    CallPath("status", "1 {card}# 1 {born}", 40, "completed"),
    # A wrong birth date first (a failed verification, written to the lockout store), then
    # the card again and the right date.
    CallPath("wrong-date", "1 {card}# 1 {wrong} {card}# 1 {born}", 20, "completed", True),
    # Hangs up while the birth date is asked for.
    CallPath("hang-up", "1 {card}# 1 h", 20, "abandoned"),
    # Asks for an agent at the main menu.
    CallPath("agent", "0", 20, "transfer"),
)
BY_NAME = {p.name: p for p in PATHS}


def synthetic_card(n: int) -> str:
    return f"{SYNTHETIC_PREFIX}{n % SYNTHETIC_COUNT:09d}"


def synthetic_nik(n: int) -> str:
    return f"{SYNTHETIC_NIK_PREFIX}{n % SYNTHETIC_COUNT:06d}"


def seed_membership_db(path: str | Path) -> None:
    """Create the reference service's database with the synthetic participants (the service
    adds the demo ones itself when it starts)."""
    template = dict(demo.PARTICIPANTS[0])
    with sqlite3.connect(path) as db:
        db.execute(SCHEMA)
        rows = []
        for n in range(SYNTHETIC_COUNT):
            body = {**template, "card_number": synthetic_card(n), "nik": synthetic_nik(n)}
            rows.append((body["card_number"], body["nik"], json.dumps(body)))
        db.executemany("INSERT OR REPLACE INTO participants VALUES (?, ?, ?)", rows)


class RecordingEmulator(AsteriskEmulator):
    """The emulator, noting each command with the reply it got."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.exchanges: list[tuple[str, str]] = []

    def reply_to(self, command: str):
        reply = super().reply_to(command)
        assert isinstance(reply, str)
        self.exchanges.append((command, reply))
        return reply


async def record_paths(host: str, port: int) -> dict[str, list[tuple[str, str]]]:
    """One call per path against the hotline server: the (command, reply) sequence each
    produced. Fails if a path does not end as it should."""
    recorded = {}
    for i, path in enumerate(PATHS):
        emulator = RecordingEmulator(host, port, ScriptedCaller(path.keys(i)),
                                     caller_id=f"0899{i:08d}", timeout=120)
        call = await emulator.run()
        outcome = call.variables.get("IVR_OUTCOME")
        if outcome != path.outcome:
            raise RuntimeError(f"path {path.name}: outcome {outcome!r}, expected "
                               f"{path.outcome!r} ({call.ended})")
        recorded[path.name] = emulator.exchanges
    return recorded
