"""Finding 6: the lookup's limit holds for the caller. The 4.3 s "mohon tunggu" used to
play to its end before the deadline was looked at, so a 2.5 s answer reached the caller at
5.3 s. Here prompts take their real rendered length (a call whose playback sleeps), the
service is slow, and the test checks when the caller hears the answer or the apology."""
from __future__ import annotations

import asyncio

from ivr.dialog import Dialog
from ivr.emulator import ScriptedCaller
from ivr.hotline import FlowSettings, Hotline
from ivr.names import Outcome, P, Reason
from prompts import load_catalog

from .fakes import SITI, FakeCall, FakeMembership

CATALOG = load_catalog()
STATUS = f"1 {SITI.card_number}# 1 17081990"
# The rendered lengths (ms) of ``ivr prompts list`` for the prompts that matter here;
# every other prompt plays for 50 ms.
DURATIONS = {P.PLEASE_WAIT: 4280, P.PLEASE_WAIT_SHORT: 1100}
LIMIT, HOLD_AFTER = 3.0, 1.0


class TimedCall(FakeCall):
    """Playback takes the prompt's length; every prompt's start time is noted."""

    def __init__(self, caller) -> None:
        super().__init__(caller)
        self.started: list[tuple[str, float]] = []

    async def _timed(self, sounds) -> None:
        loop = asyncio.get_running_loop()
        for sound in sounds:
            prompt_id = CATALOG.prompt_id(sound)
            self.started.append((prompt_id, loop.time()))
            await asyncio.sleep(DURATIONS.get(prompt_id, 50) / 1000)

    async def play(self, sounds, barge_in):
        await self._timed(sounds)
        return await super().play(sounds, barge_in)

    async def ask(self, sounds, max_keys, timeout, ignore_first=""):
        await self._timed(sounds)
        return await super().ask(sounds, max_keys, timeout, ignore_first)


class NotedMembership(FakeMembership):
    async def lookup(self, identifier, request_id, deadline=None):
        self.asked_at = asyncio.get_running_loop().time()
        return await super().lookup(identifier, request_id, deadline)


async def run(lockout, delay: float):
    call = TimedCall(ScriptedCaller(STATUS))
    dialog = Dialog(call, CATALOG, menu_timeout=5, first_digit_timeout=6,
                    inter_digit_timeout=3)
    dialog.durations = dict(DURATIONS)
    membership = NotedMembership(SITI, delay=delay)
    hotline = Hotline(dialog, membership, lockout, call_id="1795409641.1",
                      caller="081234567890",
                      settings=FlowSettings(lookup_timeout=LIMIT, hold_prompt_after=HOLD_AFTER))
    state = await hotline.run()
    return state, call, membership


def heard_at(call: TimedCall, prompt_id: str) -> float:
    return next(t for p, t in call.started if p == prompt_id)


async def test_a_2_5_s_answer_is_heard_within_the_limit(lockout):
    state, call, membership = await run(lockout, delay=2.5)
    assert state.outcome is Outcome.COMPLETED
    played = [p for p, _ in call.started]
    assert P.PLEASE_WAIT not in played and P.PLEASE_WAIT_SHORT in played
    after = heard_at(call, P.STATUS_ACTIVE) - membership.asked_at
    print(f"\nanswer after 2.5 s: status heard {after:.2f} s after the lookup began "
          f"(limit {LIMIT:g} s + {DURATIONS[P.PLEASE_WAIT_SHORT] / 1000:g} s short prompt)")
    assert after <= LIMIT + DURATIONS[P.PLEASE_WAIT_SHORT] / 1000
    assert 2500 <= state.membership_latency_ms < 2700      # the lookup's own time


async def test_a_service_that_never_answers_gets_the_apology_within_the_limit(lockout):
    state, call, membership = await run(lockout, delay=30)
    assert (state.outcome, state.transfer_reason) == (Outcome.TRANSFER,
                                                      Reason.SERVICE_UNAVAILABLE)
    after = heard_at(call, P.SERVICE_UNAVAILABLE) - membership.asked_at
    print(f"\nno answer: apology heard {after:.2f} s after the lookup began")
    assert after <= LIMIT + DURATIONS[P.PLEASE_WAIT_SHORT] / 1000


async def test_the_full_hold_prompt_plays_when_it_fits(lockout, monkeypatch):
    monkeypatch.setitem(DURATIONS, P.PLEASE_WAIT, 1500)
    state, call, _ = await run(lockout, delay=2.0)
    assert state.outcome is Outcome.COMPLETED
    assert P.PLEASE_WAIT in [p for p, _ in call.started]
