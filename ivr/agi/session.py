"""One FastAGI session: the only place that touches the socket of a call.

It sends one command at a time and hands back its final reply, noting a ``HANGUP`` line
wherever it comes. It never waits forever: every command has a deadline (the stuck-peer
limit), and end of stream ends the session.

Reply lines are pushed into the session as they arrive: by the server's protocol
(``ivr.agi.server.AgiProtocol.data_received``, no task or stream per call in between), or,
for a session made from asyncio streams, by a small task that reads them. The command in
flight waits on one future; there is one deadline timer per session, not one per command.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque

from .codec import HANGUP, ProtocolError, Reply, ReplyReader, format_command

log = logging.getLogger(__name__)

# The longest line accepted: no FastAGI line is anywhere near this long.
LINE_LIMIT = 8192
# Replies that came before any command (a peer that is not Asterisk): a few are kept, for
# the next commands; a flood of them is a protocol error, not a growing queue.
EARLY_LIMIT = 64


class SessionClosed(Exception):
    """The peer closed the connection, stopped answering, or broke the protocol:
    no further command can be exchanged."""


class LineBuffer:
    """Bytes in, complete lines out (``\\n`` ends a line, a ``\\r`` before it is dropped)."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[str]:
        if self._rest:
            data = self._rest + data
        lines = data.split(b"\n")
        self._rest = lines.pop()
        # Every line, also those that came whole in one read (only a read that long can
        # hold one that long).
        if len(self._rest) > LINE_LIMIT or (
                len(data) > LINE_LIMIT and any(len(line) > LINE_LIMIT for line in lines)):
            raise ProtocolError(f"a line longer than {LINE_LIMIT} bytes")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]


class AgiSession:
    __slots__ = ("headers", "_transport", "_reply_timeout", "_replies", "hung_up", "closed",
                 "commands_sent", "_owed", "_early", "_waiter", "_failure", "_deadline",
                 "_timer", "_loop", "_pump")

    def __init__(self, reader: asyncio.StreamReader | None, writer: asyncio.StreamWriter | None,
                 headers: dict[str, str], reply_timeout: float, *,
                 transport: asyncio.Transport | None = None) -> None:
        """A session over asyncio streams (``reader``, ``writer``), or over a ``transport``
        whose protocol feeds ``line_received`` and ``connection_ended``."""
        self.headers = headers
        self._reply_timeout = reply_timeout
        self._replies = ReplyReader()
        self.hung_up = False
        self.closed = False
        self.commands_sent = 0
        self._owed = 0          # commands sent whose final reply has not come yet
        self._early: deque[Reply] = deque()   # replies that came before their command
        self._waiter: asyncio.Future | None = None
        self._failure: Exception | None = None
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._pump = None
        if transport is None:
            transport = writer.transport
            self._pump = self._loop.create_task(self._read_stream(reader))
        self._transport = transport

    # -- sending

    async def send(self, verb: str, *args: str | int, expect_seconds: float = 0.0) -> Reply:
        """Send one command and return its final reply.

        ``expect_seconds`` is how long the command may legitimately run (a playback, a wait
        for a key); the stuck-peer limit is added to it.
        """
        if self.closed:
            raise SessionClosed("session already closed")
        data = format_command(verb, *args)
        if self._failure is not None:
            raise self._fail()
        if self._transport.is_closing():
            self.closed = True
            raise SessionClosed("connection lost")
        self._transport.write(data)
        self.commands_sent += 1
        if self._early:
            return self._early.popleft()
        self._owed += 1
        loop = self._loop
        self._deadline = loop.time() + expect_seconds + self._reply_timeout
        if self._timer is None:
            # Armed at the earliest deadline any command can have; when it fires it moves
            # itself to the deadline of the command then in flight (see _check_deadline).
            self._timer = loop.call_at(loop.time() + self._reply_timeout, self._check_deadline)
        self._waiter = waiter = loop.create_future()
        try:
            return await waiter
        finally:
            self._waiter = None
            self._deadline = None

    def _check_deadline(self) -> None:
        self._timer = None
        if self._deadline is None or self.closed:
            return
        if self._loop.time() >= self._deadline:
            self._end(SessionClosed("no reply within the stuck-peer limit"))
        else:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    # -- receiving

    def line_received(self, line: str) -> None:
        """One reply line from the peer."""
        try:
            event = self._replies.feed(line)
        except ProtocolError as exc:
            self._end(exc)
            return
        if event is None:
            return
        if event is HANGUP:
            self.hung_up = True
        elif self._owed == 0:
            if len(self._early) >= EARLY_LIMIT:
                self._end(ProtocolError("replies without commands"))
            else:
                self._early.append(event)
        else:
            self._owed -= 1
            # A reply owed to a sender that was cancelled is dropped, so the session stays
            # in step; the last one owed is the answer to the command in flight.
            if self._owed == 0 and self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(event)

    def connection_ended(self, exc: Exception | None = None) -> None:
        """End of stream, a lost connection, or a peer that broke the protocol."""
        if isinstance(exc, ProtocolError):
            self._end(exc)
        else:
            self._end(SessionClosed("end of stream" if exc is None else "connection lost"))

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                raw = await reader.readuntil(b"\n")
                if len(raw) > LINE_LIMIT + 1:
                    raise asyncio.LimitOverrunError("line too long", len(raw))
                self.line_received(raw[:-1].decode("utf-8", "replace").rstrip("\r"))
        except asyncio.IncompleteReadError:
            self.connection_ended()
        except asyncio.LimitOverrunError:
            self.connection_ended(ProtocolError(f"a line longer than {LINE_LIMIT} bytes"))
        except ConnectionError as exc:
            self.connection_ended(exc)

    def _end(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._fail())

    def _fail(self) -> Exception:
        self.closed = True
        return self._failure

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pump is not None:
            self._pump.cancel()
        self._transport.close()
