"""Values as sequences of catalog fragment ids (``[fragments]`` in ``prompts/catalog.toml``).

The phone plays the fragments' pre-rendered audio back to back, so every function here
returns a tuple of ids; ``words`` gives the text the caller hears (for transcripts and tests).
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from prompts import Catalog, load_catalog

LIMIT = 10**15  # numbers up to "sembilan ratus ... triliun ..."
_SCALES = ((10**12, "num-trillion"), (10**9, "num-billion"), (10**6, "num-million"))
_DIGITS = "0123456789"


def _below_1000(n: int) -> tuple[str, ...]:
    """1-999 (0 gives nothing: it is only ever said for the number zero itself)."""
    hundreds, rest = divmod(n, 100)
    ids = (f"num-{hundreds}00",) if hundreds else ()
    if rest >= 20:
        tens, units = divmod(rest, 10)
        return ids + (f"num-{tens}0",) + ((f"num-{units}",) if units else ())
    return ids + ((f"num-{rest}",) if rest else ())


def number(n: int) -> tuple[str, ...]:
    """A whole number 0 <= n < 10**15, e.g. 1150000 -> satu juta seratus lima puluh ribu."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"number() needs an int, not {type(n).__name__}")
    if not 0 <= n < LIMIT:
        raise ValueError(f"cannot speak {n}: outside 0..{LIMIT - 1}")
    if n == 0:
        return ("num-0",)
    ids: tuple[str, ...] = ()
    for scale, word in _SCALES:
        group, n = divmod(n, scale)
        if group:
            ids += _below_1000(group) + (word,)  # one is "satu juta", never "sejuta"
    thousands, n = divmod(n, 1000)
    # A thousands group of one is "seribu" wherever it stands, so 1,001,000 is "satu juta
    # seribu": that is what Indonesians say and write. num2words says "satu juta satu ribu"
    # there (tests/test_speech.py leaves those numbers out of its comparison).
    if thousands == 1:
        ids += ("num-1000",)
    elif thousands:
        ids += _below_1000(thousands) + ("num-thousand",)
    return ids + _below_1000(n)


def money(rupiah: int) -> tuple[str, ...]:
    """An amount in rupiah: 600000 -> enam ratus ribu rupiah."""
    return number(rupiah) + ("rupiah",)


def spoken_date(d: date) -> tuple[str, ...]:
    """Day, month name, year: 2026-12-10 -> sepuluh Desember dua ribu dua puluh enam."""
    return number(d.day) + (f"month-{d.month}",) + number(d.year)


def digits(s: str) -> tuple[str, ...]:
    """Digit by digit (card numbers, NIKs, virtual accounts): "007" -> nol nol tujuh."""
    # Only ASCII 0-9: str.isdigit() would also pass "²" or Arabic-Indic digits.
    if not s or any(c not in _DIGITS for c in s):
        raise ValueError("digits() needs a non-empty string of the digits 0-9")
    return tuple(f"num-{c}" for c in s)


def words(fragment_ids: Iterable[str], catalog: Catalog | None = None) -> str:
    """The fragments' texts joined with single spaces (the shipped catalog by default)."""
    fragments = (catalog or load_catalog()).fragments
    return " ".join(fragments[f] for f in fragment_ids)
