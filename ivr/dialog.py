"""Dialog primitives over a ``Call``: say, gather digits, menus with their retry policy.

Two rules live here and nowhere else:
- **type-ahead**: a key that interrupts a prompt is kept and becomes the first key of the
  next answer; a question whose answer has already begun is not asked aloud;
- **retries**: how many silent rounds and wrong keys a menu takes before it gives up.
Every prompt that starts playing is added to the transcript, as its (masked) text.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Sequence

from prompts import Catalog

from . import speech
from .call import Call
from .names import P
from .privacy import mask_number


@dataclass(frozen=True, slots=True)
class Utterance:
    """Sounds played in a row, and the text the transcript shows for them."""
    prompt_ids: tuple[str, ...]
    text: str


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
                 first_digit_timeout: float, inter_digit_timeout: float) -> None:
        self.call = call
        self.catalog = catalog
        self.menu_timeout = menu_timeout
        self.first_digit_timeout = first_digit_timeout
        self.inter_digit_timeout = inter_digit_timeout
        self.transcript: list[str] = []
        self.menu_keys: list[str] = []
        self.prompt_ms = 0      # estimated time spent playing, for "time to status"
        self.durations: dict[str, int] = {}
        self._typeahead = ""

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

    async def say(self, *utterances: Utterance, barge_in: bool = False) -> None:
        """Play in order. With ``barge_in`` a key stops the rest and is kept as type-ahead;
        if the caller has already typed ahead, nothing more is played."""
        for utterance in utterances:
            if barge_in and self._typeahead:
                return
            self.transcript.append(utterance.text)
            self.prompt_ms += sum(self.durations.get(p, 0) for p in utterance.prompt_ids)
            key = await self.call.play(
                [self.catalog.sound_name(p) for p in utterance.prompt_ids], barge_in)
            if key is not None:
                self._typeahead += key

    async def key(self, timeout: float) -> str | None:
        if self._typeahead:
            key, self._typeahead = self._typeahead[0], self._typeahead[1:]
            return key
        return await self.call.wait_key(timeout)

    async def gather(self, *question: Utterance, max_digits: int,
                     terminator: str = "#", restart: str = "*") -> Gathered:
        """Digits after a question: ends at ``max_digits``, at the terminator, or after a
        pause; the restart key throws away what was typed so far."""
        await self.say(*question, barge_in=True)
        digits = ""
        while True:
            timeout = self.inter_digit_timeout if digits else self.first_digit_timeout
            key = await self.key(timeout)
            if key is None:
                return Gathered(digits, "timeout")
            if key == terminator:
                return Gathered(digits, "terminator")
            if key == restart:
                digits = ""
                continue
            digits += key
            if len(digits) >= max_digits:
                return Gathered(digits, "complete")

    async def menu(self, question: Sequence[Utterance], choices: str,
                   retry: Retry = Retry(), repeat: str = "") -> str | Ending:
        """One key among ``choices``; ``repeat`` asks again. Gives up with
        ``Ending.NO_INPUT`` or ``Ending.TOO_MANY_INVALID`` as ``retry`` says."""
        silent = invalid = 0
        while True:
            await self.say(*question, barge_in=True)
            key = await self.key(self.menu_timeout)
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

