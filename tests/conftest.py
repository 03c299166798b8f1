"""Shared fixtures: the real reference membership service in its own process, a hotline
server on an ephemeral port, and one folder where every log line and call record written
during the suite ends up (``test_zz_privacy`` reads them all)."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
from dataclasses import replace
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from ivr.config import Settings
from ivr.lockout import LockoutStore
from ivr.privacy import configure_logging

# Everything the suite writes that could hold personal data lands here.
EVIDENCE = Path(tempfile.mkdtemp(prefix="ivr-test-evidence-"))
os.environ["IVR_TEST_EVIDENCE"] = str(EVIDENCE)
_log_stream = open(EVIDENCE / "suite.log", "a", encoding="utf-8")
configure_logging("DEBUG", stream=_log_stream)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(predicate, what: str, seconds: float = 20.0, every: float = 0.05):
    """Wait until ``predicate()`` (a function, or one returning an awaitable) gives
    something true, and return it; fail the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = predicate()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(every)


@pytest.fixture
async def lockout():
    """The lockout counts in memory, with the flow tests' limits."""
    store = LockoutStore(":memory:", identifier_limit=5, caller_limit=10, window_hours=24,
                         salt="test-salt")
    await store.open()
    yield store
    await store.close()


def wait_http(url: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def reference_service(token: str = ""):
    """``ivr membership`` as a separate process on loopback; yields its base URL."""
    port = free_port()
    log = open(EVIDENCE / f"membership-{port}.log", "wb")
    command = [sys.executable, "-m", "ivr.cli", "membership", "--host", "127.0.0.1",
               "--port", str(port), "--db", str(EVIDENCE / f"membership-{port}.sqlite3")]
    if token:
        command += ["--token", token]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture(scope="session")
def membership_url():
    with reference_service() as url:
        yield url


@pytest.fixture
def settings(membership_url, tmp_path) -> Settings:
    return Settings.from_env({}, agi_host="127.0.0.1", agi_port=0,
                             membership_url=membership_url,
                             call_records=str(EVIDENCE / f"calls-{tmp_path.name}.jsonl"),
                             state_db=str(tmp_path / "state.sqlite3"),
                             store_db=str(tmp_path / "store.sqlite3"),
                             sounds_dir=str(tmp_path / "no-sounds"),
                             lockout_salt="test-salt", hold_prompt_after=0.5)


@pytest.fixture
async def server_with(settings):
    """Starts hotline servers with settings changed as asked; all are stopped after the
    test. Yields ``start(**overrides) -> (server, app)``."""
    from ivr.app import running_server
    started = []

    async def start(**overrides):
        context = running_server(replace(settings, **overrides))
        started.append(context)
        return await context.__aenter__()
    yield start
    for context in reversed(started):
        await context.__aexit__(None, None, None)


@pytest.fixture
async def hotline(settings):
    """A running hotline server; yields (server, app)."""
    from ivr.app import running_server
    async with running_server(settings) as running:
        yield running


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server for the suite (``tests/redis_server.py``)."""
    from .redis_server import redis_server
    with redis_server() as url:
        yield url
