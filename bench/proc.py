"""Processes under test: starting them, and reading their CPU time and memory from /proc."""
from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, seconds: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def tree(pid: int) -> list[int]:
    """The process and its descendants (worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process tree (threads included)."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])   # utime, stime
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            pass
    return total


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def pin(pid: int, cpus: set[int] | None) -> None:
    if cpus:
        for p in tree(pid):
            try:
                for task in os.listdir(f"/proc/{p}/task"):
                    os.sched_setaffinity(int(task), cpus)
            except OSError:
                pass


class Service:
    """A process started for the benchmark, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, command: list[str], *, env: dict | None = None,
                 port: int | None = None, log: Path | None = None,
                 cpus: set[int] | None = None, ready_text: str | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.port = port
        self.log_path = log
        self._log = open(log, "wb") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(command, env={**os.environ, **(env or {})},
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=cwd)
        self.cpus = cpus
        pin(self.process.pid, cpus)
        if ready_text is not None:
            # panoramisk's header loop spins forever on a peer that connects and closes,
            # so baselines are not probed by connecting: they say when they listen
            self.wait_output(ready_text)
        elif port is not None:
            wait_port(port, process=self.process)
        pin(self.process.pid, cpus)   # threads and workers started meanwhile

    def wait_output(self, text: str, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.output():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not say {text!r}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.process.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "kernel": platform.release(), "python": sys.version.split()[0],
            "implementation": platform.python_implementation()}
