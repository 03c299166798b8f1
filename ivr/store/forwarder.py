"""The record forwarder: tails the IVR's call-record file (JSON lines) into the store.

Only complete lines are sent, in batches, each stored in one transaction with the file
offset it ends at; on start the forwarder goes on from the offset the store has. While
the store is down the batch is retried with backoff and the file keeps the records, so
nothing is lost; a batch sent twice (the store committed, the answer was lost) is
harmless, since records are upserted by call id. Several worker processes share one
file: a lock file next to it lets exactly one of them forward (the others take over
within ``LOCK_RETRY`` if it dies).

File reading happens in a thread (``asyncio.to_thread``), a bounded batch at a time.
Log lines name counts, offsets and error types only: never a record's content.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from . import Store, StoreUnavailable
from .rows import record_row

log = logging.getLogger(__name__)

# A batch's records are checked and encoded on the event loop (~20 µs each): 200 keep
# that under a few milliseconds, so that catching up after an outage never stalls calls.
BATCH_RECORDS = 200
BATCH_BYTES = 1 << 20      # also the longest line accepted
POLL_SECONDS = 0.2
LOCK_RETRY = 1.0
BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0
STOP_SECONDS = 3.0
STOP_LOCK_RETRY = 0.1
# After the path names a new file, how long the old one is still read: a writer that
# began a batch before the move finishes it there.
ROTATION_GRACE = 1.0


class _Stopping(Exception):
    pass


class RecordForwarder:
    def __init__(self, store: Store, path: str, *, batch_records: int = BATCH_RECORDS,
                 batch_bytes: int = BATCH_BYTES, poll: float = POLL_SECONDS,
                 backoff_max: float = BACKOFF_MAX, lock_retry: float = LOCK_RETRY) -> None:
        self.store = store
        self.path = path
        # The offset's key: the same path on two IVR hosts is two files.
        self.source = f"{socket.gethostname()}:{os.path.realpath(path)}"
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.poll = poll
        self.backoff_max = backoff_max
        self.lock_retry = lock_retry
        self.forwarded = 0         # records put into the store by this forwarder
        self.holds_lock = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_fd: int | None = None
        self._down = False
        self._file = None             # the file being tailed, kept open across rotations
        self._moved_files: list[list] = []   # [file, offset read, last read]: after an mv

    async def start(self) -> None:
        """Returns at once; forwarding (and waiting for the lock, the store) goes on in the
        background until ``stop``."""
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="record-forwarder")

    def wake(self) -> None:
        """New lines were written (thread-safe: the RecordWriter's thread calls it)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Forwards what the file holds (for up to ``timeout``: the rest waits in the file
        for the next start), then stops and lets another process take the lock."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            elif not self._task.cancelled() and self._task.exception() is not None:
                log.error("record forwarder failed: %s", type(self._task.exception()).__name__)
            self._task = None
        self._release_lock()
        for f in [self._file] + [entry[0] for entry in self._moved_files]:
            if f is not None:
                f.close()
        self._file, self._moved_files = None, []

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._take_lock()     # (may raise _Stopping)
            while True:
                try:
                    await self._forward()
                    return
                except _Stopping:
                    return
                except Exception as exc:   # e.g. the file unreadable: say so, start over
                    log.error("record forwarder: %s; starting again", type(exc).__name__)
                    if self._stopping:
                        return
                    await asyncio.sleep(self.backoff_max)
        except _Stopping:
            return

    async def _forward(self) -> None:
        await self._retrying(self.store.open)
        offset = await self._retrying(self.store.forwarded_offset, self.source)
        log.info("forwarding call records from offset %d", offset)
        while True:
            self._wake.clear()
            batch = await asyncio.to_thread(self._read, offset)
            if batch is None:
                if self._stopping:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll):
                        await self._wake.wait()
                continue
            items, end, skipped, restarted = batch
            if restarted == "truncated":
                log.warning("the record file is shorter than the offset forwarded (%d): "
                            "it was replaced; forwarding it from the start", offset)
            elif restarted == "rotated":
                log.info("the record file was rotated at offset %d; forwarding the new one "
                         "from its start (and what still reaches the old one)", offset)
            if skipped:
                log.warning("skipped %d malformed line(s) before offset %d", skipped, end)
            await self._deliver(items, end)
            offset = end

    def _read(self, offset: int):
        """The next batch after ``offset``: ([(record, end offset)], batch end offset,
        lines skipped, why the file starts over or None), or None when there is no new
        complete line.

        The file stays open between reads, so that a rotation by ``mv`` (or a delete) loses
        nothing: as soon as the path names a new file, the forwarder follows it from its
        start, and keeps reading the moved one to its end for ``ROTATION_GRACE`` more (a
        writer can finish a batch there after the move); those lines are stored with the
        new file's offset. A file cut short in place (``copytruncate``) is read from its
        start."""
        old = self._read_moved(offset)
        if old is not None:
            return old
        if self._file is None:
            try:
                self._file = open(self.path, "rb")
            except FileNotFoundError:
                return None
        f = self._file
        size = os.fstat(f.fileno()).st_size
        if size < offset:
            return [], 0, 0, "truncated"
        if size > offset:
            f.seek(offset)
            data = f.read(self.batch_bytes)
            cut = data.rfind(b"\n")
            if cut >= 0:
                return self._parse(data[:cut + 1], offset)
            if len(data) >= self.batch_bytes:
                return [], self._skip_line(f, offset + len(data)), 1, None
        if self._moved() and os.path.exists(self.path):
            self._moved_files.append([f, offset, time.monotonic()])
            self._file = None
            return [], 0, 0, "rotated"
        return None

    def _read_moved(self, offset: int):
        """Complete lines that reached a moved file after it was left, as a batch that
        ends at ``offset`` (the current file's); None when there are none."""
        now = time.monotonic()
        for entry in list(self._moved_files):
            f, position, since = entry
            size = os.fstat(f.fileno()).st_size
            if size > position:
                f.seek(position)
                data = f.read(self.batch_bytes)
                cut = data.rfind(b"\n")
                if cut >= 0:
                    items, end, skipped, _ = self._parse(data[:cut + 1], position)
                    entry[1], entry[2] = end, now
                    return [(record, offset) for record, _ in items], offset, skipped, None
            if self._stopping or now - since >= ROTATION_GRACE:
                f.close()
                self._moved_files.remove(entry)
        return None

    def _moved(self) -> bool:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return True
        held = os.fstat(self._file.fileno())
        return (info.st_dev, info.st_ino) != (held.st_dev, held.st_ino)

    def _parse(self, data: bytes, offset: int):
        items, skipped, position = [], 0, offset
        for line in data.splitlines(keepends=True):
            if len(items) >= self.batch_records:
                break
            position += len(line)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                record_row(record)
            except ValueError:       # not JSON, not UTF-8, not a call record
                skipped += 1
                continue
            items.append((record, position))
        return items, position, skipped, None

    def _skip_line(self, f, position: int) -> int:
        """Past a line longer than a batch may be (no record is): the offset after it, or
        where the file ends for now (the rest of it is skipped on the next read)."""
        while True:
            chunk = f.read(self.batch_bytes)
            if not chunk:
                return position
            newline = chunk.find(b"\n")
            if newline >= 0:
                return position + newline + 1
            position += len(chunk)

    async def _deliver(self, items: list[tuple[dict, int]], end: int) -> None:
        try:
            await self._retrying(self.store.put_records, [r for r, _ in items], self.source, end)
            self.forwarded += len(items)
            return
        except (_Stopping, asyncio.CancelledError):
            raise
        except Exception as exc:   # the store refuses a record: find it, keep the others
            log.warning("the store refused a batch of %d record(s) (%s)", len(items),
                        type(exc).__name__)
        if len(items) > 1:
            for record, record_end in items:
                await self._deliver([(record, record_end)], record_end)
        else:
            log.error("the record before offset %d is skipped", end)
        await self._retrying(self.store.put_records, [], self.source, end)

    async def _retrying(self, operation, *args):
        """``operation(*args)``, again and again while the store is unavailable."""
        delay = BACKOFF_MIN
        while True:
            try:
                result = await operation(*args)
            except StoreUnavailable as exc:
                if not self._down:
                    self._down = True
                    log.warning("store unavailable (%s); records wait in the file, retrying",
                                exc)
                if self._stopping:
                    raise _Stopping()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            if self._down:
                self._down = False
                log.info("store available again; forwarding resumes")
            return result

    # -- one forwarder per file -------------------------------------------------------------

    async def _take_lock(self) -> None:
        # Stopping, a process standing by still tries (until stop's timeout): the workers
        # stop together, and the last one to hold the lock forwards the others' last records.
        announced = False
        while True:
            if self._try_lock():
                self.holds_lock = True
                return
            if not announced:
                log.debug("another process forwards the call records; standing by")
                announced = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_LOCK_RETRY if self._stopping
                                           else self.lock_retry):
                    await self._wake.wait()
            self._wake.clear()

    def _try_lock(self) -> bool:
        # On the loop itself: a non-blocking flock of a local file takes microseconds, and
        # a thread could still be taking it when a cancelled stop has released it.
        lock_path = Path(self.path + ".forwarder.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)     # closing drops the flock
            self._lock_fd = None
            self.holds_lock = False
