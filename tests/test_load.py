"""500 concurrent emulated calls complete correctly while 50 malformed peers connect,
stall and disconnect: one broken session never disturbs another."""
from __future__ import annotations

import asyncio
import random
from dataclasses import replace

from ivr.app import running_server
from ivr.emulator import asterisk_headers, encode_headers, place_call

CARD, BORN = "0001234567890", "17081990"
# {n}: a number unique to the call, so that failed verifications never add up to a lockout
SCRIPTS = {
    f"1 {CARD}# 1 {BORN}": ("completed", "1"),
    "0": ("transfer", "0"),
    f"1 000199999{{n:04d}}# 1 {BORN} h": ("abandoned", "0"),
    "2 9 0": ("transfer", "0"),
}


async def malformed_peer(port: int, kind: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kind == 0:      # part of a header block, then gone
            writer.write(b"agi_network: yes\nagi_req")
        elif kind == 1:    # a header block, then silence until the server gives up or we do
            writer.write(encode_headers(asterisk_headers("9.9", caller="1")))
            await asyncio.sleep(1.0)
        elif kind == 2:    # garbage instead of a header block
            writer.write(b"\x00\xff GET / HTTP/1.1\r\n\r\n")
        elif kind == 3:    # a header block, then a reply that is not FastAGI
            writer.write(encode_headers(asterisk_headers("9.8", caller="1")))
            await reader.readline()
            writer.write(b"this is not a reply\n")
        else:              # connect and stall without a byte
            await asyncio.sleep(1.0)
        await writer.drain()
        await asyncio.wait_for(reader.read(), timeout=5)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()


async def test_500_calls_and_50_malformed_peers(settings):
    settings = replace(settings, header_timeout=0.5, reply_timeout=3)
    rng = random.Random(7)
    scripts = [rng.choice(list(SCRIPTS)) for _ in range(500)]
    async with running_server(settings) as (server, app):
        port = server.port
        calls = [place_call("127.0.0.1", port, keys.format(n=i), caller_id=f"0812{i:08d}",
                            timeout=60)
                 for i, keys in enumerate(scripts)]
        bad = [malformed_peer(port, i % 5) for i in range(50)]
        results = await asyncio.gather(*calls, *bad)
        assert app.records.flush(10)
    for keys, call in zip(scripts, results[:500]):
        outcome, verified = SCRIPTS[keys]
        assert call.variables.get("IVR_OUTCOME") == outcome, (keys, call.ended)
        assert call.variables["IVR_VERIFIED"] == verified
    assert server.rejected >= 30
