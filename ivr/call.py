"""The small call interface the dialog is written against.

The FastAGI transport (``ivr.agi.channel.AgiCall``) implements it over a socket; tests
implement it with a scripted caller. Expected caller behaviour comes back as values (a key,
or None for no key); a caller who hangs up raises ``CallerHungUp``.
"""
from __future__ import annotations

from typing import Protocol, Sequence


class CallerHungUp(Exception):
    """The caller is gone; only channel variables can still be set."""


class Call(Protocol):
    async def play(self, sounds: Sequence[str], barge_in: bool) -> str | None:
        """Play the sounds in order. With ``barge_in`` a key stops playback and is returned;
        without it keys are ignored. A missing sound is skipped, never fatal."""

    async def wait_key(self, timeout: float) -> str | None:
        """The next key the caller presses, or None after ``timeout`` seconds."""

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable; works after the caller hung up."""
