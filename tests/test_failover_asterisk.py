"""Several IVR servers behind one real Asterisk 22 (the sandbox's instance "failover"):
the dialplan (context hotline) tries the servers of IVR_AGI in order. One server is
stopped mid-test, with calls in progress on it and callers still coming: every call is
served by one server or the other, none reaches the fallback."""
from __future__ import annotations

import asyncio
import contextlib
import os

import pytest
import pytest_asyncio

from ivr.app import running_server

from .asterisk_sandbox import PORT_SHIFT, ivr_settings, running_sandbox
from .test_asterisk import read_records, sounds  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="module")

FIRST, SECOND = 18573 + PORT_SHIFT, 18574 + PORT_SHIFT
SIP_PORT, AMI_PORT = 19060 + PORT_SHIFT, 19038 + PORT_SHIFT
RTP_PORTS = f"{28000 + 2000 * (PORT_SHIFT // 100)}-{29998 + 2000 * (PORT_SHIFT // 100)}"
SERVERS = f"127.0.0.1:{FIRST}&127.0.0.1:{SECOND}"


@pytest.fixture(scope="module")
def sandbox(sounds):  # noqa: F811
    with running_sandbox("failover", evidence="asterisk-failover-full.log", sounds_dir=sounds,
                         agi_address=SERVERS, sip_address=f"127.0.0.1:{SIP_PORT}",
                         ami_port=AMI_PORT, rtp_ports=RTP_PORTS) as box:
        yield box


@pytest_asyncio.fixture(loop_scope="module")
async def two_servers(sandbox, membership_url, sounds, tmp_path):  # noqa: F811
    settings = [ivr_settings(f"failover-{n}", membership_url, sounds, tmp_path, agi_port=p,
                             drain_seconds=120) for n, p in (("first", FIRST), ("second", SECOND))]
    for s in settings:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(s.call_records)
    yield settings


async def test_a_server_stopped_mid_test_sends_no_caller_to_the_fallback(sandbox, two_servers):
    first, second = two_servers
    reports = []

    async def caller(hold: float) -> None:
        reports.append(await sandbox.originate_local_async(keys="", hold=hold, timeout=120))

    async with running_server(second) as (_, second_app):
        stack = contextlib.AsyncExitStack()
        _, first_app = await stack.enter_async_context(running_server(first))
        early = [asyncio.create_task(caller(6)) for _ in range(3)]
        await asyncio.sleep(3)                 # the early calls are in the IVR of "first"
        stopping = asyncio.create_task(stack.aclose())      # drains: the calls finish
        await asyncio.sleep(0.5)
        late = [asyncio.create_task(caller(3)) for _ in range(3)]
        await asyncio.gather(*early, *late)
        await stopping
        assert second_app.records.flush()
    on_first = {r["call_id"] for r in read_records(first.call_records)}
    on_second = {r["call_id"] for r in read_records(second.call_records)}
    finals = [r.final for r in reports]
    assert [f.get("Route") for f in finals].count("fallback") == 0
    assert all(f.get("CallId") for f in finals)
    ids = [f["CallId"] for f in finals]
    assert set(ids) == on_first | on_second and not on_first & on_second
    assert len(on_first) == 3 and len(on_second) == 3
    assert all(f.get("Outcome") == "abandoned" for f in finals)
