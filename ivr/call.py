"""The small call interface the dialog is written against.

The FastAGI transport (``ivr.agi.channel.AgiCall``) implements it over a socket; tests
implement it with a scripted caller. Expected caller behaviour comes back as values (keys,
or None for no key); a caller who hangs up raises ``CallerHungUp``.

Asterisk throws away a key that arrives while no AGI command runs, so a question is asked
and its answer collected by ``ask`` in as few commands as possible, all of them listening.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


class CallerHungUp(Exception):
    """The caller is gone; only channel variables can still be set."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The keys typed in answer to one ``ask``, in order; ``#`` is among them when it ended
    the entry. ``timed_out``: the caller paused longer than the timeout. ``cut_after``:
    seconds into a list of sounds when the first key stopped it, where that is known."""
    keys: str
    timed_out: bool
    cut_after: float | None = None


class Call(Protocol):
    async def play(self, sounds: Sequence[str], barge_in: bool) -> str | None:
        """Play the sounds in order. With ``barge_in`` a key stops playback and is returned;
        without it keys are ignored. A missing sound is skipped, never fatal."""

    async def ask(self, sounds: Sequence[str], max_keys: int, timeout: float,
                  ignore_first: str = "") -> Answer:
        """Play the sounds in order while listening: a key stops them and begins the
        answer, which ends after ``max_keys`` keys, at ``#``, or after ``timeout`` seconds
        without a key. Keys in ``ignore_first`` neither stop nor count while the first
        sound plays (a stray ``#`` after an entry that was complete without it). With no
        sounds, it only listens. A missing sound is skipped, never fatal."""

    async def wait_key(self, timeout: float) -> str | None:
        """The next key the caller presses, or None after ``timeout`` seconds."""

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable; works after the caller hung up."""
