"""The load generator: many concurrent calls, each answered by the project's Asterisk 22
emulator (``ivr.emulator.AsteriskEmulator`` with a ``ScriptedCaller``), driven from an
``asyncio.Protocol`` so that one generator process answers far more commands per second
than the servers it loads.

Virtual callers place calls back to back (a closed loop): the number of calls in progress
stays at the number of callers. With think time, each reply waits as long as the caller
would be listening or typing: a prompt's duration from the rendered manifest (half of it
when a key interrupts it), ``key_ms`` per key, the full timeout of a ``WAIT FOR DIGIT``
that gets no key; all multiplied by ``think_scale`` (0: no think time at all).

Server reply latency is measured from the moment our reply (or the header block) is written
to the moment the server's next command line arrives.
"""
from __future__ import annotations

import asyncio
import gc
import itertools
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field

from ivr.emulator import AsteriskEmulator, ScriptedCaller, encode_headers, split_command

from .paths import BY_NAME, PATHS, CallPath

BUCKET = 1e-5            # latency histogram resolution: 10 µs
SLOW = 0.010             # replies slower than this are counted by the command before
# The first command the hotline sends once a membership lookup has answered (or is slow):
# the replies before them include the membership service's own latency.
AFTER_LOOKUP = tuple(f"STREAM FILE bpjs/{p} " for p in (
    "status-active", "status-inactive", "data-mismatch", "please-wait",
    "service-unavailable"))
DEFAULT_PROMPT_MS = 1000  # a sound missing from the manifest


@dataclass
class Phase:
    """One phase as one generator process runs it; times are ``time.monotonic()``."""
    name: str
    host: str
    port: int
    callers: int
    start: float
    ramp: float
    window_start: float
    window_end: float
    think_scale: float = 0.0
    key_ms: float = 400.0
    durations: dict[str, int] = field(default_factory=dict)
    process_index: int = 0
    processes: int = 1
    seed: int = 1
    call_timeout: float = 600.0
    drain_seconds: float = 5.0
    cut_at_window_end: bool = False   # hold phases: end every call when the window closes


@dataclass
class Stats:
    commands: int = 0
    calls: int = 0
    calls_by_path: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latency: Counter = field(default_factory=Counter)   # bucket → count
    latency_max: float = 0.0
    active_min: int = 0
    active_max: int = 0
    active_mean: float = 0.0
    cpu_seconds: float = 0.0
    window: float = 0.0
    error_examples: list[str] = field(default_factory=list)
    slow_after: Counter = field(default_factory=Counter)
    after_lookup: Counter = field(default_factory=Counter)   # latency buckets, as latency

    def merge(self, other: "Stats") -> None:
        self.commands += other.commands
        self.calls += other.calls
        self.calls_by_path.update(other.calls_by_path)
        self.errors.update(other.errors)
        self.latency.update(other.latency)
        self.latency_max = max(self.latency_max, other.latency_max)
        self.active_min += other.active_min
        self.active_max += other.active_max
        self.active_mean += other.active_mean
        self.cpu_seconds += other.cpu_seconds
        self.window = max(self.window, other.window)
        self.error_examples += other.error_examples[:3]
        self.slow_after.update(other.slow_after)
        self.after_lookup.update(other.after_lookup)

    def percentile(self, q: float, which: str = "all") -> float:
        """Seconds; the upper edge of the bucket holding the q-th quantile of every reply
        (``all``), of those that waited on a membership lookup (``lookup``), or of the
        others (``other``)."""
        if which == "lookup":
            histogram = self.after_lookup
        elif which == "other":
            histogram = self.latency - self.after_lookup
        else:
            histogram = self.latency
        total = sum(histogram.values())
        if not total:
            return 0.0
        rank, seen = q * total, 0
        for bucket in sorted(histogram):
            seen += histogram[bucket]
            if seen >= rank:
                return (bucket + 1) * BUCKET
        return self.latency_max


