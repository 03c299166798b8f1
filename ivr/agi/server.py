"""The FastAGI server: accepts Asterisk's connections and runs one route handler per call.

Why not panoramisk's ``fast_agi.Application`` (1.4)? Its header loop spins forever on a peer
that closes early and has no size or time limit; its reply parser turns every ``result=-1``
into an error (a missing prompt looks like a hang-up), reads one line per reply (a ``520``
block puts it out of step), does not notice a ``HANGUP`` that arrives before a reply, and
its route runner swallows every ``BaseException``, cancellation included. Guarding all of
that from outside would leave little of it, so this package has its own small session
layer (``codec`` + ``session``); panoramisk stays the project's AMI client.

Each connection is an ``AgiProtocol``: it reads the header block itself (under a time and
size limit, with no task yet), then starts the route handler's task and pushes reply lines
straight into the call's session. asyncio streams would add a reader, a writer and a
coroutine layer per line; at thousands of calls that is most of the cost of the server
(``bench/RESULTS.md``).

Connections come in through ``listener.Listener``: only from the allowed Asterisk
addresses, and never more at once than the cap.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from typing import Awaitable, Callable, Iterable, Mapping

from .codec import HeaderError, ProtocolError, parse_header_line
from .listener import Listener, Network, connection_cap
from .session import AgiSession, LineBuffer

log = logging.getLogger(__name__)

Handler = Callable[[AgiSession], Awaitable[None]]

# While draining, how often the server looks whether its calls have ended.
DRAIN_POLL_SECONDS = 0.1
# After the drain limit, the time cancelled calls get to leave variables and records
# (the route's own time limit for that is ``app.FINISH_SECONDS``).
FINISH_AFTER_CANCEL_SECONDS = 6.0
# Then the time closing sockets get to send what they still hold.
CLOSE_SECONDS = 1.0


# One receive buffer for every connection of the process: asyncio calls ``get_buffer``,
# ``recv_into`` and ``buffer_updated`` in a row, and the bytes are copied out at once. (A
# plain ``Protocol`` makes asyncio allocate 256 KiB per read, which glibc may serve with
# mmap/mremap/munmap: three system calls per AGI reply.) 256 KiB, as asyncio reads: a peer
# dropped for a line without end has then most likely been read whole, and sees a clean
# close rather than a reset.
_RECEIVE = memoryview(bytearray(256 * 1024))


class AgiProtocol(asyncio.BufferedProtocol):
    """One FastAGI connection: its header block, then its session."""

    __slots__ = ("server", "transport", "lines", "headers", "header_bytes", "session",
                 "header_timer")

    def __init__(self, server: "AgiServer") -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.lines = LineBuffer()
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.session: AgiSession | None = None
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.server._opening -= 1
        self.server._connections.add(self)
        self.header_timer = asyncio.get_running_loop().call_later(
            self.server.header_timeout, self._reject,
            HeaderError(f"no complete header block within {self.server.header_timeout:g} s"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECEIVE

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_RECEIVE[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        try:
            lines = self.lines.feed(data)
        except ProtocolError as exc:
            self._broken(exc)
            return
        for line in lines:
            if self.session is not None:
                self.session.line_received(line)
            elif self.header_timer is not None:
                self._header_line(line)

    def _header_line(self, line: str) -> None:
        self.header_bytes += len(line) + 1
        try:
            if self.header_bytes > self.server.header_max_bytes:
                raise HeaderError("header block too large")
            item = parse_header_line(line)
        except ProtocolError as exc:
            self._reject(exc)
            return
        if item is not None:
            self.headers[item[0]] = item[1]
        else:
            self._start_call()

    def _start_call(self) -> None:
        self.header_timer.cancel()
        self.header_timer = None
        server = self.server
        route = self.headers.get("agi_network_script", "")
        handler = server.routes.get(route)
        if handler is None:
            server.rejected += 1
            log.warning("no route for FastAGI script %r", route[:64])
            self.transport.close()
            return
        self.session = AgiSession(None, None, self.headers, server.reply_timeout,
                                  transport=self.transport)
        task = asyncio.get_running_loop().create_task(server._run_call(self.session, handler))
        server._calls.add(task)
        task.add_done_callback(server._calls.discard)

    def _reject(self, exc: Exception) -> None:
        """The peer is dropped before its header block ended."""
        if self.header_timer is None:
            return
        self.header_timer.cancel()
        self.header_timer = None
        self.server.rejected += 1
        log.warning("dropped a FastAGI peer before its header block ended: %s",
                    exc or type(exc).__name__)
        self.transport.close()

    def _broken(self, exc: ProtocolError) -> None:
        if self.session is not None:
            self.session.connection_ended(exc)
        else:
            self._reject(exc)

    def eof_received(self) -> None:
        self.connection_lost(None)   # the transport closes itself after this

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connection_lost(self)
        if self.session is not None:
            self.session.connection_ended(exc)
        else:
            self._reject(HeaderError("the peer closed the connection" if exc is None else
                                     f"connection lost ({type(exc).__name__})"))


LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),
                                  ipaddress.ip_network("::1/128"))


class AgiServer:
    def __init__(self, routes: Mapping[str, Handler], *, header_timeout: float = 5.0,
                 header_max_bytes: int = 16384, reply_timeout: float = 60.0,
                 max_call_seconds: float = 1200.0, allow: Iterable[Network] = LOOPBACK,
                 max_connections: int = 20000, other_sockets: int = 0) -> None:
        self.routes = dict(routes)
        self.header_timeout = header_timeout
        self.header_max_bytes = header_max_bytes
        self.reply_timeout = reply_timeout
        self.max_call_seconds = max_call_seconds
        self.allow = tuple(allow)
        self.max_connections = max_connections
        self.other_sockets = other_sockets     # pooled sockets of the process's clients
        self._listener: Listener | None = None
        self._connections: set[AgiProtocol] = set()
        self._opening = 0        # accepted, transport not made yet
        self._calls: set[asyncio.Task] = set()
        self.rejected = 0
        self.peak_connections = 0
        self._hurry = asyncio.Event()

    @property
    def active_calls(self) -> int:
        """Open connections: calls, and peers still sending their header block."""
        return len(self._connections)

    @property
    def listener(self) -> Listener:
        assert self._listener is not None
        return self._listener

    @property
    def port(self) -> int:
        return self.listener.sockets[0].getsockname()[1]

    def _open_count(self) -> int:
        return len(self._connections) + self._opening

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        cap = connection_cap(self.max_connections, self.other_sockets)
        if cap < self.max_connections:
            log.info("FastAGI connection cap lowered from %d (IVR_MAX_CONNECTIONS) to %d, to "
                     "fit the open-files limit", self.max_connections, cap)
        self._listener = Listener(self._accepted, allow=self.allow, cap=cap,
                                  open_count=self._open_count)
        await self._listener.start(host, port, reuse_port=reuse_port)
        log.info("FastAGI server listening on %s:%d (allowed: %s; at most %d connections)",
                 host, self.port, ", ".join(map(str, self.allow)), cap)

    def _accepted(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        protocol = AgiProtocol(self)
        self._opening += 1
        self.peak_connections = max(self.peak_connections, self._open_count())
        task = loop.create_task(loop.connect_accepted_socket(lambda: protocol, sock))
        task.add_done_callback(lambda task: self._transport_made(task, protocol, sock))

    def _transport_made(self, task: asyncio.Task, protocol: AgiProtocol,
                        sock: socket.socket) -> None:
        if protocol.transport is None:     # it failed before the connection was made
            self._opening -= 1
            if not task.cancelled():
                task.exception()           # retrieved: nothing to do but let it go
            sock.close()
            self._listener.connection_closed()

    def _connection_lost(self, connection: AgiProtocol) -> None:
        if connection in self._connections:
            self._connections.discard(connection)
            self._listener.connection_closed()

    async def close(self, drain_seconds: float = 5.0) -> None:
        """Drain, then stop: stop listening at once (the connections already waiting in the
        backlog are taken first, so that none is reset; a new connection is refused, and
        Asterisk's dialplan tries the next server), let the calls in progress end by
        themselves for up to ``drain_seconds`` (or until ``hurry``), then cancel the rest:
        each still leaves its channel variables and its record."""
        if self._listener is not None:
            await self._listener.stop_listening()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_seconds
        if self._connections or self._calls or self._opening:
            log.info("draining: %d call(s) in progress, waiting up to %.0f s for them to end",
                     len(self._connections), drain_seconds)
        while (self._connections or self._calls or self._opening) \
                and loop.time() < deadline and not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(DRAIN_POLL_SECONDS, deadline - loop.time())):
                    await self._hurry.wait()
        if self._calls:
            log.warning("drain limit reached: ending %d call(s) still in progress",
                        len(self._calls))
        for task in set(self._calls):
            task.cancel()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=FINISH_AFTER_CANCEL_SECONDS)
        # Sessions that ended close their sockets once the last bytes are sent: let them,
        # so that Asterisk gets the last variables; abort only what is still open then.
        closing = loop.time() + CLOSE_SECONDS
        while self._connections and loop.time() < closing:
            await asyncio.sleep(0.02)
        for connection in set(self._connections):
            connection.transport.abort()
        if self._listener is not None:
            await self._listener.wait_closed()

    def hurry(self) -> None:
        """End the drain now (a second SIGTERM or Ctrl-C)."""
        self._hurry.set()

    async def _run_call(self, session: AgiSession, handler: Handler) -> None:
        try:
            async with asyncio.timeout(self.max_call_seconds):
                await handler(session)
        except TimeoutError:
            log.warning("call %s ended at the maximum call duration",
                        session.headers.get("agi_uniqueid", "?"))
        except Exception:
            log.exception("route %r failed", session.headers.get("agi_network_script"))
        finally:
            session.close()
