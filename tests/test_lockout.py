"""The lockout stores on their own, SQLite and a real Redis alike: windows, thresholds,
one count per participant (card number and NIK), one shared count for callers without a
usable number, many calls at once, and nothing stored in clear."""
import asyncio

import pytest
import redis.asyncio as aioredis

from ivr.lockout import ANONYMOUS, LockoutStore, RedisLockoutStore, usable_caller

CARD, NIK = "0001234567890", "3174015708900003"
SITI = (CARD, NIK)
CALLER = "081298765432"


async def flushed(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request, tmp_path):
    """``await make_store(clock, salt=...)``: a fresh store of the parametrized kind."""
    opened = []

    async def make(clock, salt="s", path=None, **rules):
        rules = {"identifier_limit": 5, "caller_limit": 10, "window_hours": 24,
                 "anonymous_limit": 50, "anonymous_window_hours": 1, **rules}
        if request.param == "redis":
            url = request.getfixturevalue("redis_url")
            if not opened:
                await flushed(url)
            s = RedisLockoutStore(url, salt=salt, clock=clock, **rules)
        else:
            s = LockoutStore(path or str(tmp_path / "state.sqlite3"), salt=salt, clock=clock,
                             **rules)
        await s.open()
        opened.append(s)
        return s
    make.kind = request.param
    yield make
    for s in opened:    # also when a test failed half-way (aiosqlite's thread would stay)
        await s.close()


async def test_failures_older_than_the_window_do_not_count(make_store):
    now = [1_000_000.0]
    s = await make_store(lambda: now[0])
    for _ in range(5):
        await s.record_failure(CARD, CALLER)
    assert await s.is_locked(CARD, "0811111111")
    now[0] += 24 * 3600 + 1
    assert not await s.is_locked(CARD, "0811111111")
    await s.close()


async def test_card_number_and_nik_share_one_count_when_the_participant_was_found(make_store):
    s = await make_store(lambda: 10.0)
    for _ in range(3):
        await s.record_failure(CARD, "0811111111", SITI)
    for _ in range(2):
        await s.record_failure(NIK, "0822222222", SITI)
    assert await s.failures(CARD) == await s.failures(NIK) == 5
    assert await s.is_locked(CARD, "0833333333") and await s.is_locked(NIK, "0833333333")
    await s.close()


async def test_a_number_not_found_counts_for_itself_only(make_store):
    s = await make_store(lambda: 10.0)
    for _ in range(5):
        await s.record_failure("0001999999999", "0811111111")
    assert await s.is_locked("0001999999999", "0833333333")
    assert not await s.is_locked(CARD, "0833333333") and await s.failures(CARD) == 0
    await s.close()


async def test_callers_without_a_usable_number_share_one_count_with_its_own_rules(make_store):
    now = [5_000.0]
    s = await make_store(lambda: now[0], anonymous_limit=50, anonymous_window_hours=1)
    withheld = ["anonymous", "unknown", "", "Private", "restricted", "Anonymous", "x", "12"]
    for i in range(49):
        await s.record_failure(f"0001000000{i:03d}", withheld[i % len(withheld)])
    assert not await s.is_locked("0001777777777", "anonymous")
    await s.record_failure("0001000000999", "unknown")
    for caller in withheld:     # every caller without a number, whatever it sends
        assert await s.is_locked("0001777777777", caller), caller
    assert not await s.is_locked("0001777777777", CALLER)   # a caller with a number is not
    now[0] += 3600 + 1          # the anonymous window is its own: an hour
    assert not await s.is_locked("0001777777777", "anonymous")
    await s.close()


async def test_a_caller_number_counts_in_every_form(make_store):
    s = await make_store(lambda: 10.0)
    for i, form in enumerate(["+6281298765432", "081298765432", "0812-9876-5432",
                              "0812 9876 5432", "+6281298765432"] * 2):
        await s.record_failure(f"0001000000{i:03d}", form)
    assert await s.is_locked("0001777777777", "081298765432")
    assert usable_caller("+6281298765432") == usable_caller("081298765432") == CALLER
    assert usable_caller("anonymous") is None and usable_caller("1234") is None
    await s.close()


async def test_many_calls_at_once_share_one_connection(make_store):
    s = await make_store(lambda: 5.0)
    cards = [f"0001200000{i:03d}" for i in range(300)]
    await asyncio.gather(*(op for card in cards for op in (
        s.record_failure(card, f"0812{card[-4:]}00"), s.is_locked(card, "0812000000"),
        s.record_failure(card, f"0813{card[-4:]}00"))))
    assert not any(await asyncio.gather(*(s.is_locked(c, f"0814{c[-4:]}00") for c in cards)))
    await asyncio.gather(*(s.record_failure(cards[0], "0815000000") for _ in range(3)))
    assert await s.is_locked(cards[0], "0816000000")
    await s.close()


async def test_a_generated_salt_is_kept_and_shared(make_store):
    first = await make_store(lambda: 1.0, salt="")
    for _ in range(5):
        await first.record_failure(CARD, CALLER)
    ref = first.pseudonym(CARD)
    await first.close()
    second = await make_store(lambda: 2.0, salt="")   # a restart, or another server
    assert await second.is_locked(CARD, "0811111111")
    assert second.pseudonym(CARD) == ref
    await second.close()


async def test_only_salted_hashes_are_stored(make_store, tmp_path):
    s = await make_store(lambda: 1.0, salt="a-salt-of-the-test")
    await s.record_failure(CARD, "+6281298765432", SITI)
    await s.record_failure(NIK, "anonymous", SITI)
    if make_store.kind == "redis":
        client = s._redis
        stored = []
        for key in await client.keys("*"):
            stored.append(key.decode())
            if await client.type(key) == b"zset":
                stored += [m.decode() for m in await client.zrange(key, 0, -1)]
    else:
        rows = await s._db.execute_fetchall("SELECT subject, at FROM failures")
        stored = [str(v) for row in rows for v in row]
    text = " ".join(stored)
    assert stored and ANONYMOUS in text     # the shared subject is a name, not a number
    for secret in (CARD, NIK, "81298765432", "a-salt-of-the-test"):
        assert secret not in text
    await s.close()
