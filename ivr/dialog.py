"""Dialog primitives over a ``Call``: say, gather digits, menus with their retry policy.

Three rules live here and nowhere else:
- **type-ahead**: a key that interrupts a prompt is kept and becomes the first key of the
  next answer; a question whose answer has already begun is not asked aloud;
- **no idle moment**: what is said before a question (an apology, a status) is played
  together with the question by one ``Call.ask``, and a wait (the membership look-up)
  listens, because Asterisk drops a key pressed while no command runs;
- **retries**: how many silent rounds and wrong keys a menu takes before it gives up.
Every prompt that starts playing is added to the transcript, as its (masked) text (when a
key cut a list of prompts short, the ones whose start had come by then).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Sequence

from prompts import Catalog

from . import speech
from .call import Answer, Call
from .names import P
from .privacy import mask_number


@dataclass(frozen=True, slots=True)
class Utterance:
    """Sounds played in a row, and the text the transcript shows for them."""
    prompt_ids: tuple[str, ...]
    text: str


# A wait (the membership look-up) listens in slices this long: Asterisk cannot be told to
# stop listening, so a look-up that ends mid-slice waits for the slice at most.
LISTEN_SLICE = 0.1


class Ending(Enum):
    """How a gather or a menu ended without a usable answer."""
    TIMEOUT = "timeout"
    NO_INPUT = "no_input"
    TOO_MANY_INVALID = "too_many_invalid"


@dataclass(frozen=True, slots=True)
class Gathered:
    digits: str
    ended_by: str       # "complete" (enough digits), "terminator" (#) or "timeout"


@dataclass(frozen=True, slots=True)
class Retry:
    """A menu's patience: silent rounds in a row, wrong keys, and how it reacts."""
    silent: int = 3
    invalid: int = 3
    together: bool = False        # silence and wrong keys share one budget
    explain_invalid: bool = True  # say "that choice is not available" on a wrong key


