"""The lockout store on its own: windows, thresholds, and many calls at once on one
connection (interleaved cursors used to fail there with sqlite3.InterfaceError)."""
import asyncio

from ivr.lockout import LockoutStore


async def store(clock, path=":memory:", salt="s"):
    s = LockoutStore(path, identifier_limit=5, caller_limit=10, window_hours=24, salt=salt,
                     clock=clock)
    await s.open()
    return s


async def test_failures_older_than_the_window_do_not_count():
    now = [1_000_000.0]
    s = await store(lambda: now[0])
    for _ in range(5):
        await s.record_failure("0001234567890", "unknown")
    assert await s.is_locked("0001234567890", "unknown")
    now[0] += 24 * 3600 + 1
    assert not await s.is_locked("0001234567890", "unknown")
    await s.close()


async def test_anonymous_callers_are_never_counted():
    s = await store(lambda: 0.0)
    for i in range(20):
        await s.record_failure(f"00010000000{i:02d}", "anonymous")
    assert not await s.is_locked("0001999999999", "anonymous")
    await s.close()


async def test_many_calls_at_once_share_one_connection():
    s = await store(lambda: 5.0)
    cards = [f"0001200000{i:03d}" for i in range(300)]
    await asyncio.gather(*(op for card in cards for op in (
        s.record_failure(card, f"0812{card[-4:]}"), s.is_locked(card, "unknown"),
        s.record_failure(card, "unknown"))))
    assert not any(await asyncio.gather(*(s.is_locked(c, "unknown") for c in cards)))
    await asyncio.gather(*(s.record_failure(cards[0], "unknown") for _ in range(3)))
    assert await s.is_locked(cards[0], "unknown")
    await s.close()


async def test_a_generated_salt_is_kept_across_restarts(tmp_path):
    path = str(tmp_path / "state.sqlite3")
    first = await store(lambda: 1.0, path=path, salt="")
    for _ in range(5):
        await first.record_failure("0001234567890", "unknown")
    await first.close()
    second = await store(lambda: 2.0, path=path, salt="")
    assert await second.is_locked("0001234567890", "unknown")
    await second.close()
