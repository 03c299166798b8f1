"""The call record: one JSON object per call, appended as a line to ``IVR_CALL_RECORDS``.

Everything in it is already masked (``ivr.privacy``). Writing happens on one background
thread, so a call never waits on the disk; ``close()`` drains what is queued.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class CallRecord:
    call_id: str
    caller: str                      # masked
    channel: str = ""
    extension: str = ""
    started_at: str = field(default_factory=now_iso)
    ended_at: str | None = None
    outcome: str | None = None
    transfer_reason: str | None = None
    verified: bool = False
    member_status: str | None = None
    identifier_masked: str | None = None         # the last card number or NIK typed, masked
    participant_ref: str | None = None           # verified participant's pseudonym (HMAC)
    menu_keys: list[str] = field(default_factory=list)
    membership_latency_ms: float | None = None   # the last lookup in the call
    membership_lookups: int = 0
    # From answer to the first status prompt: wall clock (prompts as far as they played,
    # waits for keys and for the look-up), and the full length of the prompts started.
    time_to_status_ms: int | None = None
    audio_to_status_ms: int | None = None
    missing_prompts: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        # Every field is a JSON value already (lists of strings at most), so a shallow dict
        # does; dataclasses.asdict deep-copies each list first, five times slower.
        return json.dumps({name: getattr(self, name) for name in _FIELDS},
                          ensure_ascii=False, separators=(",", ":"))


_FIELDS = tuple(f.name for f in fields(CallRecord))


_STOP = object()
_WAKE = object()
# How often records held back by a write error (a full disk) are tried again.
RETRY_SECONDS = 1.0
# On close, how long records still held back are tried before they count as lost.
CLOSE_RETRY_SECONDS = 5.0


class _Target:
    """One file the writer appends to, and the lines it could not take yet."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.identity: tuple[int, int] | None = None      # (st_dev, st_ino) of the open fd
        self.waiting: deque[bytes] = deque()
        self.failing_since: float | None = None
        self.lost_in_episode = 0

    def open(self) -> None:
        if self.path == "-":
            self.fd = 1
            return
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                          0o640)
        info = os.fstat(self.fd)
        self.identity = (info.st_dev, info.st_ino)

    def close(self) -> None:
        if self.fd is not None and self.fd != 1:
            os.close(self.fd)
        self.fd = None

    def moved(self) -> bool:
        """Whether the path no longer names the open file (``mv`` or delete rotation)."""
        if self.path == "-" or self.fd is None:
            return self.fd is None
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (info.st_dev, info.st_ino) != self.identity

    def append(self, data: bytes) -> int:
        """Append ``data`` (whole lines); returns how many bytes of whole lines reached the
        file. On an error the file is cut back to the end of the last whole line written,
        so that a record is in the file whole or not at all, and the error is raised with
        that count as ``written``. Writers in other processes sharing the file take the
        same lock, so the bytes after the size read here are this writer's."""
        fd = self.fd
        if fd == 1:
            os.write(fd, data)
            return len(data)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            start = os.fstat(fd).st_size
            done = 0
            try:
                while done < len(data):
                    done += os.write(fd, data[done:])
            except OSError as exc:
                whole = data.rfind(b"\n", 0, done) + 1
                if whole < done:
                    os.ftruncate(fd, start + whole)
                exc.written = whole
                raise
            return done
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