class Dialog:
    def __init__(self, call: Call, catalog: Catalog, *, menu_timeout: float,
                 first_digit_timeout: float, inter_digit_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.call = call
        self.catalog = catalog
        self.menu_timeout = menu_timeout
        self.first_digit_timeout = first_digit_timeout
        self.inter_digit_timeout = inter_digit_timeout
        self.transcript: list[str] = []
        self.menu_keys: list[str] = []
        self.durations: dict[str, int] = {}
        self.audio_ms = 0       # full length of every prompt started, in ms
        self.clock = clock
        self.started = clock()
        self._pending: list[Utterance] = []   # said before the next question, with it
        self._typeahead = ""
        self._stray = ""        # a key that would be stray as the next key (# after a NIK)

    def elapsed_ms(self) -> int:
        """Wall-clock time since the call was answered: prompts as far as they played,
        waits for keys and for the look-up."""
        return round((self.clock() - self.started) * 1000)

    @property
    def typed_ahead(self) -> bool:
        return bool(self._typeahead)

    # -- what can be said

    def prompt(self, prompt_id: str) -> Utterance:
        return Utterance((prompt_id,), self.catalog.text(prompt_id))

    def spoken(self, fragment_ids: Sequence[str]) -> Utterance:
        return Utterance(tuple(fragment_ids), speech.words(fragment_ids, self.catalog))

    @staticmethod
    def secret_digits(digits: str) -> Utterance:
        """A personal number read digit by digit; the transcript shows it masked."""
        return Utterance(speech.digits(digits), mask_number(digits))

    # -- saying and hearing

    def _sounds(self, utterances: Sequence[Utterance]) -> list[str]:
        return [self.catalog.sound_name(p) for u in utterances for p in u.prompt_ids]

    def _played(self, utterances: Sequence[Utterance], since: float,
                cut_after: float | None = None) -> None:
        """Into the transcript: the utterances whose start had come when a key cut them
        (``cut_after`` s in), else when the command that played them returned (all of
        them when durations are unknown)."""
        heard_ms = (self.clock() - since if cut_after is None else cut_after) * 1000
        offset = 0
        for utterance in utterances:
            if offset and offset >= heard_ms:
                break
            self.transcript.append(utterance.text)
            length = sum(self.durations.get(p, 0) for p in utterance.prompt_ids)
            self.audio_ms += length
            offset += length

    def _keep(self, key: str | None) -> None:
        if key is None:
            return
        if not self._typeahead and key == self._stray:
            self._stray = ""
            return
        self._stray = ""
        self._typeahead += key

    async def say(self, *utterances: Utterance, barge_in: bool = False) -> None:
        """With ``barge_in``, what is said comes before the next question and is played
        with it (a key stops it and begins the answer; nothing is played when the caller
        has typed ahead). Without, it is played now in full, keys ignored."""
        if barge_in:
            self._pending += utterances
            return
        sequence, self._pending = self._pending + list(utterances), []
        since = self.clock()
        try:
            await self.call.play(self._sounds(sequence), False)
        finally:
            self._played(sequence, since)

    async def _keys(self, question: Sequence[Utterance], max_keys: int,
                    timeout: float) -> Answer:
        """Keys answering a question: those typed ahead (the question is not asked), else
        the caller's answer to what is pending and the question, asked in one go."""
        sequence, self._pending = self._pending + list(question), []
        stray, self._stray = self._stray, ""
        if self._typeahead:
            keys, self._typeahead = self._typeahead, ""
            return Answer(keys, False)
        since = self.clock()
        answer = None
        try:
            answer = await self.call.ask(self._sounds(sequence), max_keys, timeout, stray)
        finally:
            self._played(sequence, since, answer.cut_after if answer else None)
        if stray and answer.keys.startswith(stray):
            # the stray key came after the first sound: drop it, listen on if it was all
            keys = answer.keys[len(stray):]
            if keys or answer.timed_out:
                return Answer(keys, answer.timed_out, answer.cut_after)
            return await self.call.ask((), max_keys, timeout)
        return answer

    async def key(self, timeout: float) -> str | None:
        """One key, asked after what is pending is said (a key stops it), or None after
        ``timeout`` s: for a yes-or-nothing offer that is no menu."""
        answer = await self._keys((), 1, timeout)
        self._typeahead = answer.keys[1:] + self._typeahead
        return answer.keys[:1] or None

    async def listen_while(self, work: asyncio.Future, until: float, hold_after: float,
                           hold: Utterance | None) -> None:
        """Listen (keys become type-ahead) while ``work`` runs, up to ``until`` (a
        ``loop.time()``); after ``hold_after`` s say ``hold`` once (None: nothing), a key
        stopping it."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        held = hold is None
        while not work.done():
            now = loop.time()
            if now >= until:
                return
            if not held and now - started >= hold_after:
                held = True
                if not self._typeahead:
                    since = self.clock()
                    try:
                        self._keep(await self.call.play(self._sounds([hold]), True))
                    finally:
                        self._played([hold], since)
                continue
            wait = max(min(LISTEN_SLICE, until - now), 0.01)
            if not held:
                wait = max(min(wait, started + hold_after - now), 0.01)
            key = await self.call.wait_key(wait)
            self._keep(key)
            rest = wait - (loop.time() - now)
            if key is None and rest > 0:
                # answered before its time (an emulated peer without a clock): wait for
                # the work instead of asking again at once
                await asyncio.wait({work}, timeout=rest)

    async def gather(self, *question: Utterance, max_digits: int,
                     terminator: str = "#", restart: str = "*") -> Gathered:
        """Digits after a question: ends at ``max_digits``, at the terminator, or after a
        pause; the restart key throws away what was typed so far. A terminator typed
        right after an entry that was complete without it is dropped."""
        answer = await self._keys(question, max_digits, self.first_digit_timeout)
        digits = ""
        while True:
            for index, key in enumerate(answer.keys):
                if key == terminator:
                    self._typeahead = answer.keys[index + 1:] + self._typeahead
                    return Gathered(digits, "terminator")
                if key == restart:
                    digits = ""
                    continue
                digits += key
                if len(digits) >= max_digits:
                    rest = answer.keys[index + 1:]
                    if rest.startswith(terminator):
                        rest = rest[1:]
                    elif not rest:
                        self._stray = terminator
                    self._typeahead = rest + self._typeahead
                    return Gathered(digits, "complete")
            if answer.timed_out:
                return Gathered(digits, "timeout")
            answer = await self._keys((), max_digits - len(digits), self.inter_digit_timeout)

    async def menu(self, question: Sequence[Utterance], choices: str,
                   retry: Retry = Retry(), repeat: str = "") -> str | Ending:
        """One key among ``choices``; ``repeat`` asks again. Gives up with
        ``Ending.NO_INPUT`` or ``Ending.TOO_MANY_INVALID`` as ``retry`` says."""
        silent = invalid = 0
        while True:
            answer = await self._keys(question, 1, self.menu_timeout)
            key = answer.keys[:1] or None
            self._typeahead = answer.keys[1:] + self._typeahead
            if key is None:
                silent += 1
                if retry.together and silent + invalid >= retry.invalid:
                    return Ending.TOO_MANY_INVALID
                if silent >= retry.silent:
                    return Ending.NO_INPUT
                continue
            if not retry.together:
                silent = 0
            if key in choices or key == repeat:
                self.menu_keys.append(key)
                if key == repeat:
                    continue
                return key
            invalid += 1
            if (silent + invalid if retry.together else invalid) >= retry.invalid:
                return Ending.TOO_MANY_INVALID
            if retry.explain_invalid:
                await self.say(self.prompt(P.CHOICE_UNAVAILABLE), barge_in=True)
