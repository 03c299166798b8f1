"""The FastAGI door: listening sockets, who may come in, and how many at once.

FastAGI has no authentication: whoever opens a session runs a call, with the caller id it
chooses. So the listener accepts connections itself and closes, at once, any whose peer is
not in the allow-list of Asterisk addresses (no protocol object, no session, no record).

It also keeps the number of open connections under a cap below the open-files limit: at the
cap it stops accepting (the kernel's backlog holds new connections; Asterisk gives up after
about 2 s and its dialplan falls back to the agents), and it resumes as connections close.
Accept errors (the process or system out of file descriptors) pause accepting briefly.
Warnings about refused peers, the cap and accept errors are rate-limited: a flood makes a
few lines, not megabytes of tracebacks.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import resource
import socket
import time
from typing import Callable, Iterable

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# File descriptors kept free of FastAGI connections: logs, databases, the event loop.
RESERVED_FILES = 256
# How long accepting pauses after an accept error that more accepting cannot fix.
ACCEPT_RETRY_SECONDS = 0.2
# At most one warning of each kind per this many seconds (a count says what was folded).
WARN_EVERY_SECONDS = 10.0
# Connections taken from the backlog per readiness event, before other work gets a turn.
ACCEPT_BATCH = 64
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def parse_allow_list(text: str) -> tuple[Network, ...]:
    """``"127.0.0.1/32, 172.28.40.10"`` → networks; ValueError names a bad entry."""
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"IVR_AGI_ALLOW: {item!r} is not an address or CIDR") from None
    if not networks:
        raise ValueError("IVR_AGI_ALLOW is empty: no Asterisk could connect")
    return tuple(networks)


def allowed(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped    # an IPv4 peer on a dual-stack socket
    return any(ip in network for network in networks)


def connection_cap(wanted: int, other_sockets: int = 0) -> int:
    """``wanted``, lowered to fit the open-files limit with room for everything else:
    ``RESERVED_FILES`` and the process's other pooled sockets (membership service, Redis),
    or, where the limit is small, one of those per call."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    room = soft - RESERVED_FILES
    fits = room - min(other_sockets, room // 2)
    if fits < 1:
        raise ValueError(f"the open-files limit ({soft}) leaves no room for FastAGI calls")
    return min(wanted, fits)


class RateLimitedWarning:
    """One warning line per ``every`` seconds; the lines in between are counted, not lost."""

    def __init__(self, logger: logging.Logger, every: float = WARN_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self._last: float | None = None
        self._folded = 0

    def __call__(self, message: str, *args) -> None:
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            self._folded += 1
            return
        if self._folded:
            message += f" (and {self._folded} more like it in the last "\
                       f"{now - self._last:.0f} s)"
        self._last, self._folded = now, 0
        self.logger.warning(message, *args)


class Listener:
    """Accepts FastAGI connections on ``host:port`` and hands allowed ones to ``serve``
    (``loop.connect_accepted_socket``) while fewer than ``cap`` are open."""

    def __init__(self, serve: Callable[[socket.socket], object], *, allow: Iterable[Network],
                 cap: int, open_count: Callable[[], int]) -> None:
        self.serve = serve
        self.allow = tuple(allow)
        self.cap = cap
        self.open_count = open_count
        self.refused = 0          # peers not in the allow-list
        self.accept_errors = 0
        self.paused_at_cap = 0    # times accepting stopped at the cap
        self._sockets: list[socket.socket] = []
        self._tasks: list[asyncio.Task] = []
        self._room = asyncio.Event()
        self._room.set()
        self._warn_refused = RateLimitedWarning(log)
        self._warn_cap = RateLimitedWarning(log)
        self._warn_error = RateLimitedWarning(log)

    @property
    def sockets(self) -> list[socket.socket]:
        return self._sockets

    async def start(self, host: str, port: int, *, reuse_port: bool = False,
                    backlog: int = 4096) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _name, address in dict.fromkeys(
                    (i[0], i[1], i[2], i[3], i[4]) for i in infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                if port == 0:      # several addresses share the port the first one got
                    port = sock.getsockname()[1]
                sock.listen(backlog)
                sock.setblocking(False)
        except BaseException:
            self._close_sockets()
            raise
        self._tasks = [loop.create_task(self._accept_loop(sock)) for sock in self._sockets]

    def connection_closed(self) -> None:
        """Told by the server whenever one of its connections ends."""
        if not self._room.is_set() and self.open_count() < self.cap:
            self._room.set()

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._room.wait()
            try:
                conn, peer = await loop.sock_accept(sock)
            except OSError as exc:
                await self._accept_failed(exc)
                continue
            self._admit(conn, peer)
            # Take what else the backlog holds now, without a trip through the loop each.
            for _ in range(ACCEPT_BATCH):
                if not self._room.is_set():
                    break
                try:
                    conn, peer = sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    await self._accept_failed(exc)
                    break
                conn.setblocking(False)
                self._admit(conn, peer)

    async def _accept_failed(self, exc: OSError) -> None:
        if exc.errno not in _OUT_OF_RESOURCES:
            return      # e.g. a peer that reset before we accepted it: nothing to do
        self.accept_errors += 1
        self._warn_error("cannot accept FastAGI connections: %s; pausing accepting",
                         errno.errorcode.get(exc.errno, exc.errno))
        await asyncio.sleep(ACCEPT_RETRY_SECONDS)

    def _admit(self, conn: socket.socket, peer) -> None:
        address = peer[0] if isinstance(peer, tuple) else str(peer)
        if not allowed(address, self.allow):
            self.refused += 1
            self._warn_refused("refused a FastAGI connection from %s: not in IVR_AGI_ALLOW",
                               address)
            conn.close()
            return
        self.serve(conn)
        if self.open_count() >= self.cap:
            self._room.clear()
            self.paused_at_cap += 1
            self._warn_cap("%d FastAGI connections open, the cap (IVR_MAX_CONNECTIONS): "
                           "not accepting until calls end", self.cap)

    async def stop_listening(self) -> None:
        """Close the listening sockets now, after taking every connection already in their
        backlog (closing a socket resets what its backlog holds): from here on a new
        connection is refused at once, and Asterisk tries the next server."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for sock in self._sockets:
            while True:
                try:
                    conn, peer = sock.accept()
                except OSError:     # BlockingIOError: the backlog is empty
                    break
                conn.setblocking(False)
                self._admit(conn, peer)
        self._close_sockets()

    async def wait_closed(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
