"""The commands a person runs, as processes: ``ivr serve`` with the embedded defaults
(reference membership service and demo data in the same process) and ``ivr call --keys``."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.proc import wait_port

from .conftest import EVIDENCE, free_port


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    var = tmp_path_factory.mktemp("var")
    env = {**os.environ, "IVR_VAR_DIR": str(var), "IVR_AGI_PORT": str(free_port()),
           "IVR_EMBEDDED_MEMBERSHIP_PORT": str(free_port()),
           "IVR_CALL_RECORDS": str(EVIDENCE / "cli-calls.jsonl")}
    env.pop("IVR_MEMBERSHIP_URL", None)
    log = open(EVIDENCE / "cli-serve.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(int(env["IVR_AGI_PORT"]))
        yield env
    finally:
        server.terminate()
        assert server.wait(15) == 0   # SIGTERM is a clean shutdown
        log.close()


def ivr_call(env, *args) -> str:
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "call", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_scripted_call_walks_a_demo_participant_to_status_and_billing(served):
    out = ivr_call(served, "--keys", "1 0001234567890# 1 17081990")
    assert "IVR: Status kepesertaan Bapak/Ibu aktif." in out
    assert "IVR: enam ratus ribu rupiah" in out
    assert "IVR_OUTCOME=completed" in out and "IVR_VERIFIED=1" in out
    record = json.loads(out[out.index("-- call record:") + len("-- call record:"):])
    assert record["outcome"] == "completed" and record["verified"] is True


def test_an_arrears_call_hears_the_reason_and_the_amount(served):
    out = ivr_call(served, "--keys", "1 0001100000055# 1 14021993 0")
    assert "tidak aktif," in out and "karena terdapat tunggakan iuran." in out
    assert "IVR_OUTCOME=transfer" in out and "IVR_TRANSFER_REASON=caller_request" in out
    assert "IVR_MEMBER_STATUS=TIDAK_AKTIF" in out


def test_calling_a_server_that_is_not_there_says_how_to_start_it(served):
    env = {**served, "IVR_AGI_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "call", "--keys", "0"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "ivr serve" in done.stderr
