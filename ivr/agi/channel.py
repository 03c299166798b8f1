"""``AgiCall``: the call interface (``ivr.call.Call``) spoken over a FastAGI session.

How Asterisk 22 answers is in ``../shared/notes/asterisk.md``: ``result=-1`` from a
playback is either a missing file or a hang-up, so it is settled by ``CHANNEL STATUS``;
``511`` and a ``HANGUP`` line mean the caller is gone.
"""
from __future__ import annotations

import logging
from typing import Sequence

from ..call import CallerHungUp
from .codec import ALL_KEYS, CommandError, ProtocolError, Reply
from .session import AgiSession

log = logging.getLogger(__name__)

DEAD_CHANNEL = 511
CHANNEL_UP = 6


class AgiCall:
    __slots__ = ("session", "missing_sounds")

    def __init__(self, session: AgiSession) -> None:
        self.session = session
        self.missing_sounds: list[str] = []

    async def _input(self, verb: str, *args: str | int, expect_seconds: float) -> Reply:
        """An input or playback command, which the caller's hang-up interrupts."""
        if self.session.hung_up:
            raise CallerHungUp
        reply = await self.session.send(verb, *args, expect_seconds=expect_seconds)
        if reply.code == DEAD_CHANNEL or self.session.hung_up:
            raise CallerHungUp
        if not reply.ok:
            raise CommandError(f"{verb} refused: {reply.code}")
        if reply.number is None:
            raise ProtocolError(f"{verb}: a result that is not a number")
        return reply

    async def answer(self) -> None:
        """Answer (a no-op when the dialplan already did), so that the channel is up."""
        await self._input("ANSWER", expect_seconds=0)

    async def play(self, sounds: Sequence[str], barge_in: bool) -> str | None:
        escapes = ALL_KEYS if barge_in else ""
        for sound in sounds:
            reply = await self._input("STREAM FILE", sound, escapes, expect_seconds=60)
            if reply.number > 0:
                return reply.key
            if reply.number < 0:
                await self._settle_playback_failure(sound)
        return None

    async def _settle_playback_failure(self, sound: str) -> None:
        status = await self.session.send("CHANNEL STATUS")
        if self.session.hung_up or status.number != CHANNEL_UP:
            raise CallerHungUp
        if sound not in self.missing_sounds:
            self.missing_sounds.append(sound)
            log.warning("sound %s could not be played; the call goes on without it", sound)

    async def wait_key(self, timeout: float) -> str | None:
        reply = await self._input("WAIT FOR DIGIT", int(timeout * 1000), expect_seconds=timeout)
        if reply.number < 0:
            raise CallerHungUp
        return reply.key

    async def set_variable(self, name: str, value: str) -> None:
        reply = await self.session.send("SET VARIABLE", name, value)
        if reply.code not in (200, DEAD_CHANNEL):
            raise CommandError(f"SET VARIABLE refused: {reply.code}")
