"""The record forwarder's figures: insert throughput into each engine, and the time from a
call record written to it being in the store.

    python -m bench.store [--postgres URL] [--records 20000] [--latency-records 300]

SQLite always (a temporary file); PostgreSQL when a URL of an empty database is given.
Throughput: a file of ``--records`` call records is forwarded into an empty store.
Latency: records written one at a time (20 per second) by a RecordWriter while the
forwarder runs; a record is in the store when the put that holds it has committed. Once
woken by the writer (the IVR's own process) and once by polling alone (another worker
process's writes).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from ivr.records import CallRecord, RecordWriter
from ivr.store.forwarder import RecordForwarder
from ivr.store.postgres import PostgresStore
from ivr.store.sqlite import SqliteStore


def _record(i: int) -> CallRecord:
    # A typical record: a verified call with a dozen transcript lines.
    return CallRecord(call_id=f"bench-{i}", caller="0812*****78", channel="PJSIP/x-1",
                      extension="1500400", outcome="completed", verified=True,
                      member_status="AKTIF", identifier_masked="0001******890",
                      participant_ref=f"{i % 5000:064x}", menu_keys=["1", "1", "2"],
                      membership_latency_ms=12.3, membership_lookups=1,
                      transcript=[f"ivr: prompt {n} of the call" for n in range(12)])


class _Timed:
    """The store, noting when each record's put has committed."""

    def __init__(self, store) -> None:
        self.store = store
        self.committed: dict[str, float] = {}

    def __getattr__(self, name):
        return getattr(self.store, name)

    async def put_records(self, records, source, offset):
        await self.store.put_records(records, source, offset)
        now = time.perf_counter()
        for r in records:
            self.committed[r["call_id"]] = now


async def throughput(make_store, folder: str, count: int) -> float:
    path = os.path.join(folder, "throughput.jsonl")
    writer = RecordWriter(path)
    for i in range(count):
        writer.write(_record(i))
    writer.close()
    store = make_store()
    await store.open()
    forwarder = RecordForwarder(store, path)
    started = time.perf_counter()
    await forwarder.start()
    size = os.path.getsize(path)
    while await store.forwarded_offset(forwarder.source) < size:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await forwarder.stop()
    await store.close()
    return count / elapsed


async def latency(make_store, folder: str, count: int, woken: bool) -> list[float]:
    path = os.path.join(folder, f"latency-{woken}.jsonl")
    store = _Timed(make_store())
    await store.open()
    forwarder = RecordForwarder(store, path)
    writer = RecordWriter(path, on_written=forwarder.wake if woken else None)
    await forwarder.start()
    written = {}
    for i in range(count):
        record = _record(100_000 + i)
        written[record.call_id] = time.perf_counter()
        writer.write(record)
        await asyncio.sleep(0.05)
    writer.close()
    while len(store.committed) < count:
        await asyncio.sleep(0.01)
    await forwarder.stop()
    await store.close()
    return sorted((store.committed[k] - t) * 1000 for k, t in written.items())


def _percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def run(args) -> None:
    engines = {"sqlite": None}
    if args.postgres:
        engines["postgresql"] = args.postgres
    print(f"{'engine':<11} {'records/s':>10} {'woken p50 ms':>13} {'p99 ms':>7} "
          f"{'polled p50 ms':>14} {'p99 ms':>7}")
    for name, url in engines.items():
        with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
            def make_store(url=url, folder=folder):
                if url:
                    return PostgresStore(url)
                return SqliteStore(os.path.join(folder, "store.sqlite3"))
            rate = await throughput(make_store, folder, args.records)
            woken = await latency(make_store, folder, args.latency_records, True)
            polled = await latency(make_store, folder, args.latency_records, False)
        print(f"{name:<11} {rate:>10.0f} {statistics.median(woken):>13.1f} "
              f"{_percentile(woken, 99):>7.1f} {statistics.median(polled):>14.1f} "
              f"{_percentile(polled, 99):>7.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="", help="URL of an empty PostgreSQL database")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--latency-records", type=int, default=300)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
