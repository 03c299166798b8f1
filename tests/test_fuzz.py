"""Peer garbage: the codec under ``hypothesis`` (random bytes, plausible header blocks,
malformed replies) raises nothing but the protocol's own error; a server fed fuzzed
sessions logs warnings with a reason, never an error or a traceback."""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from ivr.agi.codec import HANGUP, ProtocolError, Reply, ReplyReader, parse_header_line
from ivr.agi.session import LINE_LIMIT, LineBuffer
from ivr.app import running_server
from ivr.emulator import asterisk_headers, encode_headers

FUZZ = hypothesis_settings(max_examples=300, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow])

# Pieces of what Asterisk says, to put together wrongly.
CODES = st.sampled_from(["200", "510", "511", "520", "100", "000", "999", "20", "2000"])
RESULTS = st.one_of(st.integers(min_value=-10 ** 30, max_value=10 ** 30).map(str),
                    st.text(max_size=12), st.sampled_from(["", "-1", "49", "٣", "1e9", "0x31"]))
REPLY_LINES = st.one_of(
    st.builds(lambda c, sep, r, tail: f"{c}{sep}result={r}{tail}", CODES,
              st.sampled_from([" ", "-", "", "  "]), RESULTS,
              st.sampled_from(["", " endpos=12", " endpos=-99999999999999999999",
                               " (timeout)", " (", ")", " endpos=", " (a (b) c"])),
    st.sampled_from([HANGUP, "520 End of proper usage.", "520-Invalid", "", "\r", "\x00"]),
    st.text(max_size=40))


def settle(reply: Reply) -> None:
    """Everything a caller of the codec may ask a reply."""
    _ = (reply.ok, reply.number, reply.code, reply.result, reply.data, reply.endpos)
    try:
        _ = reply.key
    except ProtocolError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=3 * LINE_LIMIT), max_size=6))
def test_random_bytes_become_lines_or_a_protocol_error(chunks):
    buffer = LineBuffer()
    try:
        for chunk in chunks:
            for line in buffer.feed(chunk):
                assert len(line.encode("utf-8", "surrogatepass")) <= 3 * LINE_LIMIT
                assert "\n" not in line
    except ProtocolError:
        pass


@FUZZ
@given(st.lists(REPLY_LINES, max_size=20))
def test_malformed_replies_become_replies_or_a_protocol_error(lines):
    reader = ReplyReader()
    for line in lines:
        try:
            event = reader.feed(line)
        except ProtocolError:
            return
        if isinstance(event, Reply):
            settle(event)


HEADER_NAMES = st.one_of(st.sampled_from(list(asterisk_headers("1.1", caller="1"))),
                         st.text(max_size=20))


@FUZZ
@given(st.lists(st.tuples(HEADER_NAMES, st.text(max_size=30),
                          st.sampled_from([": ", ":", " : ", "", ":: "])), max_size=30))
def test_plausible_header_blocks_parse_or_raise_the_protocol_error(items):
    for name, value, sep in items:
        try:
            parsed = parse_header_line(f"{name}{sep}{value}")
        except ProtocolError:
            continue
        assert parsed is None or parsed[0].startswith("agi_")


@FUZZ
@given(st.binary(max_size=200))
def test_header_bytes_through_the_line_buffer(data):
    try:
        for line in LineBuffer().feed(data + b"\n"):
            parse_header_line(line)
    except ProtocolError:
        pass


def test_a_long_line_in_one_read_is_refused():
    with pytest.raises(ProtocolError):
        LineBuffer().feed(b"200 result=" + b"1" * LINE_LIMIT + b"\n")
    assert LineBuffer().feed(b"200 result=1\n" * 2000)[-1] == "200 result=1"


def test_a_result_that_is_no_key_is_the_peers_fault():
    assert Reply(200, "49").key == "1" and Reply(200, "0").key is None
    for result in ("99999999999", "1114112", "65536", "50000", "13"):
        with pytest.raises(ProtocolError):
            _ = Reply(200, result).key


# -- whole sessions against the server

def fuzzed_reply(rng: random.Random) -> str:
    good = ["200 result=0", "200 result=49", "200 result=-1 endpos=0", "200 result=1",
            "511 Command Not Permitted on a dead channel or intercept routine", HANGUP]
    bad = ["200 result=99999999999", "200 result=1114112", "200 result=abc", "200 result=",
           "200 result=-99999999999999999999 endpos=7", "510 Invalid or unknown command",
           "520-Invalid command syntax.  Proper usage follows:", "garbage", "",
           "x" * (LINE_LIMIT + 10), "200 result=49 (" + "(" * 50, "\x00\xff", "HANGUP HANGUP"]
    pick = rng.choice(good if rng.random() < 0.7 else bad)
    return pick + "\n"


async def fuzzed_session(port: int, rng: random.Random) -> None:
    headers = asterisk_headers(f"1800000000.{rng.randrange(10 ** 6)}",
                               caller=rng.choice(["081234567890", "", "anonymous", "x" * 300]))
    if rng.random() < 0.2:
        headers[rng.choice(list(headers))] = rng.choice(["", "\x00", "z" * 1000, "99999"])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        writer.write(encode_headers(headers))
        async with asyncio.timeout(2):
            while await reader.readline():
                writer.write(fuzzed_reply(rng).encode("utf-8", "surrogateescape"))
                if rng.random() < 0.01:
                    break
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


async def test_fuzzed_sessions_log_no_error_and_no_traceback(settings, caplog):
    rng = random.Random(20261202)
    sessions = 600
    async with running_server(replace(settings, reply_timeout=0.3, menu_timeout=0.2,
                                      first_digit_timeout=0.2, inter_digit_timeout=0.1)
                              ) as (server, app):
        for start in range(0, sessions, 200):
            await asyncio.gather(*(fuzzed_session(server.port, rng) for _ in range(200)))
        assert app.records.flush()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    warned = [r for r in caplog.records if "broke the protocol" in r.getMessage()]
    print(f"{sessions} fuzzed sessions: {len(errors)} errors, {len(warned)} protocol warnings")
    assert [r.getMessage() for r in errors] == []
    assert warned   # the garbage was seen, and said so with a reason
    assert all(r.getMessage().split("protocol: ", 1)[1] for r in warned)


async def test_a_header_timeout_is_logged_with_its_reason(settings, caplog):
    async with running_server(replace(settings, header_timeout=0.2)) as (server, _app):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\n")
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()
    (line,) = [r.getMessage() for r in caplog.records if "dropped a FastAGI peer" in
               r.getMessage()]
    assert line.endswith("before its header block ended: no complete header block "
                         "within 0.2 s")
