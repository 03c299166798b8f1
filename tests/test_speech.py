"""ivr.speech against the catalog, the spec's literal examples, and num2words as an oracle."""
from __future__ import annotations

import random
from datetime import date

import pytest
from num2words import num2words

from ivr.speech import LIMIT, digits, money, number, spoken_date, words
from prompts import load_catalog

FRAGMENTS = load_catalog().fragments

ORACLE = [
    0, 1, 10, 11, 12, 19, 20, 21, 100, 101, 110, 111, 999, 1000, 1001, 1100, 1999,
    10000, 11000, 100000, 600000, 1150000, 12000000, 1000000000,
    35000, 150000, 2026, 1990, 42500, 2000000, 999999999999, 10**12, LIMIT - 1,
]
BIG = [
    10**6, 10**6 + 1, 25_300_000, 1_000_000_001, 7_012_345_678, 10**12 + 999,
    123_456_789_012_345, 900_000_000_000_000,
]


def convention_differs(n: int) -> bool:
    """A thousands group of one inside a bigger number: we say "seribu" (satu juta seribu),
    num2words says "satu ribu" (satu juta satu ribu). See the comment in number()."""
    return n >= 10**6 and (n // 1000) % 1000 == 1


@pytest.mark.parametrize("n", ORACLE)
def test_number_matches_num2words(n):
    assert not convention_differs(n)
    assert words(number(n)) == num2words(n, lang="id")


def test_number_matches_num2words_on_a_sweep():
    rng = random.Random(2026)
    sample = list(range(0, 200001, 7)) + BIG + [rng.randrange(LIMIT) for _ in range(2000)]
    for n in sample:
        if not convention_differs(n):
            assert words(number(n)) == num2words(n, lang="id"), n


@pytest.mark.parametrize("n", [1001000, 1_001_001_500, 12_001_999, 10**9 + 1000, 10**12 + 10**6 + 1000])
def test_excluded_numbers_differ_only_by_convention(n):
    # Keeps the exclusion honest: apart from "seribu" vs "satu ribu" num2words must agree.
    assert convention_differs(n)
    ours = words(number(n))
    assert ours != num2words(n, lang="id")
    assert ours.replace("seribu", "satu ribu") == num2words(n, lang="id")


@pytest.mark.parametrize("n, text", [
    (600000, "enam ratus ribu"),
    (1150000, "satu juta seratus lima puluh ribu"),
    (12000000, "dua belas juta"),
    (1000, "seribu"),
    (1100, "seribu seratus"),
    (1000000000, "satu miliar"),
    # Where we part from num2words on purpose:
    (1001000, "satu juta seribu"),
    (1_001_001_500, "satu miliar satu juta seribu lima ratus"),
])
def test_number_literal(n, text):
    assert words(number(n)) == text


def test_number_ids():
    assert number(0) == ("num-0",)
    assert number(1150000) == ("num-1", "num-million", "num-100", "num-50", "num-thousand")
    assert number(12000000) == ("num-12", "num-million")
    assert number(1100) == ("num-1000", "num-100")


def test_money():
    assert money(600000)[-1] == "rupiah"
    assert words(money(600000)) == "enam ratus ribu rupiah"
    assert words(money(1150000)) == "satu juta seratus lima puluh ribu rupiah"
    assert words(money(0)) == "nol rupiah"


@pytest.mark.parametrize("d, text", [
    (date(2026, 1, 1), "satu Januari dua ribu dua puluh enam"),
    (date(2026, 12, 31), "tiga puluh satu Desember dua ribu dua puluh enam"),
    (date(2026, 12, 10), "sepuluh Desember dua ribu dua puluh enam"),
    (date(1990, 8, 17), "tujuh belas Agustus seribu sembilan ratus sembilan puluh"),
    (date(2000, 2, 29), "dua puluh sembilan Februari dua ribu"),
])
def test_spoken_date(d, text):
    assert words(spoken_date(d)) == text


def test_digits():
    assert digits("0001234567890") == tuple(f"num-{c}" for c in "0001234567890")
    assert words(digits("0001234567890")) == (
        "nol nol nol satu dua tiga empat lima enam tujuh delapan sembilan nol")


@pytest.mark.parametrize("s", ["", "12a4", "12 34", "-1", "1.5", "²", "١٢٣"])
def test_digits_rejects(s):
    with pytest.raises(ValueError):
        digits(s)


def test_every_id_is_a_catalog_fragment():
    values = [*range(0, 200001, 7), *ORACLE, *BIG, 1001000, 10**15 - 1]
    ids = {i for n in values for i in number(n) + money(n)}
    ids |= {i for m in range(1, 13) for i in spoken_date(date(2026, m, 28))}
    ids |= set(digits("0123456789"))
    assert ids <= FRAGMENTS.keys(), ids - FRAGMENTS.keys()


@pytest.mark.parametrize("n", [-1, -1000, LIMIT, LIMIT * 10])
def test_out_of_range(n):
    with pytest.raises(ValueError):
        number(n)
    with pytest.raises(ValueError):
        money(n)


@pytest.mark.parametrize("n", [1.0, "12", True, None])
def test_not_an_int(n):
    with pytest.raises(TypeError):
        number(n)


def test_words_uses_the_given_catalog():
    from prompts import parse_catalog
    other = parse_catalog('[fragments]\nnum-1 = "one"\nnum-thousand = "thousand"\n')
    assert words(("num-1", "num-thousand"), other) == "one thousand"
    assert words(()) == ""
