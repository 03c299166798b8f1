"""SIP load through the real Asterisk: ``N`` sipp callers at once, each typing the demo path
with RFC 4733 DTMF (audio both ways), through the project's dialplan into ``ivr serve``;
every call record is checked, and a call whose record is not the demo path's is a call
that lost a key.

    python -m bench.sip --calls 200 300 480 --runs 2     # needs root (sipp's pcap play)
    python -m bench.sip --calls 5                        # a smoke run

Asterisk runs as a sandbox instance of its own (``--name``; ports ``--port-base`` + 4573
AGI, + 5060 SIP, + 5038 AMI; RTP ``--rtp``), ``ivr serve`` and the reference membership
service as processes; all of them share the machine's cores with sipp, so figures are as
noisy as the machine is busy (the load average is printed beside them).

The pcap writer is shared with the tests' SIP calls (``tests/test_asterisk.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .proc import Service, cpu_seconds, free_port

REPO = Path(__file__).resolve().parent.parent
SCENARIO = REPO / "tests" / "sip" / "hotline-caller.xml"
DEMO_CARD, DEMO_BORN = "0001234567890", "17081990"     # active, self-paying
DEMO_KEYS = f"1{DEMO_CARD}#1{DEMO_BORN}"

EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14,
          "D": 15}


def write_dtmf_pcap(path: Path, keys: str, *, wait: float = 2.0, gap: float = 0.25,
                    tone: float = 0.1) -> float:
    """An RTP stream as a phone sends it, in a pcap (Ethernet/IPv4/UDP/RTP): G.711 silence
    every 20 ms, and each key as RFC 4733 telephone-events (payload type 101): packets
    sharing the event's timestamp with a growing duration, the first marked, the end packet
    three times; the next key later. Keys as for the Local caller: ``w``/``W`` pause 0.5/1 s.
    Returns the stream's length in seconds."""
    ptime, rate, ssrc = 0.02, 8000, 0x1500400
    tones: list[tuple[int, int, int]] = []     # (event, first tick, ticks sounding)
    tick = round(wait / ptime)
    for key in keys:
        if key in "wW":
            tick += round((0.5 if key == "w" else 1.0) / ptime)
            continue
        length = round(tone / ptime)
        tones.append((EVENTS[key], tick, length))
        tick += length + 3 + round(gap / ptime)   # the tone, its 3 end packets, the gap
    total = tick + round(0.5 / ptime)
    packets = []
    seq, current = 0, 0
    for t in range(total):
        while current < len(tones) and t >= tones[current][1] + tones[current][2] + 3:
            current += 1
        rtp_ts = t * round(rate * ptime)
        if current < len(tones) and t >= tones[current][1]:
            event, first, length = tones[current]
            ended = t >= first + length
            duration = min(t - first + 1, length) * round(rate * ptime)
            marker = 0x80 if t == first else 0
            header = struct.pack("!BBHII", 0x80, marker | 101, seq, first * round(rate * ptime),
                                 ssrc)
            payload = struct.pack("!BBH", event, (0x80 if ended else 0) | 10, duration)
        else:
            header = struct.pack("!BBHII", 0x80, 0, seq, rtp_ts, ssrc)
            payload = b"\xff" * round(rate * ptime)      # u-law silence
        packets.append((t * ptime, header + payload))
        seq = (seq + 1) & 0xFFFF
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for seconds, rtp in packets:
            frame = _ethernet_ipv4_udp(rtp)
            out.write(struct.pack("<IIII", 1_700_000_000 + int(seconds),
                                  round((seconds % 1) * 1e6), len(frame), len(frame)))
            out.write(frame)
    return total * ptime


def _ethernet_ipv4_udp(payload: bytes, sport: int = 6000, dport: int = 10000) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    total = sum(struct.unpack("!10H", ip))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    ip = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:]
    ethernet = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
    return ethernet + ip + udp


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Level:
    calls: int
    run: int
    seconds: float
    sipp_ok: bool
    records: int
    good: int               # records of the demo path: completed, verified, keys 1 and 1
    lost: int               # calls whose record is not the demo path's: a key was lost
    missing: int            # calls with no record at all
    asterisk_cpu: float     # CPU seconds over the run
    ivr_cpu: float
    load: str               # /proc/loadavg just before the run
    trivial: bool = False   # the control AGI served, not the hotline

    @property
    def ratio(self) -> float:
        return self.ivr_cpu / self.asterisk_cpu if self.asterisk_cpu else 0.0

    def line(self) -> str:
        per_call = 1000 / max(self.calls, 1)
        return (f"{self.calls:4d} calls, run {self.run}{' (trivial AGI)' if self.trivial else ''}: records {self.records}, demo path "
                f"{self.good}, lost a key {self.lost}, no record {self.missing}; "
                f"{self.seconds:.0f} s; CPU per call: Asterisk "
                f"{self.asterisk_cpu * per_call:.0f} ms, IVR {self.ivr_cpu * per_call:.1f} ms "
                f"(ratio {self.ratio:.3f}); sipp {'ok' if self.sipp_ok else 'FAILED'}; "
                f"load average before: {self.load}")


def demo_path(record: dict) -> bool:
    return (record.get("outcome") == "completed" and record.get("verified") is True
            and record.get("member_status") == "AKTIF" and record.get("menu_keys") == ["1", "1"])


