"""The expected wait of a caller at a given position.

With ``k`` agents taking calls (logged in and not paused) and a mean handle time ``H``
(how long recent answered calls lasted with their agent), the queue serves about ``k / H``
callers a second, so the caller at position ``p`` waits about ``p · H / k``: for
exponentially distributed handle times this is exactly the mean time until ``p`` agents
have become free. ``H`` is the mean talk time of the calls answered within the last
``IVR_WAIT_HISTORY_MINUTES`` (at least ``MIN_SAMPLES`` of them), else the configured
``IVR_WAIT_HANDLE_SECONDS``. The recent callers' waits are what the estimate is checked
against (bench: its error over a replayed day). No agent taking calls: no figure (None), since no honest number exists.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MIN_SAMPLES = 3


@dataclass(frozen=True)
class QueueStats:
    answered: int = 0                 # calls answered in the window
    mean_talk_s: float | None = None  # their mean time with an agent
    mean_wait_s: float | None = None  # their mean wait in the queue


def expected_wait(position: int, agents: int, stats: QueueStats,
                  default_handle_s: float) -> float | None:
    """Seconds, or None when no agent is taking calls."""
    if agents <= 0 or position <= 0:
        return None
    handle = default_handle_s
    if stats.answered >= MIN_SAMPLES and stats.mean_talk_s:
        handle = stats.mean_talk_s
    return position * handle / agents


def minutes(seconds: float) -> int:
    """Whole minutes said to the caller: rounded up (a promise kept rather than broken)."""
    return max(1, math.ceil(seconds / 60))
