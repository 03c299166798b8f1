"""Staffed hours: configured weekly hours in local time (WIB by default), closed on
Indonesian public holidays and cuti bersama (the ``holidays`` package's Indonesia calendar,
PUBLIC and GOVERNMENT categories), with extra closed or open dates from configuration.

An empty schedule means always staffed (like Care Center 165): no calendar applies.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Callable
from zoneinfo import ZoneInfo

import holidays

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PART = re.compile(r"^(?P<days>[a-z]{3}(?:-[a-z]{3})?(?:,[a-z]{3}(?:-[a-z]{3})?)*)\s+"
                   r"(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})$")
SEARCH_DAYS = 60           # how far ahead the next staffed period is looked for


def _days(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"unknown day in {spec!r}")
        a, b = DAYS.index(first), DAYS.index(last or first)
        out |= set(range(a, b + 1)) if a <= b else set(range(a, 7)) | set(range(0, b + 1))
    return out


def _clock(text: str) -> time:
    hours, minutes = (int(x) for x in text.split(":"))
    if hours == 24 and minutes == 0:
        return time.max
    return time(hours, minutes)


def parse_hours(spec: str) -> dict[int, list[tuple[time, time]]]:
    """``"mon-fri 08:00-20:00; sat 08:00-14:00"`` -> weekday -> [(start, end)]."""
    week: dict[int, list[tuple[time, time]]] = {}
    for part in filter(None, (p.strip().lower() for p in spec.split(";"))):
        match = _PART.match(part)
        if not match:
            raise ValueError(f"IVR_STAFFED_HOURS: cannot read {part!r} "
                             "(expected e.g. 'mon-sat 08:00-20:00')")
        start, end = _clock(match["start"]), _clock(match["end"])
        if not start < end:
            raise ValueError(f"IVR_STAFFED_HOURS: {part!r} ends before it starts")
        for day in _days(match["days"]):
            week.setdefault(day, []).append((start, end))
    for spans in week.values():
        spans.sort()
    return week


def parse_dates(spec: str) -> frozenset[date]:
    return frozenset(date.fromisoformat(d.strip()) for d in spec.split(",") if d.strip())


@lru_cache(maxsize=8)
def _calendar(year: int):
    return holidays.country_holidays("ID", years=year,
                                     categories=(holidays.PUBLIC, holidays.GOVERNMENT))


def indonesian_holiday(day: date) -> str | None:
    """The holiday's name (public holiday or cuti bersama), or None."""
    return _calendar(day.year).get(day)


@dataclass
class StaffedHours:
    hours: str = ""
    tz: str = "Asia/Jakarta"
    closed: frozenset[date] = frozenset()
    opened: frozenset[date] = frozenset()
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        self.week = parse_hours(self.hours)
        self.zone = ZoneInfo(self.tz)

    @classmethod
    def from_settings(cls, settings, clock: Callable[[], datetime] | None = None
                      ) -> "StaffedHours":
        hours = cls(settings.staffed_hours, settings.staffed_timezone,
                    parse_dates(settings.staffed_closed_dates),
                    parse_dates(settings.staffed_open_dates))
        if clock is not None:
            hours.clock = clock
        return hours

    @property
    def always(self) -> bool:
        return not self.week

    def local(self, at: datetime | None = None) -> datetime:
        return (at or self.clock()).astimezone(self.zone)

    def _working_day(self, day: date) -> bool:
        if day in self.opened:
            return True
        return day not in self.closed and indonesian_holiday(day) is None

    def _spans(self, day: date) -> list[tuple[datetime, datetime]]:
        if not self._working_day(day):
            return []
        out = []
        for start, end in self.week.get(day.weekday(), []):
            begin = datetime.combine(day, start, self.zone)
            finish = (datetime.combine(day + timedelta(days=1), time(0), self.zone)
                      if end == time.max else datetime.combine(day, end, self.zone))
            out.append((begin, finish))
        return out

    def is_open(self, at: datetime | None = None) -> bool:
        if self.always:
            return True
        now = self.local(at)
        return any(begin <= now < end for begin, end in self._spans(now.date()))

    def next_open(self, at: datetime | None = None) -> datetime | None:
        """When the next staffed period begins (now, when open); None when none is found
        within SEARCH_DAYS (a misconfiguration)."""
        now = self.local(at)
        if self.is_open(now):
            return now
        for offset in range(SEARCH_DAYS):
            for begin, _end in self._spans(now.date() + timedelta(days=offset)):
                if begin > now:
                    return begin
        return None
