"""A real ``redis-server`` (Debian's package) for the tests: on a free loopback port, in a
temporary folder, with a password, stopped afterwards. Its log goes to the evidence folder
that ``test_zz_privacy`` reads."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

EVIDENCE = Path(os.environ["IVR_TEST_EVIDENCE"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, password: str, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        try:
            with redis.Redis(port=port, password=password, socket_timeout=0.5) as client:
                if client.ping():
                    return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("redis-server did not answer")
        time.sleep(0.05)


@contextlib.contextmanager
def redis_server(seconds: float = 10.0):
    """Yields ``redis://:PASSWORD@127.0.0.1:PORT/0``."""
    binary = shutil.which("redis-server")
    if binary is None:      # .ci/setup installs it: its absence is a failure, not a skip
        raise RuntimeError("redis-server is not installed (Debian package redis-server)")
    port, password = _free_port(), secrets.token_hex(16)
    folder = tempfile.mkdtemp(prefix="ivr-test-redis-")
    log = EVIDENCE / f"redis-{port}.log"
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", folder,
         "--requirepass", password, "--save", "", "--appendonly", "no",
         "--logfile", str(log), "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port, password, process, seconds)
        yield f"redis://:{password}@127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
