"""Finding 5: the membership service's circuit breaker. The state machine with a clock
the test controls, then the real client against a real HTTP service on loopback that
hangs (the outage of the finding) and recovers."""
from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from aiohttp import web

from ivr.membership.breaker import BreakerState, CircuitBreaker
from ivr.membership.client import MembershipClient
from ivr.membership.model import MembershipUnavailable

from ivr.membership.demo import PARTICIPANTS

SITI = next(p for p in PARTICIPANTS if p["card_number"] == "0001234567890")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_it_opens_after_failures_in_a_row_and_only_then():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, retry_seconds=30, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert breaker.allow()
    breaker.succeeded()               # a success in between: the count starts over
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.failed()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_half_open_lets_one_trial_through_and_its_answer_decides():
    clock = Clock()
    changes = []
    breaker = CircuitBreaker(failures=2, retry_seconds=30, clock=clock,
                             on_change=changes.append)
    for _ in range(2):
        breaker.allow()
        breaker.failed()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()             # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()         # only one at a time
    breaker.failed()                   # the trial failed: open for another 30 s
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 30
    assert breaker.allow()
    breaker.abandoned()                # the caller hung up: another may try
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN,
                       BreakerState.HALF_OPEN, BreakerState.CLOSED]


@pytest.fixture
async def flaky_service():
    """A membership service on loopback that hangs while ``state["down"]``, else answers
    with the demo participant."""
    state = {"down": True, "requests": 0}
    release = asyncio.Event()               # set at the end: hanging requests let go

    async def lookup(request):
        state["requests"] += 1
        if state["down"]:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 30)
        return web.json_response(SITI)

    app = web.Application()
    app.router.add_get("/v1/participants/{identifier}", lookup)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield state
    release.set()
    await runner.cleanup()


async def test_during_an_outage_callers_get_the_apology_at_once_and_recovery_closes_it(
        flaky_service):
    clock = Clock()
    breaker = CircuitBreaker(failures=3, retry_seconds=30, clock=clock)
    async with MembershipClient(flaky_service["url"], total_timeout=0.3,
                                breaker=breaker) as client:
        for i in range(3):                       # each waits out the time limit
            with pytest.raises(MembershipUnavailable):
                await client.lookup("0001234567890", f"r{i}")
        assert breaker.state is BreakerState.OPEN
        times = []
        for i in range(20):                      # the rest: at once, no request
            started = time.perf_counter()
            with pytest.raises(MembershipUnavailable):
                await client.lookup("0001234567890", f"o{i}")
            times.append(time.perf_counter() - started)
        assert flaky_service["requests"] == 3
        print(f"\nbreaker open: apology after at most {max(times) * 1000:.2f} ms "
              f"(the limit is 300 ms)")
        flaky_service["down"] = False
        clock.now += 30                          # half-open: one trial reaches the service
        assert (await client.lookup("0001234567890", "t")).card_number == "0001234567890"
        assert breaker.state is BreakerState.CLOSED and flaky_service["requests"] == 4
        await client.lookup("0001234567890", "after")
        assert flaky_service["requests"] == 5


async def test_a_service_too_slow_for_the_callers_limit_opens_the_breaker(flaky_service):
    """The caller's limit (the hotline's lookup deadline) is shorter than the client's own
    timeout: a lookup that runs out of it is the service's failure, counted by the breaker
    (once the hotline cancelled such lookups, and a hanging service never opened it)."""
    breaker = CircuitBreaker(failures=3, retry_seconds=30, clock=Clock())
    observed = []
    async with MembershipClient(flaky_service["url"], total_timeout=10,
                                breaker=breaker) as client:
        client.observe = lambda _seconds, failure: observed.append(failure)
        loop = asyncio.get_running_loop()
        for i in range(3):
            started = time.perf_counter()
            with pytest.raises(MembershipUnavailable):
                await client.lookup("0001234567890", f"r{i}", deadline=loop.time() + 0.2)
            assert time.perf_counter() - started < 1.5      # the deadline, not the 10 s
        assert breaker.state is BreakerState.OPEN and observed == ["timeout"] * 3
