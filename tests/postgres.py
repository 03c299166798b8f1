"""A real PostgreSQL server for the tests, started and stopped by them.

Debian's server binaries (``.ci/setup`` installs ``postgresql``); the cluster lives in a
temporary folder owned by the ``postgres`` user, since the server refuses to run as root;
it listens on a unix socket in that folder and on a free port of 127.0.0.1 only, trusting
local connections (a throw-away cluster). Reuse it::

    from .postgres import PostgresServer, postgres_server   # the session fixture

``postgres_server`` is one server for the session; ``PostgresServer()`` as a context manager
gives a private one (to stop and start it in a test). ``server.new_database()`` makes an
empty database and returns its URL.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from .conftest import EVIDENCE, free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: run .ci/setup")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ivr-test-pg-"))
        self.data = self.dir / "data"
        # The server's log, kept with the suite's evidence once it stops.
        self.log = self.dir / "postgres.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8")
        except BaseException:
            self.remove()
            raise

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.dir} -c fsync=off "
                   "-c full_page_writes=off -c max_connections=60")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def remove(self) -> None:
        if self.log.exists():
            shutil.copyfile(self.log, EVIDENCE / f"postgres-{self.port}.log")
        shutil.rmtree(self.dir, ignore_errors=True)

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        command = [str(self.bin / "createdb"), "-h", str(self.dir), "-p", str(self.port),
                   "-U", "postgres", name]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, timeout=60)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> "PostgresServer":
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.remove()


@pytest.fixture(scope="session")
def postgres_server():
    with PostgresServer() as server:
        yield server
