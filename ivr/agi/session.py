"""One FastAGI session: the only place that touches the socket of a call.

It reads the header block under a time and size limit, sends one command at a time and
reads its final reply, noting a ``HANGUP`` line wherever it comes. It never waits forever:
every read has a deadline (the stuck-peer limit), and end of stream ends the session.
"""
from __future__ import annotations

import asyncio
import logging

from .codec import HANGUP, HeaderError, ProtocolError, Reply, ReplyReader, format_command, \
    parse_header_line

log = logging.getLogger(__name__)


class SessionClosed(Exception):
    """The peer closed the connection, stopped answering, or broke the protocol:
    no further command can be exchanged."""


async def _read_line(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        raise SessionClosed("end of stream") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("line too long") from None
    return raw[:-1].decode("utf-8", "replace").rstrip("\r")


async def read_headers(reader: asyncio.StreamReader, max_bytes: int) -> dict[str, str]:
    """The header block, up to its empty line. The caller bounds it in time."""
    headers: dict[str, str] = {}
    size = 0
    while True:
        line = await _read_line(reader)
        size += len(line) + 1
        if size > max_bytes:
            raise HeaderError("header block too large")
        item = parse_header_line(line)
        if item is None:
            return headers
        headers[item[0]] = item[1]


class AgiSession:
    __slots__ = ("headers", "_reader", "_writer", "_reply_timeout", "_replies",
                 "hung_up", "closed", "commands_sent", "_owed")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 headers: dict[str, str], reply_timeout: float) -> None:
        self.headers = headers
        self._reader = reader
        self._writer = writer
        self._reply_timeout = reply_timeout
        self._replies = ReplyReader()
        self.hung_up = False
        self.closed = False
        self.commands_sent = 0
        self._owed = 0  # replies of commands whose sender was cancelled while waiting

    async def send(self, verb: str, *args: str | int, expect_seconds: float = 0.0) -> Reply:
        """Send one command and return its final reply.

        ``expect_seconds`` is how long the command may legitimately run (a playback, a wait
        for a key); the stuck-peer limit is added to it.
        """
        if self.closed:
            raise SessionClosed("session already closed")
        self._writer.write(format_command(verb, *args))
        self.commands_sent += 1
        self._owed += 1
        try:
            async with asyncio.timeout(expect_seconds + self._reply_timeout):
                await self._writer.drain()
                while True:
                    reply = await self._next_reply()
                    if self._owed == 0:
                        return reply
        except TimeoutError:
            self.closed = True
            raise SessionClosed("no reply within the stuck-peer limit") from None
        except ConnectionError:
            self.closed = True
            raise SessionClosed("connection lost") from None
        except (SessionClosed, ProtocolError):
            self.closed = True
            raise

    async def _next_reply(self) -> Reply:
        """The next final reply; a reply owed to a cancelled sender is read and dropped
        by the caller's loop, so the session stays in step."""
        while True:
            event = self._replies.feed(await _read_line(self._reader))
            if event is HANGUP:
                self.hung_up = True
            elif event is not None:
                self._owed -= 1
                return event

    def close(self) -> None:
        self.closed = True
        self._writer.close()
