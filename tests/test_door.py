"""The FastAGI door under attack: peers that are not the allowed Asterisk, a flood of
connections past the cap, and accept errors when the process runs out of descriptors.
Every peer is a real socket on loopback (127.0.0.2 stands for another machine)."""
from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket

import pytest

from ivr.agi.listener import RateLimitedWarning, allowed, parse_allow_list
from ivr.config import Settings
from ivr.emulator import asterisk_headers, encode_headers, place_call

HEADERS = encode_headers(asterisk_headers("1700000000.7", caller="081234567890"))


def warnings(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_the_default_is_loopback_only():
    settings = Settings.from_env({})
    assert settings.agi_host == "127.0.0.1"
    allow = parse_allow_list(settings.agi_allow)
    assert allowed("127.0.0.1", allow) and allowed("::1", allow)
    assert not allowed("127.0.0.2", allow) and not allowed("10.0.0.5", allow)


def test_allow_list_parsing():
    allow = parse_allow_list(" 172.28.40.10/32, 10.1.0.0/16 ,fd00::/8")
    assert allowed("172.28.40.10", allow) and allowed("10.1.200.3", allow)
    assert allowed("::ffff:10.1.0.9", allow)         # IPv4 on a dual-stack socket
    assert allowed("fd00::1", allow) and not allowed("172.28.40.11", allow)
    assert not allowed("not-an-address", allow)
    for bad in ("", " , ", "10.0.0.0/33", "asterisk"):
        with pytest.raises(ValueError):
            parse_allow_list(bad)


async def test_a_peer_not_allowed_is_refused_at_accept_and_an_allowed_one_served(
        server_with, settings, caplog):
    server, app = await server_with(agi_allow="127.0.0.1/32")
    for _ in range(30):    # a hostile peer from another address, again and again
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
        writer.write(HEADERS)
        async with asyncio.timeout(3):
            assert await reader.read() == b""      # not one command: no session at all
        writer.close()
    assert server.listener.refused == 30
    assert len(warnings(caplog, "refused a FastAGI connection from 127.0.0.2")) == 1
    served = await place_call("127.0.0.1", server.port, "0")
    assert served.variables["IVR_OUTCOME"] == "transfer"
    app.records.flush()
    lines = open(settings.call_records).read().splitlines()
    assert [line for line in lines if "1700000000.7" in line] == []   # no record either


async def test_the_cap_holds_under_a_flood_and_calls_are_still_served(server_with, caplog):
    server, _app = await server_with(max_connections=20, header_timeout=0.5)
    flood = []
    for _ in range(60):      # connections that never say a word
        flood.append(await asyncio.open_connection("127.0.0.1", server.port))
    async with asyncio.timeout(30):
        calls = await asyncio.gather(*(place_call("127.0.0.1", server.port, "0")
                                       for _ in range(5)))
    assert [c.variables["IVR_OUTCOME"] for c in calls] == ["transfer"] * 5
    print(f"peak connections {server.peak_connections} (cap 20), "
          f"paused at the cap {server.listener.paused_at_cap} times")
    assert server.peak_connections <= 20
    assert server.listener.paused_at_cap >= 1
    assert len(warnings(caplog, "the cap (IVR_MAX_CONNECTIONS)")) == 1
    for _reader, writer in flood:
        writer.close()
    # recovered: once the flood is gone, a call gets in at once
    assert (await place_call("127.0.0.1", server.port, "0")).variables["IVR_OUTCOME"] == \
        "transfer"


async def test_accept_errors_pause_accepting_with_one_warning_and_the_server_recovers(
        server_with, caplog):
    server, _app = await server_with()
    loop = asyncio.get_running_loop()
    peers = [socket.socket() for _ in range(3)]
    for peer in peers:
        peer.setblocking(False)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no new descriptor
    try:
        for peer in peers:
            await loop.sock_connect(peer, ("127.0.0.1", server.port))
            await loop.sock_sendall(peer, HEADERS)
        await asyncio.sleep(1.0)
        assert server.listener.accept_errors >= 2
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        async with asyncio.timeout(5):
            for peer in peers:       # accepted once descriptors are free again
                assert (await loop.sock_recv(peer, 100)).startswith(b"ANSWER\n")
    finally:
        for peer in peers:
            peer.close()
    assert len(warnings(caplog, "cannot accept FastAGI connections: EMFILE")) == 1
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_rate_limited_warnings_fold_what_they_do_not_print(caplog):
    now = [0.0]
    warn = RateLimitedWarning(logging.getLogger("ivr.test"), every=10, clock=lambda: now[0])
    for _ in range(5):
        warn("peer %s refused", "10.0.0.9")
        now[0] += 1
    now[0] = 20
    warn("peer %s refused", "10.0.0.9")
    lines = [r.getMessage() for r in caplog.records if r.name == "ivr.test"]
    assert lines == ["peer 10.0.0.9 refused",
                     "peer 10.0.0.9 refused (and 4 more like it in the last 20 s)"]


def test_the_cap_stays_below_the_open_files_limit():
    from ivr.agi.listener import RESERVED_FILES, connection_cap
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, hard))
        assert connection_cap(10 ** 9, other_sockets=1064) == 8192 - RESERVED_FILES - 1064
        assert connection_cap(50, other_sockets=1064) == 50
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        # a small limit: room for one pooled socket per call at most
        assert connection_cap(10 ** 9, other_sockets=1064) == (1024 - RESERVED_FILES) // 2
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
