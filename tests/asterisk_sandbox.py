"""A real Asterisk for one test module: its own sandbox instance (its name, ports shifted
by IVR_TEST_PORT_SHIFT), for this test session alone, started afresh and brought down
after, its full log kept as evidence for the privacy test (test_zz_privacy.py)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

import pytest

from dialplan.sandbox import Sandbox
from ivr.config import Settings

from .conftest import EVIDENCE

PORT_SHIFT = int(os.environ.get("IVR_TEST_PORT_SHIFT", "0"))


@contextlib.contextmanager
def in_use(box: Sandbox, wait: float = 900):
    """The test instance for this session alone: another test session (another worker or
    developer on this machine) waits here until this one has brought it down."""
    box.root.parent.mkdir(parents=True, exist_ok=True)   # a fresh machine has no cache yet
    with open(box.root.with_name(f"{box.root.name}.{box.name}.in-use"), "w") as lock:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the {box.name!r} Asterisk stayed in use by another "
                                f"test session for {wait} s")
                time.sleep(1)
        yield


@contextlib.contextmanager
def running_sandbox(name: str, *, evidence: str | None = None, env: dict | None = None,
                    **options) -> Iterator[Sandbox]:
    """``Sandbox(name=name, **options)`` up for the ``with`` block; its full log copied to
    ``EVIDENCE / evidence`` when it goes down."""
    given = {k: v for k, v in os.environ.items()
             if k in ("IVR_ASTERISK_ROOT", "IVR_DEBIAN_MIRROR")}
    box = Sandbox(name=name, env={**given, **(env or {})}, **options)
    with in_use(box):
        box.down()                      # left running by an interrupted session: start afresh
        box.full_log.unlink(missing_ok=True)          # this module's calls only
        box.up(timeout=120)
        try:
            yield box
        finally:
            box.down()
            assert box.status() == "down"
            if evidence:
                with contextlib.suppress(FileNotFoundError):
                    (EVIDENCE / evidence).write_bytes(box.full_log.read_bytes())


def ivr_settings(name: str, membership_url: str, sounds: Path, tmp: Path, **overrides
                 ) -> Settings:
    """A FastAGI server's settings for these tests: its own lockout state and store in
    ``tmp``, its call records in the evidence folder (``calls-<name>.jsonl``)."""
    values = dict(agi_host="127.0.0.1", agi_port=0, membership_url=membership_url,
                  call_records=str(EVIDENCE / f"calls-{name}.jsonl"),
                  state_db=str(tmp / f"state-{name}.sqlite3"), sounds_dir=str(sounds),
                  store_db=str(tmp / f"store-{name}.sqlite3"),
                  lockout_salt="test-salt")
    values.update(overrides)
    return Settings.from_env({}, **values)
