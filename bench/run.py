"""The FastAGI load benchmark: the hotline server as Asterisk loads it, against the best a
Python FastAGI server can do on the same machine in the same run.

    python -m bench            # the default run, a few minutes; writes bench/RESULTS.md
    python -m bench --smoke    # seconds: keeps the benchmark working (CI)
    ivr bench ...              # the same

What runs where: each server under test is a process of its own, pinned to the first core;
the load generator's processes and the reference membership service share the other core(s)
(so neither's CPU is counted as the server's). Server CPU and memory come from /proc.

Phases, all in one run:
1. record: one call per scripted path against the hotline, through the emulator; the
   baselines replay exactly these commands and expect the same reply codes;
2. hold, per server (a fresh process): ``--hold-calls`` calls at once, each reply delayed
   by the caller's think time (prompt durations × ``--think-scale``); reply latency, RSS
   per call held, errors;
3. throughput, rounds of every server in turn (so drift hits all alike): ``--callers``
   calls at once with no think time; calls/s, AGI commands/s, CPU per call;
4. workers: ``ivr serve --workers N`` for N = 1 and N = cores, unpinned, no think time;
5. membership: the client's latency over the reference service's own.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import paths, proc
from .generator import Phase, Stats, process_main, raise_open_files_limit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SERVERS = ("hotline", "raw", "panoramisk", "streams")
HOLD_SERVERS = ("hotline", "raw", "panoramisk")

TARGETS = {
    "held_calls": 10_000,
    "p99_ms": 10.0,
    "rss_kb_per_call": 20.0,
    "vs_panoramisk": 1.5,
    "vs_raw": 0.6,
    "membership_overhead_p99_ms": 1.0,
}


@dataclass
class Options:
    callers: int = 200
    seconds: float = 6.0
    warmup: float = 2.0
    rounds: int = 3
    hold_calls: int = 10_000
    ramp: float = 15.0
    hold_seconds: float = 20.0
    think_scale: float = 1.0
    key_ms: float = 400.0
    generators: int = 2
    servers: tuple[str, ...] = SERVERS
    workers: int = 0            # 0: as many as cores
    membership_lookups: int = 3000
    profile: bool = False
    smoke: bool = False
    write_results: bool = True
    command: str = ""


SMOKE = dict(callers=20, seconds=1.5, warmup=0.5, rounds=1, hold_calls=200, ramp=1.0,
             hold_seconds=1.5, think_scale=0.02, generators=1, membership_lookups=200,
             servers=("hotline", "raw", "panoramisk"))


# -- the processes


class Lab:
    """Everything started for one run, and what it needs: a temporary directory, the
    core layout, the membership service, the generator processes."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.tmp = Path(tempfile.mkdtemp(prefix="ivr-bench-"))
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) >= 2:
            self.server_cpus: set[int] | None = {cores[0]}
            self.load_cpus: set[int] | None = set(cores[1:])
        else:
            self.server_cpus = self.load_cpus = None
        self.services: list[proc.Service] = []
        self.generators: list = []
        self.membership_url = ""
        self.sequences = self.tmp / "sequences.json"
        self.durations: dict[str, int] = {}

    def start(self) -> None:
        raise_open_files_limit()   # inherited by every process started from here
        self.durations = _durations(self.tmp)
        db = self.tmp / "membership.sqlite3"
        paths.seed_membership_db(db)
        port = proc.free_port()
        self.membership = self._service(
            "membership", [sys.executable, "-m", "ivr.cli", "membership", "--host",
                           "127.0.0.1", "--port", str(port), "--db", str(db)],
            port=port, cpus=self.load_cpus)
        self.membership_url = f"http://127.0.0.1:{port}"
        ctx = multiprocessing.get_context("spawn")
        cpu_list = sorted(self.load_cpus) if self.load_cpus else [None]
        for i in range(self.options.generators):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=process_main, args=(child, cpu_list[i % len(cpu_list)]),
                                  daemon=True)
            process.start()
            self.generators.append((process, parent))

    def _service(self, name: str, command: list[str], **kwargs) -> proc.Service:
        service = proc.Service(name, command, log=self.tmp / f"{name}-{len(self.services)}.log",
                               cwd=ROOT, **kwargs)
        self.services.append(service)
        return service

    def server(self, kind: str, *, workers: int | None = None, pinned: bool = True
               ) -> proc.Service:
        port = proc.free_port()
        cpus = self.server_cpus if pinned else None
        if kind == "hotline":
            command = [sys.executable, "-m", "ivr.cli", "serve"]
            if workers is not None:
                command += ["--workers", str(workers)]
            return self._service(kind, command, env=self.hotline_env(port), port=port,
                                 cpus=cpus)
        return self._service(kind, [sys.executable, "-m", "bench.baselines", kind,
                                    "--port", str(port), "--sequences", str(self.sequences)],
                             port=port, cpus=cpus, ready_text="baseline on")

    def hotline_env(self, port: int) -> dict[str, str]:
        n = len(self.services)
        return {"IVR_AGI_HOST": "127.0.0.1", "IVR_AGI_PORT": str(port),
                "IVR_MEMBERSHIP_URL": self.membership_url,
                "IVR_STATE_DB": str(self.tmp / f"state-{n}.sqlite3"),
                "IVR_STORE_DB": str(self.tmp / f"store-{n}.sqlite3"),
                "IVR_CALL_RECORDS": str(self.tmp / f"calls-{n}.jsonl"),
                "IVR_SOUNDS_DIR": str(self.sounds_dir)}

    @property
    def sounds_dir(self) -> Path:
        return Path(os.environ.get("IVR_SOUNDS_DIR", ROOT / "var" / "sounds"))

    def run_phase(self, phase: Phase, server: proc.Service) -> tuple[Stats, dict]:
        """Run a phase on every generator process; sample the server meanwhile."""
        n = len(self.generators)
        shares = [phase.callers // n + (1 if i < phase.callers % n else 0) for i in range(n)]
        for i, (_, conn) in enumerate(self.generators):
            conn.send(Phase(**{**phase.__dict__, "callers": shares[i], "process_index": i,
                               "processes": n}))
        sample = ServerSample(server, phase)
        sample.start()
        total = Stats()
        for _, conn in self.generators:
            total.merge(conn.recv())
        sample.join()
        return total, sample.figures

    def stop(self) -> None:
        for _, conn in self.generators:
            try:
                conn.send(None)
            except OSError:
                pass
        for process, _ in self.generators:
            process.join(5)
            if process.is_alive():
                process.kill()
        for service in reversed(self.services):
            service.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class ServerSample(threading.Thread):
    """CPU time and RSS of the server's processes over a phase's window."""

    def __init__(self, server: proc.Service, phase: Phase) -> None:
        super().__init__(daemon=True)
        self.server, self.phase = server, phase
        self.figures: dict = {}

    def run(self) -> None:
        pid = self.server.pid
        self.figures["rss_idle"] = proc.rss_bytes(pid)
        self.figures["fds_idle"] = proc.open_fds(pid)
        _sleep_until(self.phase.window_start)
        cpu0, t0 = proc.cpu_seconds(pid), time.monotonic()
        rss_max = fds_min = 0
        fds_min = 1 << 30
        while time.monotonic() < self.phase.window_end - 0.05:
            rss_max = max(rss_max, proc.rss_bytes(pid))
            fds_min = min(fds_min, proc.open_fds(pid))
            time.sleep(min(0.5, max(self.phase.window_end - time.monotonic() - 0.05, 0.01)))
        _sleep_until(self.phase.window_end)
        self.figures.update(cpu=proc.cpu_seconds(pid) - cpu0, wall=time.monotonic() - t0,
                            rss_max=max(rss_max, proc.rss_bytes(pid)), fds_min=fds_min)


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _durations(tmp: Path) -> dict[str, int]:
    from prompts.render import load_durations
    sounds = Path(os.environ.get("IVR_SOUNDS_DIR", ROOT / "var" / "sounds"))
    durations = load_durations(sounds)
    if not durations:
        print(f"rendering the prompts into {sounds} (prompt durations give the think time)",
              flush=True)
        subprocess.run([sys.executable, "-m", "ivr.cli", "prompts", "render", "--out",
                        str(sounds)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        durations = load_durations(sounds)
    return durations


# -- the phases


def throughput_phase(lab: Lab, name: str, port: int) -> Phase:
    o = lab.options
    start = time.monotonic() + 0.3
    return Phase(name, "127.0.0.1", port, o.callers, start, ramp=min(0.5, o.warmup),
                 window_start=start + o.warmup, window_end=start + o.warmup + o.seconds,
                 durations=lab.durations, seed=int(start * 1000) % 100000,
                 drain_seconds=5.0, call_timeout=60.0)


def hold_phase(lab: Lab, name: str, port: int) -> Phase:
    o = lab.options
    start = time.monotonic() + 0.3
    return Phase(name, "127.0.0.1", port, o.hold_calls, start, ramp=o.ramp,
                 window_start=start + o.ramp + 1.0,
                 window_end=start + o.ramp + 1.0 + o.hold_seconds,
                 think_scale=o.think_scale, key_ms=o.key_ms, durations=lab.durations,
                 seed=int(start * 1000) % 100000, cut_at_window_end=True, call_timeout=600.0)


def _figures(stats: Stats, server: dict) -> dict:
    window = stats.window or 1.0
    cpu = server.get("cpu", 0.0)
    return {
        "calls_per_s": round(stats.calls / window, 1),
        "commands_per_s": round(stats.commands / window, 1),
        "p50_ms": round(stats.percentile(0.50) * 1000, 3),
        "p99_ms": round(stats.percentile(0.99) * 1000, 3),
        "max_ms": round(stats.latency_max * 1000, 3),
        "p99_ms_without_lookups": round(stats.percentile(0.99, "other") * 1000, 3),
        "p99_ms_after_lookups": round(stats.percentile(0.99, "lookup") * 1000, 3),
        "replies_after_lookups": sum(stats.after_lookup.values()),
        "server_cpu_pct": round(100 * cpu / (server.get("wall") or window), 1),
        "cpu_ms_per_call": round(1000 * cpu / stats.calls, 3) if stats.calls else None,
        "commands_per_cpu_s": round(stats.commands / cpu) if cpu else None,
        "generator_cpu_pct": round(100 * stats.cpu_seconds / window, 1),
        "generator_commands_per_cpu_s": round(stats.commands / stats.cpu_seconds)
        if stats.cpu_seconds else None,
        "active_min": stats.active_min, "active_mean": round(stats.active_mean, 1),
        "errors": sum(stats.errors.values()),
        "error_kinds": dict(stats.errors.most_common(5)),
        "error_examples": stats.error_examples[:2],
        "calls_by_path": dict(stats.calls_by_path),
        "slow_replies_after": dict(stats.slow_after.most_common(6)),
    }


def record(lab: Lab) -> None:
    server = lab.server("hotline")
    try:
        recorded = asyncio.run(paths.record_paths("127.0.0.1", server.port))
    finally:
        server.stop()
    lab.sequences.write_text(json.dumps(recorded))
    lab.recorded = {name: len(exchanges) for name, exchanges in recorded.items()}


def hold(lab: Lab, kind: str) -> dict:
    server = lab.server(kind)
    time.sleep(0.5)
    try:
        stats, sample = lab.run_phase(hold_phase(lab, kind, server.port), server)
    finally:
        server.stop()
    figures = _figures(stats, sample)
    held = stats.active_min
    figures["held"] = held
    figures["server_connections_min"] = sample["fds_min"] - sample["fds_idle"]
    figures["rss_idle_mb"] = round(sample["rss_idle"] / 2**20, 1)
    figures["rss_mb"] = round(sample["rss_max"] / 2**20, 1)
    figures["rss_kb_per_call"] = round((sample["rss_max"] - sample["rss_idle"]) / 1024 /
                                       max(stats.active_mean, 1), 2)
    return figures


def throughput(lab: Lab) -> dict[str, dict]:
    servers = {kind: lab.server(kind) for kind in lab.options.servers}
    rounds: dict[str, list[dict]] = {kind: [] for kind in servers}
    try:
        for r in range(lab.options.rounds):
            for kind, server in servers.items():
                stats, sample = lab.run_phase(throughput_phase(lab, kind, server.port), server)
                rounds[kind].append(_figures(stats, sample))
                print(f"  round {r + 1} {kind:10s} {rounds[kind][-1]['commands_per_s']:9.0f} "
                      f"commands/s  server CPU {rounds[kind][-1]['server_cpu_pct']:.0f} %  "
                      f"generator CPU {rounds[kind][-1]['generator_cpu_pct']:.0f} %",
                      flush=True)
        if lab.options.profile and "hotline" in servers:
            lab.profile = profile(lab, servers["hotline"])
    finally:
        for kind, server in servers.items():
            server.stop()
            if kind != "hotline":
                lab.baseline_counts = getattr(lab, "baseline_counts", {})
                lab.baseline_counts[kind] = _last_json(server.output())
    return {kind: _median_round(rows) for kind, rows in rounds.items()}


def _median_round(rows: list[dict]) -> dict:
    """The round with the median command rate, with every round's rate beside it."""
    ordered = sorted(rows, key=lambda row: row["commands_per_s"])
    median = dict(ordered[len(ordered) // 2])
    median["rounds_commands_per_s"] = [row["commands_per_s"] for row in rows]
    median["errors"] = sum(row["errors"] for row in rows)
    return median


def _last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    return {}


def workers(lab: Lab) -> dict:
    counts = sorted({1, lab.options.workers or os.cpu_count() or 1})
    out = {}
    for n in counts:
        server = lab.server("hotline", workers=n, pinned=False)
        try:
            time.sleep(0.5)
            stats, sample = lab.run_phase(throughput_phase(lab, f"workers-{n}", server.port),
                                          server)
        finally:
            server.stop()
        out[n] = _figures(stats, sample)
        out[n]["processes"] = n
    return out


def profile(lab: Lab, server: proc.Service) -> dict:
    """py-spy on the hotline server during one more throughput window."""
    if shutil.which("py-spy") is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    phase = throughput_phase(lab, "profile", server.port)
    out = lab.tmp / "profile.txt"
    seconds = max(int(lab.options.seconds), 1)

    def spy() -> None:
        _sleep_until(phase.window_start)
        subprocess.run(["py-spy", "record", "--pid", str(server.pid), "--format", "raw",
                        "--gil", "--rate", "250", "--duration", str(seconds), "-o", str(out)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    thread = threading.Thread(target=spy)
    thread.start()
    lab.run_phase(phase, server)
    thread.join()
    return summarize_profile(out) if out.exists() else {"error": "py-spy wrote nothing"}


def summarize_profile(path: Path, top: int = 15) -> dict:
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n

    def best(table: dict[str, int]) -> list[tuple[str, float]]:
        rows = sorted(table.items(), key=lambda item: -item[1])
        return [(frame, round(100 * n / total, 1)) for frame, n in rows
                if not frame.startswith(("<module>", "_run_", "run (", "main (", "cmd_serve",
                                         "Runner.run", "BaseEventLoop.run_"))][:top]
    return {"samples": total, "self": best(own), "inclusive": best(inclusive)}


# -- the report


def ratios(results: dict) -> dict:
    t = results["throughput"]
    out = {}
    if "hotline" in t:
        ours = t["hotline"]
        for base in ("raw", "panoramisk", "streams"):
            if base in t and t[base]["commands_per_s"]:
                out[f"vs_{base}"] = round(ours["commands_per_s"] / t[base]["commands_per_s"], 3)
                if ours.get("commands_per_cpu_s") and t[base].get("commands_per_cpu_s"):
                    out[f"vs_{base}_per_cpu"] = round(
                        ours["commands_per_cpu_s"] / t[base]["commands_per_cpu_s"], 3)
    return out


def verdicts(results: dict) -> dict:
    h = results.get("hold", {}).get("hotline", {})
    r = results.get("ratios", {})
    m = results.get("membership", [])
    checks = {
        "held_calls": (h.get("held", 0) >= TARGETS["held_calls"] and not h.get("errors"),
                       f"{h.get('held', 0)} held, {h.get('errors', 0)} errors"),
        "p99_ms": (0 < h.get("p99_ms", 1e9) <= TARGETS["p99_ms"],
                   f"{h.get('p99_ms')} ms (without the replies after a membership lookup: "
                   f"{h.get('p99_ms_without_lookups')} ms; max {h.get('max_ms')} ms)"),
        "rss_kb_per_call": (0 < h.get("rss_kb_per_call", 1e9) <= TARGETS["rss_kb_per_call"],
                            f"{h.get('rss_kb_per_call')} KB"),
        "vs_panoramisk": (r.get("vs_panoramisk", 0) >= TARGETS["vs_panoramisk"],
                          f"{r.get('vs_panoramisk')}x"),
        "vs_raw": (r.get("vs_raw", 0) >= TARGETS["vs_raw"], f"{r.get('vs_raw')}x"),
        "membership_overhead_p99_ms": (
            bool(m) and max(row["overhead_p99_ms"] for row in m)
            <= TARGETS["membership_overhead_p99_ms"],
            ", ".join(f"+{row['overhead_p99_ms']} ms at {row['concurrency']}" for row in m)),
    }
    return {name: {"met": bool(ok), "figure": figure, "target": TARGETS[name]}
            for name, (ok, figure) in checks.items()}


def table(results: dict) -> str:
    lines = []
    t = results["throughput"]
    lines.append("No think time (%d calls at once; median of %d rounds)" % (
        results["options"]["callers"], results["options"]["rounds"]))
    lines.append(f"{'server':12s}{'calls/s':>10s}{'cmds/s':>10s}{'p50 ms':>9s}{'p99 ms':>9s}"
                 f"{'max ms':>9s}{'srv CPU':>9s}{'CPU/call':>10s}{'cmds/CPU-s':>12s}"
                 f"{'gen CPU':>9s}{'errors':>8s}")
    for kind, f in t.items():
        lines.append(f"{kind:12s}{f['calls_per_s']:10.0f}{f['commands_per_s']:10.0f}"
                     f"{f['p50_ms']:9.2f}{f['p99_ms']:9.2f}{f['max_ms']:9.1f}"
                     f"{f['server_cpu_pct']:8.0f}%{_ms(f['cpu_ms_per_call']):>10s}"
                     f"{f['commands_per_cpu_s'] or 0:12.0f}{f['generator_cpu_pct']:8.0f}%"
                     f"{f['errors']:8d}")
    lines.append("")
    o = results["options"]
    lines.append(f"Think time (×{o['think_scale']} of prompt durations; {o['hold_calls']} calls "
                 f"opened over {o['ramp']:g} s, measured for {o['hold_seconds']:g} s)")
    lines.append(f"{'server':12s}{'held':>8s}{'cmds/s':>10s}{'p50 ms':>9s}{'p99 ms':>9s}"
                 f"{'max ms':>9s}{'p99 other':>10s}{'p99 lookup':>11s}{'srv CPU':>9s}"
                 f"{'RSS MB':>9s}{'KB/call':>9s}{'errors':>8s}")
    for kind, f in results["hold"].items():
        lines.append(f"{kind:12s}{f['held']:8d}{f['commands_per_s']:10.0f}{f['p50_ms']:9.2f}"
                     f"{f['p99_ms']:9.2f}{f['max_ms']:9.1f}{f['p99_ms_without_lookups']:10.2f}"
                     f"{f['p99_ms_after_lookups']:11.2f}{f['server_cpu_pct']:8.0f}%"
                     f"{f['rss_mb']:9.1f}{f['rss_kb_per_call']:9.2f}{f['errors']:8d}")
    lines.append("  (p99 lookup: replies the hotline sent once a membership lookup answered, "
                 "so including the service's own latency; p99 other: all the rest)")
    lines.append("")
    w = results.get("workers", {})
    if w:
        lines.append("ivr serve --workers N (unpinned, no think time)")
        for n, f in w.items():
            lines.append(f"  {n} process(es): {f['commands_per_s']:8.0f} cmds/s "
                         f"{f['calls_per_s']:7.0f} calls/s, server CPU {f['server_cpu_pct']:.0f} % "
                         f"({f['commands_per_cpu_s'] or 0:.0f} cmds per CPU-s), "
                         f"generator CPU {f['generator_cpu_pct']:.0f} %, errors {f['errors']}")
        lines.append("")
    for row in results.get("membership", []):
        lines.append(f"membership lookups at concurrency {row['concurrency']}: client p50/p99 "
                     f"{row['client_p50_ms']}/{row['client_p99_ms']} ms, service "
                     f"{row['service_p50_ms']}/{row['service_p99_ms']} ms, overhead p99 "
                     f"+{row['overhead_p99_ms']} ms, client CPU "
                     f"{row['client_cpu_us_per_lookup']} µs/lookup")
    prof = results.get("profile")
    if prof and "self" in prof:
        lines.append("")
        lines.append(f"hotline profile (py-spy, GIL holder, {prof['samples']} samples), top own time:")
        lines += [f"  {pct:5.1f} %  {frame}" for frame, pct in prof["self"][:10]]
    lines.append("")
    lines.append("ratios: " + ", ".join(f"{k} {v}" for k, v in results["ratios"].items()))
    for name, v in results["verdicts"].items():
        lines.append(f"  {'MET ' if v['met'] else 'MISS'} {name}: {v['figure']} "
                     f"(target {v['target']})")
    return "\n".join(lines)


def _mismatches(results: dict) -> str:
    counts = results.get("baseline_counts", {})
    return ", ".join(f"{kind} {c.get('mismatches', '?')}" for kind, c in counts.items()) or "-"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}ms"


def write_results(results: dict, text: str, path: Path = RESULTS) -> None:
    m = results["machine"]
    o = results["options"]
    t = results["throughput"]
    raw = t.get("raw", {})
    lines = [
        "# FastAGI load benchmark: results",
        "",
        f"Generated by `{o['command']}` on {results['when']}; regenerate with the same "
        "command (`python -m bench` for the default run, `ivr bench` is the same).",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; memory {m['memory_gib']} GiB; "
        f"Linux {m['kernel']}; {m['implementation']} {m['python']}",
        f"- layout: server under test pinned to CPU {results['layout']['server']}; load "
        f"generator ({o['generators']} processes) and the reference membership service on "
        f"CPU {results['layout']['load']}",
        "",
        "## Figures",
        "",
        "```",
        text,
        "```",
        "",
        "## How to read them",
        "",
        "- *server reply latency*: from our reply (or the header block) written by the "
        "generator to the server's next command line read by it;",
        "- *CPU/call*, *cmds/CPU-s*: the server process's user+system time (/proc) over the "
        "window, per call completed and per command answered;",
        "- *RSS per call*: the server's peak RSS during the hold window less its RSS before "
        "the phase, divided by the calls held;",
        "- *raw* is an `asyncio.BufferedProtocol` that replays the commands with no "
        "parsing at all: the ceiling of Python here. *streams* is the same on asyncio "
        "streams, *panoramisk* is panoramisk 1.4's `fast_agi.Application`, used bare. All "
        "three replay the command sequences the hotline produced for each path "
        f"({', '.join(f'{k}: {v} commands' for k, v in results['recorded'].items())}) and "
        f"check every reply code (mismatches: {_mismatches(results)}).",
        f"- *generator ceiling*: against raw, the generator answered "
        f"{raw.get('commands_per_s', 0):.0f} commands/s at {raw.get('generator_cpu_pct', 0):.0f} % "
        f"of its core(s) ({raw.get('generator_commands_per_cpu_s') or 0:.0f} commands per CPU-s), "
        f"while raw used {raw.get('server_cpu_pct', 0):.0f} % of its core "
        f"({raw.get('commands_per_cpu_s') or 0:.0f} commands per CPU-s). "
        + ("The generator was saturated before raw: raw's figure is a floor, and the ratio "
           "to raw per CPU-second is the fairer one." if raw.get("generator_cpu_pct", 0) >= 90
           else "The generator was not the bottleneck."),
        "- *ratios* compare commands/s over the same sequences. The baselines only replay; "
        "the hotline also does its per-call work (the call record, the membership look-up "
        "over HTTP, the lockout store), which weighs more per command since entries are "
        "collected in a few commands each (the status path took 73 commands before "
        "2026-12-01): read CPU/call and calls/s beside them.",
        "",
    ]
    prof = results.get("profile")
    if prof and "self" in prof:
        lines += ["## Profile of the hotline server (py-spy, GIL holder, one throughput "
                  f"window, {prof['samples']} samples)", "", "| own time | frame |", "|---|---|"]
        lines += [f"| {pct} % | `{frame}` |" for frame, pct in prof["self"]]
        lines += ["", "| inclusive | frame |", "|---|---|"]
        lines += [f"| {pct} % | `{frame}` |" for frame, pct in prof["inclusive"]]
        lines.append("")
    for heading in KEPT_SECTIONS:
        lines += _kept_section(path, heading)
    lines += ["## Raw figures (JSON)", "", "```json", json.dumps(results, indent=1,
                                                                    default=str), "```", ""]
    path.write_text("\n".join(lines))


SIP_SECTION = "## SIP load through the real Asterisk"
DESK_SECTION = "## The agent desk"
# Sections other benchmarks write (bench/sip.py, bench/desk.py, bench/store.py): kept as
# they are when this one rewrites the file.
KEPT_SECTIONS = (SIP_SECTION, DESK_SECTION)


def _kept_section(path: Path, heading: str) -> list[str]:
    text = path.read_text() if path.exists() else ""
    if heading not in text:
        return []
    section = text[text.index(heading):]
    end = section.find("\n## ", len(heading))
    return (section if end < 0 else section[:end + 1]).splitlines()


# -- the command


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    parser.add_argument("--smoke", action="store_true", help="a few seconds, small figures")
    parser.add_argument("--callers", type=int, help=f"calls at once, no think time ({d.callers})")
    parser.add_argument("--seconds", type=float, help=f"throughput window ({d.seconds:g} s)")
    parser.add_argument("--warmup", type=float, help=f"before each window ({d.warmup:g} s)")
    parser.add_argument("--rounds", type=int, help=f"throughput rounds per server ({d.rounds})")
    parser.add_argument("--hold-calls", type=int, help=f"calls held with think time "
                                                       f"({d.hold_calls})")
    parser.add_argument("--ramp", type=float, help=f"seconds to open them ({d.ramp:g})")
    parser.add_argument("--hold-seconds", type=float, help=f"hold window ({d.hold_seconds:g} s)")
    parser.add_argument("--think-scale", type=float,
                        help=f"think time = prompt duration × this ({d.think_scale:g})")
    parser.add_argument("--key-ms", type=float, help=f"time per key pressed ({d.key_ms:g} ms)")
    parser.add_argument("--generators", type=int, help=f"generator processes ({d.generators})")
    parser.add_argument("--servers", help=f"comma-separated, of {','.join(SERVERS)}")
    parser.add_argument("--workers", type=int, help="processes for the workers phase "
                                                    "(default: as many as cores; -1 skips it)")
    parser.add_argument("--membership-lookups", type=int,
                        help=f"lookups per client measurement ({d.membership_lookups})")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the hotline server during one more window")
    parser.add_argument("--no-results", action="store_true",
                        help=f"do not write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    values = dict(SMOKE) if args.smoke else {}
    for name in ("callers", "seconds", "warmup", "rounds", "hold_calls", "ramp",
                 "hold_seconds", "think_scale", "key_ms", "generators", "workers",
                 "membership_lookups"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.servers:
        values["servers"] = tuple(s for s in args.servers.split(",") if s)
        unknown = set(values["servers"]) - set(SERVERS)
        if unknown:
            parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    return Options(**values, profile=args.profile, smoke=args.smoke,
                   write_results=not args.no_results and not args.smoke,
                   command=" ".join(["python -m bench", *(argv if argv is not None
                                                          else sys.argv[1:])]))


def run(options: Options) -> dict:
    lab = Lab(options)
    results: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": proc.machine(), "options": dict(options.__dict__),
                     "targets": TARGETS}
    try:
        lab.start()
        results["layout"] = {"server": sorted(lab.server_cpus or []) or "any",
                             "load": sorted(lab.load_cpus or []) or "any"}
        print("recording the command sequences of each path ...", flush=True)
        record(lab)
        results["recorded"] = lab.recorded
        results["hold"] = {}
        for kind in HOLD_SERVERS:
            if kind in options.servers:
                print(f"holding {options.hold_calls} calls with think time on {kind} ...",
                      flush=True)
                results["hold"][kind] = hold(lab, kind)
        print("throughput with no think time ...", flush=True)
        results["throughput"] = throughput(lab)
        results["baseline_counts"] = getattr(lab, "baseline_counts", {})
        if getattr(lab, "profile", None):
            results["profile"] = lab.profile
        if options.workers >= 0 and "hotline" in options.servers:
            print("ivr serve --workers ...", flush=True)
            results["workers"] = workers(lab)
        print("membership client overhead ...", flush=True)
        results["membership"] = _membership(lab)
    finally:
        lab.stop()
    results["ratios"] = ratios(results)
    results["verdicts"] = verdicts(results)
    return results


def _membership(lab: Lab) -> list[dict]:
    """In a process of its own, on the server's core (idle now)."""
    code = ("import json,sys; from bench.membership import run; "
            "print(json.dumps(run(sys.argv[1], int(sys.argv[2]))))")
    command = [sys.executable, "-c", code, lab.membership_url,
               str(lab.options.membership_lookups)]
    if lab.server_cpus:
        command = ["taskset", "-c", ",".join(map(str, sorted(lab.server_cpus)))] + command \
            if shutil.which("taskset") else command
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"membership measurement failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    results = run(options)
    text = table(results)
    print()
    print(text)
    print(json.dumps({"bench": "fastagi", **{k: results[k] for k in (
        "when", "ratios", "verdicts", "throughput", "hold", "workers", "membership")
        if k in results}}, default=str, separators=(",", ":")))
    if options.write_results:
        write_results(results, text)
        print(f"wrote {RESULTS}")
    return 0
