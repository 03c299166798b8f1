"""Place in line: Asterisk's queue orders callers by ``QUEUE_PRIO`` (higher first; equal
priorities in order of entry). The waiting loop leaves and re-enters the queue at every
announcement, and a callback's placeholder enters it long after its caller first joined;
both keep their place because their priority is derived from the time the caller *first*
joined: earlier join, higher priority. Deciseconds since ``BASE`` fit Asterisk's int
priority until 2039.
"""
from __future__ import annotations

from datetime import datetime, timezone

BASE = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
TOP = 2_000_000_000


def queue_priority(joined_epoch: float) -> int:
    return TOP - round((joined_epoch - BASE) * 10)