def think_seconds(command: str, reply: str, phase: Phase) -> float:
    """How long the caller takes before Asterisk answers this command."""
    if command.startswith("STREAM FILE "):
        sound = command.split(" ", 3)[2]
        full = phase.durations.get(sound.rpartition("/")[2], DEFAULT_PROMPT_MS)
        if "endpos=16000" in reply:        # played to the end
            ms = full
        elif "endpos=800" in reply:        # a key interrupted it
            ms = full / 2
        else:                              # hung up during it, or not played
            ms = 220 if "endpos=1760" in reply else 0
    elif command.startswith("GET DATA "):
        # the prompt, the keys, and the timeout when the caller paused (no barge-in here)
        _, _, sound, timeout, *_ = split_command(command)
        result = reply.rpartition("result=")[2]
        ms = phase.durations.get(sound.rpartition("/")[2], DEFAULT_PROMPT_MS) if sound else 0
        if result.startswith("-1"):
            ms = 0
        else:
            digits = result.split(" ")[0]
            ms += len(digits) * phase.key_ms + (float(timeout) if "(timeout)" in result else 0)
    elif command.startswith("EXEC Read "):
        # Read plays a list of sounds (a&b&c) and takes one key
        sounds = command.split(",")[1].split("&") if "," in command else []
        ms = sum(phase.durations.get(s.rpartition("/")[2], DEFAULT_PROMPT_MS) for s in sounds)
        ms += phase.key_ms
    elif command.startswith("WAIT FOR DIGIT "):
        if reply.endswith("result=0"):
            ms = float(command[15:])        # no key: the whole timeout
        elif reply.endswith("result=-1"):
            ms = 0
        else:
            ms = phase.key_ms
    else:
        return 0.0
    return ms * phase.think_scale / 1000


_RECEIVE = memoryview(bytearray(65536))


