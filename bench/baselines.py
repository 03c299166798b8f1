"""The two baselines, each replaying the command sequences the hotline produced.

- ``raw``: the least a FastAGI server can do on asyncio, the ceiling of Python here: an
  ``asyncio.Protocol`` that finds the end of the header block, then for each reply line
  (skipping ``HANGUP``) checks its code and writes the next command; no task, no parsing.
- ``streams``: the same on asyncio streams (``start_server``, ``readline``), the API most
  asyncio servers and panoramisk use; shown for reference.
- ``panoramisk``: panoramisk 1.4's ``fast_agi.Application``, used bare: one ``async def``
  endpoint that sends the commands with ``Request.send_command``. When a ``HANGUP`` line
  comes before a reply, panoramisk returns it as the result; the endpoint then reads the
  reply that follows (panoramisk would otherwise be one reply out of step).

Both check each reply's code against the recording and count differences. Run as
``python -m bench.baselines raw|streams|panoramisk --port N --sequences FILE``; SIGTERM stops it
and it prints its counts as one JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

BACKLOG = 4096
KINDS = ("raw", "streams", "panoramisk")


def load_sequences(path: str) -> dict[str, list[tuple[str, str]]]:
    """path name → [(command, the code of its final reply line)]."""
    recorded = json.loads(Path(path).read_text())
    return {name: [(command, reply.rsplit("\n", 1)[-1][:3]) for command, reply in exchanges]
            for name, exchanges in recorded.items()}


class Counts:
    def __init__(self) -> None:
        self.calls = 0
        self.commands = 0
        self.mismatches = 0
        self.unknown_paths = 0


_RECEIVE = memoryview(bytearray(65536))


class RawProtocol(asyncio.BufferedProtocol):
    """The raw baseline: one call, driven from ``data_received`` alone. Buffered, with one
    receive buffer for all connections (as the hotline server does): a plain Protocol costs
    three more system calls per read in asyncio 3.11."""

    def __init__(self, encoded: dict[str, list[tuple[bytes, bytes]]], counts: Counts) -> None:
        self.encoded = encoded
        self.counts = counts
        self.buffer = b""
        self.steps: list[tuple[bytes, bytes]] | None = None
        self.next = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECEIVE

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_RECEIVE[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        data = self.buffer + data if self.buffer else data
        if self.steps is None:
            end = data.find(b"\n\n")
            if end < 0:
                self.buffer = data
                return
            start = data.find(b"\nagi_arg_1: ") + 12
            self.steps = self.encoded.get(data[start:data.index(b"\n", start)].decode())
            if self.steps is None:
                self.counts.unknown_paths += 1
                self.transport.close()
                return
            data = data[end + 2:]
            self.transport.write(self.steps[0][0])
        *lines, self.buffer = data.split(b"\n")
        for line in lines:
            if line == b"HANGUP":
                continue
            counts = self.counts
            counts.commands += 1
            if line[:3] != self.steps[self.next][1]:
                counts.mismatches += 1
            self.next += 1
            if self.next == len(self.steps):
                counts.calls += 1
                self.transport.close()
                return
            self.transport.write(self.steps[self.next][0])


def encode(sequences: dict[str, list[tuple[str, str]]]) -> dict[str, list[tuple[bytes, bytes]]]:
    return {name: [(command.encode() + b"\n", code.encode()) for command, code in seq]
            for name, seq in sequences.items()}


def streams_handler(sequences: dict[str, list[tuple[str, str]]], counts: Counts):
    encoded = encode(sequences)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\n\n")
            start = head.find(b"\nagi_arg_1: ") + 12
            steps = encoded.get(head[start:head.index(b"\n", start)].decode())
            if steps is None:
                counts.unknown_paths += 1
                return
            for command, code in steps:
                writer.write(command)
                line = await reader.readline()
                while line == b"HANGUP\n":
                    line = await reader.readline()
                if not line:
                    break
                counts.commands += 1
                if line[:3] != code:
                    counts.mismatches += 1
            counts.calls += 1
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
    return handle


def panoramisk_app(sequences: dict[str, list[tuple[str, str]]], counts: Counts):
    from panoramisk.fast_agi import Application
    from panoramisk.utils import parse_agi_result

    async def replay(request) -> None:
        steps = sequences.get(request.headers.get("agi_arg_1", ""))
        if steps is None:
            counts.unknown_paths += 1
            return
        for command, code in steps:
            result = await request.send_command(command)
            if result.get("error") == "AGIResultHangup":
                line = await request.reader.readline()
                result = parse_agi_result(line.decode()[:-1])
            counts.commands += 1
            got = result.get("status_code", 200 if result.get("error") == "AGIAppError" else 0)
            if str(got) != code:
                counts.mismatches += 1
        counts.calls += 1

    app = Application()
    app.add_route("hotline", replay)
    return app.handler


async def serve(kind: str, host: str, port: int, sequences_file: str) -> Counts:
    sequences = load_sequences(sequences_file)
    counts = Counts()
    if kind == "raw":
        encoded = encode(sequences)
        server = await asyncio.get_running_loop().create_server(
            lambda: RawProtocol(encoded, counts), host, port, backlog=BACKLOG)
    else:
        handler = streams_handler(sequences, counts) if kind == "streams" else \
            panoramisk_app(sequences, counts)
        server = await asyncio.start_server(handler, host, port, backlog=BACKLOG)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{kind} baseline on {host}:{port}", flush=True)
    await stop.wait()
    server.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sequences", required=True)
    args = parser.parse_args(argv)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    counts = asyncio.run(serve(args.kind, args.host, args.port, args.sequences))
    print(json.dumps(vars(counts)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
