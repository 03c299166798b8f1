"""What the caller keys in: card numbers, NIKs, birth dates; and the virtual account.

Facts from ``../shared/notes/domain.md``: a card number has 13 digits; a NIK has 16, with
the birth date at digits 7-12 as DDMMYY (40 added to the day for women); a virtual account
is ``88888`` and the last 11 digits of the family head's card number.
"""
from __future__ import annotations

from datetime import date
from enum import StrEnum

CARD_LENGTH = 13
NIK_LENGTH = 16
BIRTH_DATE_LENGTH = 8
VA_PREFIX = "88888"


class Kind(StrEnum):
    CARD = "card"
    NIK = "nik"


def _real_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def nik_date_possible(nik: str) -> bool:
    """Whether the NIK's DDMMYY part can be a birth date (either sex, either century)."""
    day, month, yy = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    if day > 40:
        day -= 40
    return any(_real_date(century + yy, month, day) for century in (1900, 2000))


def classify(digits: str, ended_by: str) -> Kind | None:
    """13 digits closed by ``#`` or a pause → card; 16 digits with a possible date → NIK."""
    if not digits.isdigit():
        return None
    if len(digits) == CARD_LENGTH and ended_by in ("terminator", "timeout"):
        return Kind.CARD
    if len(digits) == NIK_LENGTH and nik_date_possible(digits):
        return Kind.NIK
    return None


def parse_birth_date(digits: str, today: date) -> date | None:
    """``17081990`` → 1990-08-17; None unless a real date from 1900 up to today."""
    if len(digits) != BIRTH_DATE_LENGTH or not digits.isdigit():
        return None
    day, month, year = int(digits[:2]), int(digits[2:4]), int(digits[4:])
    if year < 1900 or not _real_date(year, month, day):
        return None
    born = date(year, month, day)
    return born if born <= today else None


def virtual_account(card_number: str) -> str:
    return VA_PREFIX + card_number[-11:]