class CallProtocol(asyncio.BufferedProtocol):
    """One call: the emulator answers each command line the server sends."""

    __slots__ = ("runner", "emulator", "path", "transport", "sent_at", "buffer", "started")

    def __init__(self, runner: "Runner", emulator: AsteriskEmulator, path: CallPath) -> None:
        self.runner = runner
        self.emulator = emulator
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.buffer = b""
        self.started = time.monotonic()

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        headers = dict(self.emulator.call.headers, agi_arg_1=self.path.name)
        transport.write(encode_headers(headers))
        self.sent_at = time.perf_counter()
        self.runner.opened(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECEIVE

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_RECEIVE[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.buffer:
            data = self.buffer + data
        lines = data.split(b"\n")
        self.buffer = lines.pop()
        runner = self.runner
        for raw in lines:
            command = raw.decode()
            runner.command(now - self.sent_at, self, command)
            reply = self.emulator.reply_to(command)
            think = think_seconds(command, reply, runner.phase) if runner.thinking else 0.0
            if think > 0:
                runner.loop.call_later(think, self.send, reply)
            else:
                self.send(reply)

    def send(self, reply: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(reply.encode() + b"\n")
            self.sent_at = time.perf_counter()

    def connection_lost(self, exc: Exception | None) -> None:
        self.runner.closed(self, exc)


class Runner:
    """The virtual callers of one generator process, for one phase."""

    def __init__(self, phase: Phase) -> None:
        self.phase = phase
        self.loop = asyncio.get_running_loop()
        self.thinking = phase.think_scale > 0
        self.stats = Stats()
        self.calls: set[CallProtocol] = set()
        self.active = 0
        self.measuring = False
        self.stopping = False
        self.mix = itertools.cycle(self._mix(phase.seed + phase.process_index))
        self.numbers = itertools.count(phase.process_index, phase.processes)
        self.done = asyncio.Event()
        self._active_samples: list[int] = []
        self._pending = 0   # connections being opened

    @staticmethod
    def _mix(seed: int) -> list[CallPath]:
        mix = [p for p in PATHS for _ in range(p.weight)]
        random.Random(seed).shuffle(mix)
        return mix

    # -- events from the calls

    def command(self, latency: float, call: CallProtocol, command: str) -> None:
        if self.measuring:
            stats = self.stats
            stats.commands += 1
            stats.latency[int(latency / BUCKET)] += 1
            if latency > stats.latency_max:
                stats.latency_max = latency
            if command.startswith(AFTER_LOOKUP):
                stats.after_lookup[int(latency / BUCKET)] += 1
            if latency > SLOW:   # what the server had just been told
                commands = call.emulator.call.commands
                stats.slow_after[commands[-1].split(" ", 2)[0] if commands else "(header)"] += 1

    def opened(self, call: CallProtocol) -> None:
        self.calls.add(call)
        self.active += 1

    def closed(self, call: CallProtocol, exc: Exception | None) -> None:
        self.calls.discard(call)
        self.active -= 1
        if call.emulator.call.ended == "cut":
            pass
        elif exc is not None:
            self.error("connection lost: " + type(exc).__name__, call)
        else:
            outcome = call.emulator.call.variables.get("IVR_OUTCOME")
            if outcome != call.path.outcome:
                self.error(f"{call.path.name}: outcome {outcome}", call)
            elif self.measuring:
                self.stats.calls += 1
                self.stats.calls_by_path[call.path.name] += 1
        if not self.stopping:
            self.place_call()
        elif not self.calls and not self._pending:
            self.done.set()

    def error(self, reason: str, call: CallProtocol | None = None) -> None:
        self.stats.errors[reason] += 1
        if call is not None and len(self.stats.error_examples) < 3:
            self.stats.error_examples.append(
                f"{reason}: {' | '.join(call.emulator.call.commands[-4:])}")

    # -- placing calls

    def place_call(self) -> None:
        path = next(self.mix)
        n = next(self.numbers)
        caller = ScriptedCaller(path.keys(n))
        emulator = AsteriskEmulator(self.phase.host, self.phase.port, caller,
                                    caller_id=f"08{n:010d}",
                                    call_id=f"{self.phase.seed}.{n}")
        self._pending += 1
        task = self.loop.create_task(self._connect(emulator, path))
        task.add_done_callback(_forget)

    async def _connect(self, emulator: AsteriskEmulator, path: CallPath) -> None:
        try:
            await self.loop.create_connection(lambda: CallProtocol(self, emulator, path),
                                              self.phase.host, self.phase.port)
        except OSError as exc:
            self.error(f"connect failed: {exc.strerror or type(exc).__name__}")
            if not self.stopping:
                self.loop.call_later(0.1, self.place_call)
        finally:
            self._pending -= 1
            if self.stopping and not self.calls and not self._pending:
                self.done.set()

    # -- the phase

    async def run(self) -> Stats:
        phase, loop = self.phase, self.loop
        offset = loop.time() - time.monotonic()   # the loop's clock is monotonic already
        step = phase.ramp / max(phase.callers, 1)
        for i in range(phase.callers):
            loop.call_at(phase.start + offset + i * step, self.place_call)
        loop.call_at(phase.window_start + offset, self._open_window)
        loop.call_at(phase.window_end + offset, self._close_window)
        sampler = loop.create_task(self._sample_active())
        await asyncio.sleep(max(phase.window_end - time.monotonic(), 0))
        while not self.stopping:
            await asyncio.sleep(0.01)
        try:
            async with asyncio.timeout(0 if phase.cut_at_window_end else phase.drain_seconds):
                if self.calls or self._pending:
                    await self.done.wait()
        except TimeoutError:
            pass
        for call in list(self.calls):
            call.emulator.call.ended = "cut"
            call.transport.abort()
        sampler.cancel()
        await asyncio.sleep(0.05)
        return self.stats

    def _open_window(self) -> None:
        self.measuring = True
        self._cpu = time.process_time()

    def _close_window(self) -> None:
        self.measuring = False
        self.stopping = True
        stats = self.stats
        stats.cpu_seconds = time.process_time() - self._cpu
        stats.window = self.phase.window_end - self.phase.window_start
        samples = self._active_samples or [self.active + self._pending]
        stats.active_min, stats.active_max = min(samples), max(samples)
        stats.active_mean = sum(samples) / len(samples)
        now = time.monotonic()
        for call in list(self.calls):
            if now - call.started > self.phase.call_timeout:
                self.error("call timeout", call)

    async def _sample_active(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            if self.measuring:   # calls connected or connecting: the closed loop's level
                self._active_samples.append(self.active + self._pending)


def _forget(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        task.exception()


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_phase(phase: Phase) -> Stats:
    """Run one phase in this process (blocking). The cyclic garbage collector is off
    meanwhile: its pauses would be counted as the server's latency."""
    async def main() -> Stats:
        return await Runner(phase).run()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return asyncio.run(main())
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


def process_main(conn, cpu: int | None = None) -> None:
    """A generator process: runs the phases the parent sends until it sends None."""
    import os
    raise_open_files_limit()
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    while (phase := conn.recv()) is not None:
        try:
            conn.send(run_phase(phase))
        except Exception as exc:   # report, do not hang the parent
            stats = Stats()
            stats.errors[f"generator failed: {exc!r}"] += 1
            conn.send(stats)


__all__ = ["Phase", "Stats", "run_phase", "process_main", "BY_NAME", "raise_open_files_limit"]
