"""``AgiCall``: the call interface (``ivr.call.Call``) spoken over a FastAGI session.

How Asterisk 22 answers is in ``../shared/notes/asterisk.md``: ``result=-1`` from a
playback is either a missing file or a hang-up, so it is settled by ``CHANNEL STATUS``;
``511`` and a ``HANGUP`` line mean the caller is gone.

Asterisk drops a key that arrives while no command runs, so a question and its answer take
as few commands as possible, each of them listening from start to end:
- one sound: ``GET DATA sound ms max`` plays it and collects the whole entry (Asterisk
  gives the digits without the ``#`` that ended them; ``(timeout)`` after a pause);
- several sounds (a read-back and its question, a status and the menu after it): the
  dialplan application ``Read`` plays them as one list (``a&b&c``, listening between them
  too) and takes the first key; ``GET FULL VARIABLE`` fetches it. ``Read`` logs the keys
  it took at verbose level 3, so it only ever takes one key; the rest of an entry comes
  by ``GET DATA`` with no prompt (``""``: Asterisk plays nothing and listens).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from ..call import Answer, CallerHungUp
from .codec import ALL_KEYS, DTMF_KEYS, CommandError, ProtocolError, Reply
from .session import AgiSession

log = logging.getLogger(__name__)

DEAD_CHANNEL = 511
CHANNEL_UP = 6
READ_VARIABLE = "IVR_KEY"
# The key Read took and how it ended (OK, TIMEOUT, HANGUP, ERROR), in one command.
READ_RESULT = "${READSTATUS}:${" + READ_VARIABLE + "}"
# A command may run as long as its sounds; this bounds a list of them (the peer's stuck
# limit is added by the session).
LONGEST_SOUNDS = 120.0


class AgiCall:
    __slots__ = ("session", "missing_sounds")

    def __init__(self, session: AgiSession) -> None:
        self.session = session
        self.missing_sounds: list[str] = []

    async def _command(self, verb: str, *args: str | int, expect_seconds: float) -> Reply:
        """An input or playback command, which the caller's hang-up interrupts."""
        if self.session.hung_up:
            raise CallerHungUp
        reply = await self.session.send(verb, *args, expect_seconds=expect_seconds)
        if reply.code == DEAD_CHANNEL or self.session.hung_up:
            raise CallerHungUp
        if not reply.ok:
            raise CommandError(f"{verb} refused: {reply.code}")
        return reply

    async def _input(self, verb: str, *args: str | int, expect_seconds: float) -> Reply:
        reply = await self._command(verb, *args, expect_seconds=expect_seconds)
        if reply.number is None:
            raise ProtocolError(f"{verb}: a result that is not a number: {reply.result!r}")
        return reply

    async def answer(self) -> None:
        """Answer (a no-op when the dialplan already did), so that the channel is up."""
        await self._input("ANSWER", expect_seconds=0)

    async def play(self, sounds: Sequence[str], barge_in: bool) -> str | None:
        escapes = ALL_KEYS if barge_in else ""
        for sound in sounds:
            key = await self._stream(sound, escapes)
            if key is not None:
                return key
        return None

    async def _stream(self, sound: str, escapes: str) -> str | None:
        reply = await self._input("STREAM FILE", sound, escapes, expect_seconds=LONGEST_SOUNDS)
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

    async def ask(self, sounds: Sequence[str], max_keys: int, timeout: float,
                  ignore_first: str = "") -> Answer:
        sounds = list(sounds)
        loop = asyncio.get_running_loop()
        started = loop.time()
        key = None
        if ignore_first and sounds:
            escapes = "".join(k for k in ALL_KEYS if k not in ignore_first)
            key = await self._stream(sounds.pop(0), escapes)
        if key is None and len(sounds) > 1:
            key = await self._read_first_key(sounds, timeout)
            if key is None:
                return Answer("", True)
        elif key is None:
            return await self._get_data(sounds[0] if sounds else "", max_keys, timeout)
        cut_after = loop.time() - started      # a key stopped the sounds here
        answer = await self._rest(key, max_keys, timeout)
        return Answer(answer.keys, answer.timed_out, cut_after)

    async def _rest(self, first: str, max_keys: int, timeout: float) -> Answer:
        if first == "#" or max_keys <= 1:
            return Answer(first, False)
        more = await self._get_data("", max_keys - 1, timeout)
        return Answer(first + more.keys, more.timed_out)

    async def _get_data(self, sound: str, max_keys: int, timeout: float) -> Answer:
        reply = await self._command("GET DATA", sound, round(timeout * 1000), max_keys,
                                    expect_seconds=LONGEST_SOUNDS + max_keys * timeout)
        keys = reply.result
        if keys == "-1":            # a hang-up, or a sound that is missing
            if not sound:
                raise CallerHungUp
            await self._settle_playback_failure(sound)
            return await self._get_data("", max_keys, timeout)
        if not DTMF_KEYS.issuperset(keys):
            raise ProtocolError(f"GET DATA answered {keys!r}")
        timed_out = reply.data == "timeout"
        if not timed_out and len(keys) < max_keys:
            keys += "#"             # Asterisk ended the entry at # and left it out
        return Answer(keys, timed_out)

    async def _read_first_key(self, sounds: list[str], timeout: float) -> str | None:
        """Play the sounds as one list while listening; the first key, or None. A missing
        sound is skipped by Read without a word."""
        options = f"{READ_VARIABLE},{'&'.join(sounds)},1,t(),1,{timeout:g}"
        await self._command("EXEC", "Read", options,
                            expect_seconds=LONGEST_SOUNDS + timeout)
        reply = await self._command("GET FULL VARIABLE", READ_RESULT, expect_seconds=0)
        status, _, key = (reply.data or "").partition(":")
        if status == "HANGUP":
            raise CallerHungUp
        if status == "OK" and key:
            if key[0] not in DTMF_KEYS:
                raise ProtocolError(f"Read gave the key {key[0]!r}")
            return key[0]
        if status in ("OK", "TIMEOUT"):
            return None
        raise CommandError(f"Read ended with {status!r}")

    async def wait_key(self, timeout: float) -> str | None:
        reply = await self._input("WAIT FOR DIGIT", int(timeout * 1000), expect_seconds=timeout)
        if reply.number < 0:
            raise CallerHungUp
        return reply.key

    async def set_variable(self, name: str, value: str) -> None:
        reply = await self.session.send("SET VARIABLE", name, value)
        if reply.code not in (200, DEAD_CHANNEL):
            raise CommandError(f"SET VARIABLE refused: {reply.code}")
