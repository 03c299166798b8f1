"""One test per FastAGI hazard (../shared/notes/fastagi.md), each against the guard that
handles it. Peers here are raw sockets that misbehave on purpose."""
from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Callable

import pytest

from ivr.agi.codec import ProtocolError
from ivr.agi.session import AgiSession, SessionClosed
from ivr.emulator import asterisk_headers, encode_headers, place_call

HEADERS = encode_headers(asterisk_headers("1700000000.9", caller="081234567890"))


async def peer(port: int, respond: Callable[[str], str | None], headers: bytes = HEADERS,
               seconds: float = 10.0) -> list[str]:
    """A raw Asterisk stand-in: ``respond(command)`` gives the raw reply text (None: say
    nothing). Returns the commands received until the server closed the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(headers)
    commands = []
    async with asyncio.timeout(seconds):
        while line := await reader.readline():
            commands.append(line.decode().strip())
            reply = respond(commands[-1])
            if reply is not None:
                writer.write(reply.encode())
    writer.close()
    return commands


def answers(**by_verb: str) -> Callable[[str], str | None]:
    """Reply by command prefix (``STREAM_FILE="200 result=0\\n"``); anything else: 200 result=1."""
    def respond(command: str) -> str | None:
        for verb, reply in by_verb.items():
            if command.startswith(verb.replace("_", " ")):
                return reply
        return "200 result=1\n"
    return respond


def last_record(settings) -> dict:
    return json.loads(Path(settings.call_records).read_text().splitlines()[-1])


async def closed_by_server(port: int, payload: bytes, seconds: float) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    try:
        async with asyncio.timeout(seconds):
            return await reader.read() == b""
    except TimeoutError:
        return False
    finally:
        writer.close()


# -- the header block

async def test_peer_that_closes_during_the_header_block_is_dropped_at_once(server_with):
    server, _ = await server_with(header_timeout=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network: yes\nagi_network_script: hot")
    writer.write_eof()
    async with asyncio.timeout(3):  # far below the 30 s header limit: EOF ends it
        assert await reader.read() == b""
        while server.active_calls:
            await asyncio.sleep(0.01)
    assert server.rejected == 1
    writer.close()


async def test_silent_peer_is_dropped_at_the_header_time_limit(server_with):
    server, _ = await server_with(header_timeout=0.3)
    assert await closed_by_server(server.port, b"agi_network: yes\n", seconds=3)


async def test_endless_header_block_is_dropped_at_the_size_limit(server_with):
    server, _ = await server_with(header_timeout=30, header_max_bytes=4096)
    assert await closed_by_server(server.port, b"agi_x: y\n" * 1000, seconds=3)


async def test_line_without_end_is_dropped(server_with):
    server, _ = await server_with(header_timeout=30, header_max_bytes=10 ** 6)
    assert await closed_by_server(server.port, b"agi_x: " + b"y" * 100_000, seconds=3)


async def test_unknown_route_is_dropped_and_others_still_served(server_with):
    server, _ = await server_with()
    other = encode_headers(asterisk_headers("1.2", caller="1", script="other"))
    assert await closed_by_server(server.port, other, seconds=3)
    assert (await place_call("127.0.0.1", server.port, "0")).variables["IVR_OUTCOME"] == \
        "transfer"


# -- replies

async def test_hangup_before_the_reply_to_a_playback_ends_the_call_as_abandoned(
        server_with, settings):
    server, app = await server_with()
    commands = await peer(server.port, answers(
        EXEC="HANGUP\n200 result=-1\n",
        SET_VARIABLE="200 result=1\n", ANSWER="200 result=0\n"))
    assert [c for c in commands if not c.startswith("SET VARIABLE")] == [
        "ANSWER", "EXEC Read IVR_KEY,bpjs/greeting&bpjs/main-menu,1,t(),1,5"]
    assert 'SET VARIABLE __IVR_OUTCOME abandoned' in commands
    assert app.records.flush() and last_record(settings)["outcome"] == "abandoned"


async def test_hangup_before_the_reply_and_again_keeps_the_session_in_step(server_with):
    server, _ = await server_with()
    seen = []

    def respond(command):
        seen.append(command)
        if command.startswith("EXEC Read"):
            return "200 result=-1\n"
        if command.startswith("GET FULL VARIABLE"):
            return "HANGUP\n200 result=1 (HANGUP:)\n"
        if command.startswith("SET VARIABLE __IVR_OUTCOME"):
            return "HANGUP\n200 result=1\n"   # the second HANGUP
        return "200 result=0\n" if command == "ANSWER" else "200 result=1\n"
    commands = await peer(server.port, respond)
    variables = [c.split()[2] for c in commands if c.startswith("SET VARIABLE")]
    # the call id first (the dialplan's sign that this server took the call), then the end
    assert variables == ["__IVR_CALL_ID", "__IVR_OUTCOME", "__IVR_TRANSFER_REASON",
                         "__IVR_VERIFIED", "__IVR_CARD", "__IVR_MEMBER_STATUS"]  # the id once


async def test_dead_channel_511_is_a_hang_up(server_with, settings):
    server, app = await server_with()
    await peer(server.port, answers(
        ANSWER="200 result=0\n", EXEC="200 result=0\n",
        GET_FULL_VARIABLE="200 result=1 (OK:1)\n",     # "1": status, then the card number
        GET_DATA="511 Command Not Permitted on a dead channel or intercept routine\n"))
    assert app.records.flush() and last_record(settings)["outcome"] == "abandoned"


async def test_playback_failure_on_a_live_channel_is_a_missing_file(server_with, settings):
    server, app = await server_with()
    commands = await peer(server.port, answers(
        ANSWER="200 result=0\n", STREAM_FILE="200 result=-1 endpos=0\n", EXEC="200 result=0\n",
        GET_FULL_VARIABLE="200 result=1 (OK:0)\n",       # "0": agent
        CHANNEL_STATUS="200 result=6\n"))
    assert app.records.flush()
    record = last_record(settings)
    assert (record["outcome"], record["transfer_reason"]) == ("transfer", "caller_request")
    assert "bpjs/transfer-agent" in record["missing_prompts"]
    assert commands.count("CHANNEL STATUS") == len(record["missing_prompts"])


async def test_playback_failure_on_a_dead_channel_is_a_hang_up(server_with, settings):
    server, app = await server_with()
    await peer(server.port, answers(
        ANSWER="200 result=0\n", STREAM_FILE="200 result=-1 endpos=1760\n",
        EXEC="200 result=0\n", GET_FULL_VARIABLE="200 result=1 (OK:0)\n",
        CHANNEL_STATUS="511 Command Not Permitted on a dead channel or intercept routine\n"))
    assert app.records.flush() and last_record(settings)["outcome"] == "abandoned"


async def test_get_data_failing_on_a_live_channel_is_a_missing_prompt(server_with, settings):
    """GET DATA answers -1 for a missing prompt as for a hang-up: CHANNEL STATUS tells
    them apart, and the entry is then collected without the prompt."""
    server, app = await server_with()
    entry = {"bpjs/enter-id": "-1", "": "0001234567890"}

    def respond(command):
        if command.startswith("GET DATA"):
            sound = command.split()[2].strip('"')
            return f"200 result={entry.pop(sound, '-1')}\n"
        if command.startswith("GET FULL VARIABLE"):
            return "200 result=1 (HANGUP:)\n" if not entry else "200 result=1 (OK:1)\n"
        return {"ANSWER": "200 result=0\n", "CHANNEL STATUS": "200 result=6\n"}.get(
            command, "200 result=0\n" if command.startswith("EXEC") else "200 result=1\n")
    commands = await peer(server.port, respond)
    assert commands[4:7] == ['GET DATA bpjs/enter-id 6000 16', "CHANNEL STATUS",
                             'GET DATA "" 6000 16']
    assert app.records.flush()
    record = last_record(settings)
    assert record["missing_prompts"] == ["bpjs/enter-id"]
    assert record["identifier_masked"] == "0001******890" and record["outcome"] == "abandoned"


async def test_a_caller_pressing_a_to_d_is_told_the_entry_is_wrong(server_with, settings):
    """DTMF A-D (some phones have them) are wrong keys, not a broken peer: the caller is
    told and asked again; a character no phone sends ends the call as the peer's error."""
    server, app = await server_with()
    entries = ["1", "0001234A67890 (timeout)", "X"]          # GET DATA, in turn
    first_keys = ["TIMEOUT:", "OK:9"]                           # Read, in turn

    def respond(command):
        if command.startswith("GET DATA"):
            return f"200 result={entries.pop(0)}\n"
        if command.startswith("GET FULL VARIABLE"):
            return f"200 result=1 ({first_keys.pop(0)})\n"
        if command.startswith("STREAM FILE"):
            return "200 result=0 endpos=0\n"
        return {"ANSWER": "200 result=0\n"}.get(
            command, "200 result=0\n" if command.startswith("EXEC") else "200 result=1\n")
    commands = await peer(server.port, respond)
    after_entry = commands[commands.index("GET DATA bpjs/enter-id 6000 16") + 1]
    assert after_entry.startswith("EXEC Read IVR_KEY,bpjs/id-invalid&bpjs/enter-id,")
    assert 'GET DATA "" 6000 15' in commands and entries == [] and first_keys == []
    assert app.records.flush()
    assert last_record(settings)["outcome"] == "error"             # "X": no phone sends it


