"""In-process stand-ins for flow tests: a call driven by the emulator's scripted caller,
and a membership service held in a dict. The protocol and integration tests use the real
peers instead (TCP emulator, the reference service over HTTP, a real Asterisk)."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import date

from ivr.call import Answer, CallerHungUp
from ivr.emulator import HANG_UP
from ivr.membership import Billing, MembershipUnavailable, Participant

SITI = Participant(
    card_number="0001234567890", nik="3174015708900003", birth_date=date(1990, 8, 17),
    status="AKTIF", inactive_reason=None, segment="PBPU", member_class=2,
    billing=Billing(payer="PESERTA", monthly_premium=100000, family_members=3,
                    months_in_arrears=2, amount_due=600000, due_date=date(2026, 12, 10)),
    phone_last4="4821")


def participant(**changes) -> Participant:
    return replace(SITI, **changes)


class FakeCall:
    """``ivr.call.Call`` without sockets: prompts go to ``sounds``, keys come from a caller."""

    def __init__(self, caller, missing: frozenset[str] = frozenset()) -> None:
        self.caller = caller
        self.missing = missing
        self.sounds: list[str] = []
        self.variables: dict[str, str] = {}
        self.hung_up = False

    async def play(self, sounds, barge_in):
        for sound in sounds:
            if self.hung_up:
                raise CallerHungUp
            if sound in self.missing:
                continue
            self.sounds.append(sound)
            action = self.caller.on_prompt(sound, barge_in)
            if action == HANG_UP:
                self.hung_up = True
                raise CallerHungUp
            if barge_in and action is not None:
                return action
        return None

    async def ask(self, sounds, max_keys, timeout, ignore_first=""):
        """As Asterisk's GET DATA and Read do: the sounds play until a key; the answer ends
        at ``max_keys``, at # (kept in the keys) or at a pause."""
        action = None
        for index, sound in enumerate(sounds):
            if self.hung_up:
                raise CallerHungUp
            if sound in self.missing:
                continue
            self.sounds.append(sound)
            action = self._check(self.caller.on_prompt(sound, True))
            if index == 0 and action is not None and action in ignore_first:
                action = None
            if action is not None:
                break
        keys = ""
        while True:
            if action is None:
                action = await self.wait_key(timeout)
                if action is None:
                    return Answer(keys, True)
            keys += action
            if action == "#" or len(keys) >= max_keys:
                return Answer(keys, False)
            action = None

    def _check(self, action):
        if action == HANG_UP:
            self.hung_up = True
            raise CallerHungUp
        return action

    async def wait_key(self, timeout):
        if self.hung_up:
            raise CallerHungUp
        action = self.caller.on_wait()
        if action == HANG_UP:
            self.hung_up = True
            raise CallerHungUp
        return action

    async def set_variable(self, name, value):
        self.variables[name.lstrip("_")] = value


class FakeMembership:
    def __init__(self, *participants: Participant, delay: float = 0.0,
                 fail: bool = False) -> None:
        self.by_id = {}
        for p in participants:
            self.by_id[p.card_number] = p
            self.by_id[p.nik] = p
        self.delay = delay
        self.fail = fail
        self.requests: list[tuple[str, str]] = []

    async def lookup(self, identifier: str, request_id: str, deadline: float | None = None):
        """As the real client: no answer by ``deadline`` is the service's failure."""
        self.requests.append((identifier, request_id))
        if self.delay:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.sleep(self.delay)
            except TimeoutError:
                raise MembershipUnavailable("timeout") from None
        if self.fail:
            raise MembershipUnavailable("down")
        return self.by_id.get(identifier)
