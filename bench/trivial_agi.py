"""The SIP benchmark's control: a trivial FastAGI that asks for the demo path's four entries
with one ``GET DATA`` each (with their prompts; no read-back, look-up or status), checks
them and says goodbye. Run beside the hotline at the same moment, it shows what Asterisk
and this machine carry by themselves: a key it loses was not lost by the IVR.

    python -m bench.trivial_agi --port 24573 --records calls.jsonl

Records (one JSON line per call, written when it stops) have the fields the benchmark
checks: ``outcome``, ``verified``, ``member_status``, ``menu_keys``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from ivr.agi.server import AgiServer

from .sip import DEMO_BORN, DEMO_CARD

STEPS = [("bpjs/main-menu", 5000, 1, "1"), ("bpjs/enter-id", 6000, 16, DEMO_CARD),
         ("bpjs/confirm-id", 5000, 1, "1"), ("bpjs/enter-birth-date", 6000, 8, DEMO_BORN)]


async def serve(port: int, records: Path) -> None:
    written: list[dict] = []

    async def route(session) -> None:
        await session.send("ANSWER")
        got = []
        for sound, ms, keys, _ in STEPS:
            reply = await session.send("GET DATA", sound, ms, keys, expect_seconds=60)
            got.append(reply.result)
            if session.hung_up or reply.result == "-1":
                break
        ok = got == [expected for *_, expected in STEPS]
        written.append({"outcome": "completed" if ok else "lost", "verified": ok,
                        "member_status": "AKTIF" if ok else None,
                        "menu_keys": ["1", "1"] if ok else [len(k) for k in got]})
        await session.send("STREAM FILE", "bpjs/goodbye", "", expect_seconds=30)
        await session.send("SET VARIABLE", "__IVR_OUTCOME", "completed")

    server = AgiServer({"hotline": route})
    await server.start("127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"trivial FastAGI on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await server.close(drain_seconds=1)
    records.write_text("".join(json.dumps(r) + "\n" for r in written))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trivial_agi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--records", type=Path, required=True)
    o = parser.parse_args()
    asyncio.run(serve(o.port, o.records))


if __name__ == "__main__":
    main()