async def test_a_520_usage_block_is_read_whole(server_with, settings):
    server, app = await server_with()
    usage = ("520-Invalid command syntax.  Proper usage follows:\n"
             "Usage: ANSWER\n520 End of proper usage.\n")
    commands = await peer(server.port, answers(ANSWER=usage))
    # the IVR does not know what went wrong, so it ends the call as an error but in step:
    # each variable gets its own reply
    assert "SET VARIABLE __IVR_OUTCOME error" in commands
    assert app.records.flush() and last_record(settings)["outcome"] == "error"


async def test_a_line_that_is_not_fastagi_ends_only_that_session(server_with, settings):
    server, app = await server_with()
    await peer(server.port, answers(ANSWER="HTTP/1.1 400 Bad Request\n"))
    assert app.records.flush() and last_record(settings)["outcome"] == "error"
    assert (await place_call("127.0.0.1", server.port, "0")).variables["IVR_OUTCOME"] == \
        "transfer"


async def test_a_peer_that_stops_answering_is_let_go(server_with, settings):
    server, app = await server_with(reply_timeout=0.3)
    commands = await peer(server.port, answers(ANSWER=None), seconds=5)
    assert commands == ["ANSWER"]
    assert app.records.flush() and last_record(settings)["outcome"] == "error"


