"""The call record: one JSON object per call, appended as a line to ``IVR_CALL_RECORDS``.

Everything in it is already masked (``ivr.privacy``). Writing happens on one background
thread, so a call never waits on the disk; ``close()`` drains what is queued.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
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


class RecordWriter:
    """Appends records to a JSON-lines file (``-`` for standard output).

    ``copy_to``: a second file that gets every line too (the store's outbox when the
    records go to standard output); ``on_written`` is called, on the writer's thread,
    after each batch (the record forwarder wakes up)."""

    def __init__(self, path: str, *, copy_to: str | None = None,
                 on_written: Callable[[], None] | None = None) -> None:
        self.path = path
        self.copy_to = copy_to
        self.on_written = on_written
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="call-records", daemon=True)
        for target in (path, copy_to):
            if target and target != "-":
                Path(target).parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def write(self, record: CallRecord) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(record.to_json() + "\n")

    def _run(self) -> None:
        # One os.write per batch on an O_APPEND descriptor: several worker processes can
        # share one file without interleaving their lines.
        fds = [self._open(target) for target in (self.path, self.copy_to) if target]
        try:
            while True:
                lines = [self._queue.get()]
                while not self._queue.empty():
                    lines.append(self._queue.get())
                stop = lines[-1] is _STOP
                batch = [line for line in lines if line is not _STOP]
                encoded = "".join(batch).encode()
                for fd in fds:
                    data = encoded
                    try:
                        while data:
                            data = data[os.write(fd, data):]
                    except OSError:
                        log.exception("could not write %d call records", len(batch))
                if batch and self.on_written is not None:
                    try:
                        self.on_written()
                    except Exception:
                        log.exception("call records written: the listener failed")
                with self._idle:
                    self._pending -= len(batch)
                    self._idle.notify_all()
                if stop:
                    return
        finally:
            for fd in fds:
                if fd != 1:
                    os.close(fd)

    @staticmethod
    def _open(target: str) -> int:
        return 1 if target == "-" else os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                               0o640)

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every queued record is written (for tests and shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