def run_level(sandbox, calls: int, run: int, work: Path, *, agi_port: int, sip_port: int,
              membership_url: str, sounds: Path, wait: float, gap: float,
              ivr_src: Path = REPO, trivial: bool = False) -> Level:
    work.mkdir(parents=True, exist_ok=True)
    records = work / "calls.jsonl"
    env = {"IVR_AGI_HOST": "127.0.0.1", "IVR_AGI_PORT": str(agi_port),
           "IVR_MEMBERSHIP_URL": membership_url, "IVR_CALL_RECORDS": str(records),
           "IVR_STATE_DB": str(work / "state.sqlite3"), "IVR_LOCKOUT_SALT": "bench-salt",
           "IVR_SOUNDS_DIR": str(sounds), "IVR_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(ivr_src)}
    command = [sys.executable, "-m", "ivr.cli", "serve"]
    if trivial:
        command = [sys.executable, "-m", "bench.trivial_agi", "--port", str(agi_port),
                   "--records", str(records)]
    ivr = Service("ivr", command, env=env, ready_text="127.0.0.1:" + str(agi_port),
                  log=work / "ivr.log", cwd=ivr_src if not trivial else REPO)
    seconds = write_dtmf_pcap(work / "dtmf.pcap", DEMO_KEYS, wait=wait, gap=gap)
    command = ["sipp", f"127.0.0.1:{sip_port}", "-sf", str(SCENARIO), "-s", "1500400",
               "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mp", str(free_udp_port()),
               "-key", "caller_prefix", f"0813{calls:03d}{run}",
               "-m", str(calls), "-l", str(calls), "-r", str(calls),
               "-d", str(round(seconds * 1000) + 1000), "-nostdin",
               "-timeout", "300s", "-timeout_error", "-trace_err"]
    load = Path("/proc/loadavg").read_text().strip()
    asterisk_pid = sandbox.pid()
    cpu_before = cpu_seconds(asterisk_pid), cpu_seconds(ivr.pid)
    started = time.monotonic()
    try:
        sipp = subprocess.run(command, cwd=work, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=400)
        elapsed = time.monotonic() - started
        time.sleep(1)       # the last calls' records
        cpu_after = cpu_seconds(asterisk_pid), cpu_seconds(ivr.pid)
    finally:
        ivr.stop()
    (work / "sipp.log").write_bytes(sipp.stdout)
    found = [json.loads(line) for line in
             (records.read_text().splitlines() if records.exists() else [])]
    good = sum(demo_path(r) for r in found)
    return Level(calls, run, round(elapsed, 1), sipp.returncode == 0, len(found), good,
                 len(found) - good, max(calls - len(found), 0),
                 round(cpu_after[0] - cpu_before[0], 2), round(cpu_after[1] - cpu_before[1], 2),
                 load, trivial)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, nargs="+", default=[200, 300, 480])
    parser.add_argument("--runs", type=int, default=1, help="runs of each level")
    parser.add_argument("--name", default="load", help="the sandbox instance")
    parser.add_argument("--port-base", type=int, default=20000,
                        help="AGI, SIP and AMI ports: this + 4573, 5060, 5038")
    parser.add_argument("--rtp", default="30000-31998", help="Asterisk's RTP port range")
    parser.add_argument("--wait", type=float, default=3.0,
                        help="seconds from answer to the first key")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="seconds of silence after each 100 ms key (0.3: 2.5 keys/s)")
    parser.add_argument("--sounds", default=str(REPO / "var" / "sounds"))
    parser.add_argument("--ivr-src", default=str(REPO),
                        help="the checkout whose IVR serves (to compare with an older one)")
    parser.add_argument("--trivial", action="store_true",
                        help="the control: a trivial FastAGI (bench/trivial_agi.py) serves")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (records, logs, sipp's output)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from dialplan.sandbox import Sandbox
    o = parse(argv)
    agi_port, sip_port, ami_port = (o.port_base + 4573, o.port_base + 5060,
                                    o.port_base + 5038)
    env = {k: v for k, v in os.environ.items() if k in ("IVR_ASTERISK_ROOT", "IVR_DEBIAN_MIRROR")}
    sandbox = Sandbox(name=o.name, sounds_dir=o.sounds, agi_address=f"127.0.0.1:{agi_port}",
                      sip_address=f"127.0.0.1:{sip_port}", ami_port=ami_port,
                      rtp_ports=o.rtp, env=env)
    failed = False
    tmp = tempfile.mkdtemp(prefix="bench-sip-")
    membership_port = free_port()
    membership = Service("membership", [sys.executable, "-m", "ivr.cli", "membership",
                                        "--port", str(membership_port),
                                        "--db", f"{tmp}/membership.sqlite3"],
                         port=membership_port, log=Path(tmp) / "membership.log", cwd=REPO)
    try:
        sandbox.down()
        sandbox.up(timeout=120)
        for calls in o.calls:
            for run in range(1, o.runs + 1):
                level = run_level(sandbox, calls, run, Path(tmp) / f"{calls}-{run}",
                                  agi_port=agi_port, sip_port=sip_port, sounds=Path(o.sounds),
                                  membership_url=f"http://127.0.0.1:{membership_port}",
                                  wait=o.wait, gap=o.gap, ivr_src=Path(o.ivr_src),
                                  trivial=o.trivial)
                print(level.line(), flush=True)
                print(json.dumps({"bench": "sip", **asdict(level),
                                  "ratio": round(level.ratio, 4)}), flush=True)
                failed |= level.lost > 0 or level.missing > 0 or not level.sipp_ok
                time.sleep(3)   # the last run's channels are gone
    finally:
        sandbox.down()
        membership.stop()
        if o.keep:
            print(f"work folder: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