async def test_a_call_longer_than_the_maximum_duration_is_ended(server_with, settings):
    server, app = await server_with(max_call_seconds=0.5)
    commands = await peer(server.port, answers(
        ANSWER="200 result=0\n", STREAM_FILE="200 result=0 endpos=1\n",
        WAIT_FOR_DIGIT="200 result=57\n"), seconds=10)   # "9": the menu, again and again
    assert "SET VARIABLE __IVR_OUTCOME error" in commands
    assert app.records.flush() and last_record(settings)["outcome"] == "error"


# -- the session on its own

@pytest.fixture
async def session_pair():
    """An AgiSession and the raw peer end of its socket."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    peer_reader, peer_writer = await asyncio.open_connection(sock=theirs)
    yield AgiSession(reader, writer, {}, reply_timeout=2), peer_reader, peer_writer
    writer.close()
    peer_writer.close()


async def test_session_reads_a_520_block_as_one_reply(session_pair):
    session, peer_reader, peer_writer = session_pair
    peer_writer.write(b"520-Invalid command syntax.  Proper usage follows:\n"
                      b"Usage: X\n520 End of proper usage.\n200 result=7\n")
    assert (await session.send("X")).code == 520
    assert (await session.send("NOOP")).number == 7


async def test_session_keeps_in_step_after_a_cancelled_command(session_pair):
    session, peer_reader, peer_writer = session_pair
    waiting = asyncio.create_task(session.send("WAIT FOR DIGIT", 5000))
    await asyncio.sleep(0.05)
    waiting.cancel()   # as a timeout or a shutdown cancels the call's task
    with pytest.raises(asyncio.CancelledError):
        await waiting
    peer_writer.write(b"200 result=49\n200 result=1\n")
    reply = await session.send("SET VARIABLE", "X", "1")
    assert (reply.code, reply.result) == (200, "1")


async def test_session_end_of_stream_closes_it(session_pair):
    session, peer_reader, peer_writer = session_pair
    peer_writer.close()
    with pytest.raises(SessionClosed):
        await session.send("ANSWER")
    assert session.closed


async def test_session_rejects_garbage(session_pair):
    session, peer_reader, peer_writer = session_pair
    peer_writer.write(b"garbage\n")
    with pytest.raises(ProtocolError):
        await session.send("ANSWER")
