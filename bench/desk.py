"""The agent desk's figures: time from Asterisk ringing an agent to the ``ringing`` event on
that agent's stream, with many callers waiting and many agents logged in, and the desk's
memory per logged-in agent.

    python -m bench.desk [--callers 500] [--agents 50] [--rings 300] [--churn 20]

The desk runs as it does in production, ``ivr desk`` in its own process, against the
project's fake AMI server (``tests/fake_ami.py``, Asterisk 22's framing and fields) in this
process. Every agent logs in over HTTP, then opens its event stream (SSE) and sets
"ready" (QueueAdd through AMI): the memory per agent is what that second step adds. Then ``--callers`` callers join the queue, and while
``--churn`` callers a second join and leave (queue board updates to every agent), the
server rings one agent at a time (``AgentCalled``) and the clock runs until that agent's
stream says ``ringing``. Both ends are in this process: one clock.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.proc import Service, free_port, rss_bytes
from ivr.desk.accounts import hash_password
from tests.fake_ami import FakeAmi

PASSWORD = "bench-agent-password"
SECRET = "bench-ami-secret"


def accounts_file(folder: Path, agents: int) -> Path:
    digest = hash_password(PASSWORD)            # one hash: every agent the same password
    path = folder / "agents.toml"
    path.write_text("".join(
        f'[[agent]]\nid = "agent{i}"\nname = "Agent {i}"\ninterface = "PJSIP/agent{i}"\n'
        f'password_hash = "{digest}"\n\n' for i in range(1, agents + 1)))
    return path


class Stream:
    """One agent's browser: a session cookie and its event stream, read in the background."""

    def __init__(self, url: str, agent: str) -> None:
        self.url, self.agent = url, agent
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          headers={"Origin": url})
        self.rung: dict[str, float] = {}
        self.bytes = 0
        self.task: asyncio.Task | None = None

    async def login(self) -> None:
        async with self.http.post(self.url + "/login", allow_redirects=False,
                                  data={"username": self.agent, "password": PASSWORD}) as r:
            assert r.status == 303, r.status

    async def ready(self) -> None:
        self.task = asyncio.create_task(self.read())
        async with self.http.post(self.url + "/api/me/state", json={"state": "ready"}) as r:
            assert r.status == 200, await r.text()

    async def read(self) -> None:
        async with self.http.get(self.url + "/api/events", timeout=aiohttp.ClientTimeout()) as r:
            name = ""
            async for raw in r.content:
                self.bytes += len(raw)
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:") and name == "ringing":
                    self.rung[json.loads(line[5:])["call_id"]] = time.perf_counter()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.http.close()


async def run(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="bench-desk-"))
    ami = await FakeAmi(secret=SECRET).start()
    port = free_port()
    env = {"IVR_AMI_PORT": str(ami.port), "IVR_AMI_SECRET": SECRET,
           "IVR_DESK_AGENTS": str(accounts_file(folder, args.agents)),
           "IVR_DESK_PORT": str(port), "IVR_STORE_DB": str(folder / "store.sqlite3"),
           "IVR_CALL_RECORDS": str(folder / "calls.jsonl"), "IVR_LOG_LEVEL": "WARNING",
           "IVR_DESK_LOGIN_ADDRESS_FAILURES": "1000"}
    desk = Service("desk", [sys.executable, "-m", "ivr.cli", "desk"], env=env, port=port,
                   log=folder / "desk.log")
    url = f"http://127.0.0.1:{port}"
    streams: list[Stream] = []
    try:
        await asyncio.sleep(0.5)
        for i in range(1, args.agents + 1):
            stream = Stream(url, f"agent{i}")
            await stream.login()                 # scrypt's memory is counted before
            streams.append(stream)
        await asyncio.sleep(0.5)
        idle_rss = rss_bytes(desk.pid)
        for stream in streams:
            await stream.ready()
        await asyncio.sleep(1.0)
        agents_rss = rss_bytes(desk.pid)
        callers = [ami.caller_join({"IVR_CALL_ID": f"bench-{n}", "IVR_VERIFIED": "1",
                                    "IVR_CARD": "0001234567890", "IVR_MEMBER_STATUS": "AKTIF",
                                    "IVR_TRANSFER_REASON": "caller_request"})
                   for n in range(args.callers)]
        await asyncio.sleep(1.0)
        loaded_rss = rss_bytes(desk.pid)

        async def churn() -> None:
            n = args.callers
            while True:
                await asyncio.sleep(1 / args.churn)
                n += 1
                caller = ami.caller_join({"IVR_CALL_ID": f"churn-{n}", "IVR_VERIFIED": "0"})
                await asyncio.sleep(1 / args.churn)
                ami.caller_leave(caller, abandon=True)

        churning = asyncio.create_task(churn()) if args.churn else None
        latencies = []
        try:
            for ring in range(args.rings):
                stream = random.choice(streams)
                caller = callers[ring % len(callers)]
                call_id = caller.variables["IVR_CALL_ID"]
                stream.rung.pop(call_id, None)
                started = time.perf_counter()
                ami.agent_called(caller, stream.agent)
                deadline = started + 10
                while call_id not in stream.rung:
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"no ringing for {call_id} on {stream.agent}")
                    await asyncio.sleep(0.0005)
                latencies.append((stream.rung[call_id] - started) * 1000)
                ami.agent_ring_no_answer(caller, stream.agent)
                await asyncio.sleep(0.02)
        finally:
            if churning is not None:
                churning.cancel()
        latencies.sort()
        quantile = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
        return {
            "callers_waiting": args.callers, "agents_logged_in": args.agents,
            "rings": len(latencies), "churn_per_s": args.churn,
            "ring_to_stream_ms": {"p50": round(statistics.median(latencies), 2),
                                  "p99": round(quantile(0.99), 2),
                                  "max": round(latencies[-1], 2)},
            "desk_rss_mb": {"logged_in": round(idle_rss / 2**20, 1),
                            "agents": round(agents_rss / 2**20, 1),
                            "loaded": round(loaded_rss / 2**20, 1)},
            "rss_per_agent_kb": round((agents_rss - idle_rss) / args.agents / 1024, 1),
            "stream_bytes_per_agent": round(sum(s.bytes for s in streams) / len(streams)),
        }
    finally:
        for stream in streams:
            await stream.close()
        desk.stop()
        await asyncio.sleep(0.3)          # the desk's AMI session ends before the server does
        await ami.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.desk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=500)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--rings", type=int, default=300)
    parser.add_argument("--churn", type=float, default=20.0,
                        help="callers joining (and others leaving) per second meanwhile")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
