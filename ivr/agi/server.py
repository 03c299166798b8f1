"""The FastAGI server: accepts Asterisk's connections and runs one route handler per call.

Why not panoramisk's ``fast_agi.Application`` (1.4)? Its header loop spins forever on a peer
that closes early and has no size or time limit; its reply parser turns every ``result=-1``
into an error (a missing prompt looks like a hang-up), reads one line per reply (a ``520``
block puts it out of step), does not notice a ``HANGUP`` that arrives before a reply, and
its route runner swallows every ``BaseException``, cancellation included. Guarding all of
that from outside would leave little of it, so this package has its own small session
layer (``codec`` + ``session``); panoramisk stays the project's AMI client.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from typing import Awaitable, Callable, Mapping

from .codec import ProtocolError
from .session import AgiSession, SessionClosed, read_headers

log = logging.getLogger(__name__)

Handler = Callable[[AgiSession], Awaitable[None]]

# The StreamReader's line limit: no FastAGI line is anywhere near this long.
LINE_LIMIT = 8192


class AgiServer:
    def __init__(self, routes: Mapping[str, Handler], *, header_timeout: float = 5.0,
                 header_max_bytes: int = 16384, reply_timeout: float = 60.0,
                 max_call_seconds: float = 1200.0) -> None:
        self.routes = dict(routes)
        self.header_timeout = header_timeout
        self.header_max_bytes = header_max_bytes
        self.reply_timeout = reply_timeout
        self.max_call_seconds = max_call_seconds
        self._server: asyncio.Server | None = None
        self._calls: set[asyncio.Task] = set()
        self.rejected = 0

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, host, port, limit=LINE_LIMIT, reuse_port=reuse_port,
            backlog=4096)
        for sock in self._server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("FastAGI server listening on %s:%d", host, self.port)

    async def close(self, drain_seconds: float = 5.0) -> None:
        """Stop accepting, give calls in progress a deadline to end, then cancel them."""
        if self._server is not None:
            self._server.close()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=drain_seconds)
        for task in set(self._calls):
            task.cancel()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._calls.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._calls.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.header_timeout):
                headers = await read_headers(reader, self.header_max_bytes)
        except (TimeoutError, SessionClosed, ProtocolError, ConnectionError) as exc:
            self.rejected += 1
            log.warning("dropped a FastAGI peer before its header block ended: %s",
                        exc or type(exc).__name__)
            return
        route = headers.get("agi_network_script", "")
        handler = self.routes.get(route)
        if handler is None:
            self.rejected += 1
            log.warning("no route for FastAGI script %r", route[:64])
            return
        session = AgiSession(reader, writer, headers, self.reply_timeout)
        try:
            async with asyncio.timeout(self.max_call_seconds):
                await handler(session)
        except TimeoutError:
            log.warning("call %s ended at the maximum call duration",
                        headers.get("agi_uniqueid", "?"))
        except Exception:
            log.exception("route %r failed", route)
