"""Membership client overhead: ``MembershipClient.lookup`` against the reference service on
loopback, compared with the service's own latency as seen by the thinnest client possible
(one kept-alive socket per concurrent request, a hand-written GET, the response read by its
Content-Length). Batches of the two alternate, so that drift affects both alike.

Run in a process of its own (the benchmark does), so that the figures are not disturbed
by a server under load.
"""
from __future__ import annotations

import asyncio
import time

from ivr.membership.client import MembershipClient

from .paths import DEMO_CARD


class RawHttp:
    """Keep-alive GETs on one connection, nothing else: the service's latency plus the
    least a client can add."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          f"Accept: application/json\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        return body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def measure(url: str, *, lookups: int = 4000, concurrency: int = 1,
                  batch: int = 200) -> dict:
    """Latency samples of both clients, alternating batches of ``batch`` lookups."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    path = f"/v1/participants/{DEMO_CARD}"
    ours: list[float] = []
    raw: list[float] = []
    cpu = {"ours": 0.0, "raw": 0.0}
    async with MembershipClient(url) as client:
        raws = [RawHttp(host, int(port)) for _ in range(concurrency)]

        async def one_ours(i: int) -> None:
            started = time.perf_counter()
            await client.lookup(DEMO_CARD, f"bench.{i}")
            ours.append(time.perf_counter() - started)

        async def one_raw(i: int) -> None:
            started = time.perf_counter()
            await raws[i % concurrency].get(path)
            raw.append(time.perf_counter() - started)

        async def run_batch(kind: str, one, start: int) -> None:
            cpu_before = time.process_time()
            for first in range(start, start + batch, concurrency):
                await asyncio.gather(*(one(i) for i in range(first, first + concurrency)))
            cpu[kind] += time.process_time() - cpu_before

        # warm up both (connections, caches), then measure
        await run_batch("ours", one_ours, 0)
        await run_batch("raw", one_raw, 0)
        ours.clear(), raw.clear()
        cpu.update(ours=0.0, raw=0.0)
        for start in range(0, lookups, batch):
            await run_batch("ours", one_ours, start)
            await run_batch("raw", one_raw, start)
        for r in raws:
            r.close()
    result = {"concurrency": concurrency, "lookups": len(ours)}
    for name, samples in (("client", ours), ("service", raw)):
        result[f"{name}_p50_ms"] = round(_percentile(samples, 0.50) * 1000, 3)
        result[f"{name}_p99_ms"] = round(_percentile(samples, 0.99) * 1000, 3)
    result["overhead_p99_ms"] = round(result["client_p99_ms"] - result["service_p99_ms"], 3)
    result["overhead_p50_ms"] = round(result["client_p50_ms"] - result["service_p50_ms"], 3)
    result["client_cpu_us_per_lookup"] = round(cpu["ours"] / max(len(ours), 1) * 1e6, 1)
    result["raw_cpu_us_per_lookup"] = round(cpu["raw"] / max(len(raw), 1) * 1e6, 1)
    return result


def run(url: str, lookups: int, concurrencies: tuple[int, ...] = (1, 16)) -> list[dict]:
    return [asyncio.run(measure(url, lookups=lookups, concurrency=c)) for c in concurrencies]


if __name__ == "__main__":
    import json
    import sys
    for row in run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4000):
        print(json.dumps(row))