class RecordWriter:
    """Appends records to a JSON-lines file (``-`` for standard output).

    ``copy_to``: a second file that gets every line too (the store's outbox when the
    records go to standard output); ``on_written`` is called, on the writer's thread,
    after each batch (the record forwarder wakes up).

    Rotation: ``reopen()`` (SIGHUP) reopens the file, and before every batch the writer
    checks that the path still names the file it holds, so an ``mv`` or a delete is noticed
    without a signal. The forwarder reads a moved file to its end before it follows
    (``ivr.store.forwarder``).

    A full disk (any write error): a record is written whole or not at all; records that
    cannot be written wait, at most ``max_waiting`` of them per file, and are written when
    the disk takes them again; the ones beyond are lost, counted in ``lost``, and logged
    once per episode (when it starts, when records start being lost, when it ends)."""

    def __init__(self, path: str, *, copy_to: str | None = None,
                 on_written: Callable[[], None] | None = None, max_waiting: int = 10000,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        self.path = path
        self.copy_to = copy_to
        self.on_written = on_written
        self.max_waiting = max_waiting
        self.retry_seconds = retry_seconds
        self.written = 0        # records in the main file
        self.lost = 0           # records dropped from the main file's queue
        self.write_errors = 0   # failed attempts to write the main file
        self._reopen = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="call-records", daemon=True)
        for target in (path, copy_to):
            if target and target != "-":
                Path(target).parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Records of the main file held back by a write error."""
        with self._idle:
            return self._pending

    def write(self, record: CallRecord) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(record.to_json() + "\n")

    def reopen(self) -> None:
        """Reopen the files at the next batch (logrotate's SIGHUP); safe from any thread
        and from a signal handler."""
        self._reopen = True
        self._queue.put(_WAKE)

    def _run(self) -> None:
        targets = [_Target(t) for t in (self.path, self.copy_to) if t]
        stop_at: float | None = None
        try:
            while True:
                held = any(t.waiting for t in targets)
                timeout = self.retry_seconds if held else None
                if stop_at is not None:
                    timeout = 0.05 if held else 0
                lines: list = []
                try:
                    lines.append(self._queue.get(timeout=timeout)
                                 if timeout != 0 else self._queue.get_nowait())
                except queue.Empty:
                    pass
                while not self._queue.empty():
                    lines.append(self._queue.get())
                if _STOP in lines and stop_at is None:
                    stop_at = time.monotonic() + CLOSE_RETRY_SECONDS
                batch = [line.encode() for line in lines if isinstance(line, str)]
                if self._reopen:
                    self._reopen = False
                    for target in targets:
                        target.close()
                for target in targets:
                    target.waiting.extend(batch)
                written = sum(self._flush(t, main=t is targets[0]) for t in targets)
                for target in targets:       # what the disk refused, beyond the bound
                    self._drop(target, len(target.waiting) - self.max_waiting,
                               main=target is targets[0],
                               why=f"{self.max_waiting} records already wait")
                if written and self.on_written is not None:
                    try:
                        self.on_written()
                    except Exception:
                        log.exception("call records written: the listener failed")
                if stop_at is not None and (not any(t.waiting for t in targets)
                                            or time.monotonic() > stop_at):
                    for target in targets:
                        self._drop(target, len(target.waiting), main=target is targets[0],
                                   why="the writer stopped")
                    return
        finally:
            for target in targets:
                target.close()

    def _drop(self, target: _Target, count: int, *, main: bool, why: str) -> None:
        """Give up the ``count`` newest waiting records (the oldest keep their order)."""
        if count <= 0:
            return
        for _ in range(count):
            target.waiting.pop()
        if target.lost_in_episode == 0:
            log.error("call records are being lost (%s): %s", target.path, why)
        target.lost_in_episode += count
        if main:
            self.lost += count
            self._done(count)

    def _flush(self, target: _Target, *, main: bool) -> int:
        """Write what waits for ``target``; the number of records written."""
        if not target.waiting:
            return 0
        data = b"".join(target.waiting)
        try:
            if target.fd is None or target.moved():
                target.close()
                target.open()
            done = target.append(data)
            error = None
        except OSError as exc:
            done, error = getattr(exc, "written", 0), exc
        count = 0
        while done > 0 and target.waiting:
            done -= len(target.waiting.popleft())
            count += 1
        if main:
            self.written += count
            self.write_errors += error is not None
            self._done(count)
        if error is not None and target.failing_since is None:
            target.failing_since = time.monotonic()
            log.error("cannot write call records to %s (%s); holding up to %d of them until "
                      "it works again", target.path,
                      errno.errorcode.get(error.errno, error.errno) if error.errno else
                      type(error).__name__, self.max_waiting)
        elif error is None and target.failing_since is not None:
            log.warning("call records are written to %s again after %.0f s; %d lost",
                        target.path, time.monotonic() - target.failing_since,
                        target.lost_in_episode)
            target.failing_since, target.lost_in_episode = None, 0
        return count

    def _done(self, count: int) -> None:
        with self._idle:
            self._pending -= count
            self._idle.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every queued record is written (for tests and shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=CLOSE_RETRY_SECONDS + 5)
