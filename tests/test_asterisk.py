"""Calls through a real Asterisk 22: the sandbox of ``dialplan/sandbox.py`` (built on first
use: debootstrap, about a minute; needs root, as CI is), this project's dialplan, the rendered
prompts, hotline FastAGI servers in this process and the reference membership service in
its own.

- Local-channel calls, one per outcome: the caller half presses keys with SendDTMF while
  the hotline half runs the dialplan and the AGI. Each gets its own FastAGI server (its own
  lockout state and call-record file) by setting ``IVR_AGI`` on the call, which shadows
  the dialplan's global of that name; the dialplan itself is unchanged.
- SIP calls from sipp to 1500400 with RFC 4733 DTMF from a pcap written here, to the
  FastAGI server on the sandbox's configured AGI address.
- Every prompt of the catalog played by Asterisk from the rendered files.

What is checked: the channel variables as the dialplan saw them (its report events over AMI:
IvrRoute after AGI() returned, IvrHangup at hang-up, IvrAgent on the agent's leg) and the
call record the IVR wrote (to the EVIDENCE folder, read by the privacy test).

Timing. A call lasts as long as its prompts (10-60 s). All calls start together when the
module begins, so the module takes about as long as its longest call; each test waits for
its own call. Callers type ahead (the IVR keeps keys pressed during a prompt). Asterisk
drops DTMF that arrives while no AGI command runs; the IVR leaves no such moment where a
caller may type, which the callers pressing keys at random moments check (live keys, by
AMI, while the test watches the AGI commands of the call).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bench.sip import DEMO_KEYS, demo_path, write_dtmf_pcap
from dialplan.sandbox import (FOREGROUND, PACKAGES, CallReport, Layout, Sandbox,
                              event_fields, asterisk_command)
from ivr.agi.server import AgiServer
from ivr.app import running_server, running_services
from ivr.asterisk import REPORT_AGENT, dtmf_script
from ivr.config import Settings
from ivr.membership.demo import FAULT_SLOW
from ivr.names import P
from ivr.privacy import mask_caller
from prompts import load_catalog
from prompts.render import check, load_durations, render

from .asterisk_sandbox import PORT_SHIFT, ivr_settings, running_sandbox
from .conftest import EVIDENCE, reference_service

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parent.parent
TEXT = load_catalog().text
SIP_SCENARIO = REPO / "tests" / "sip" / "hotline-caller.xml"
# Fixed ports for the test instance, away from a developer's sandbox (5060, 5038) and
# `ivr serve` (4573). IVR_TEST_PORT_SHIFT moves them all (and the RTP range), so that two
# checkouts can each run their own test instance (with their own IVR_ASTERISK_ROOT).
AGI_PORT, SIP_PORT, AMI_PORT = (14573 + PORT_SHIFT, 15060 + PORT_SHIFT, 15038 + PORT_SHIFT)
RTP_PORTS = f"{20000 + 2000 * (PORT_SHIFT // 100)}-{21998 + 2000 * (PORT_SHIFT // 100)}"
MEDIA_PORT = 16000 + PORT_SHIFT     # sipp's own RTP ports (several runs: +10, +20, ...)

ACTIVE = ("0001234567890", "17081990")          # self-payer, 600 000 due
GOVERNMENT = ("0001100000011", "12031975")      # PBI: paid by the government
ARREARS = ("0001100000055", "14021993")         # not active: arrears, 980 000 due
SLOW = (FAULT_SLOW, "01011980")                 # the membership service answers in 1.5 s
SWEEP_CALLER = "081199990"                      # the SIP caller who gets the prompt sweep


def status_call(card: str, born: str) -> str:
    """1 (status), the card and #, 1 (correct), the birth date: typed ahead, a second
    between answers."""
    return f"1W{card}#W1W{born}"


# --- The shared Asterisk

@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> Path:
    """The rendered prompts: the set-up's var/sounds when complete, else rendered here."""
    shipped = REPO / "var" / "sounds"
    if shipped.is_dir() and not check(out_dir=shipped):
        return shipped
    out = tmp_path_factory.mktemp("sounds")
    result = render(out_dir=out, engine="espeak", progress=False)
    assert not result.failed
    assert check(out_dir=out) == []
    return out


@pytest.fixture(scope="module")
def sandbox(sounds):
    with running_sandbox("test", evidence="asterisk-full.log", sounds_dir=sounds,
                         agi_address=f"127.0.0.1:{AGI_PORT}", sip_address=f"127.0.0.1:{SIP_PORT}",
                         ami_port=AMI_PORT, rtp_ports=RTP_PORTS, verbose=3) as box:
        box.cli(f"queue add member {REPORT_AGENT} to agents penalty 1")
        assert "Local/report@agent/n" in box.cli("queue show agents")
        yield box


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ami_events(sandbox):
    """Every report event of the module (the SIP calls' are found by caller number)."""
    events: list[dict[str, str]] = []
    async with sandbox.ami() as manager:
        manager.register_event("UserEvent", lambda _m, event: events.append(
            event_fields(event)))
        yield events


def read_records(path: str | Path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@dataclass
class LocalCall:
    report: CallReport
    records: list[dict]
    seconds: float

    @property
    def record(self) -> dict:
        (record,) = self.records
        return record


async def local_call(sandbox: Sandbox, settings: Settings, keys: str, *, caller_id: str,
                     hold: float = 150, agi: str | None = None, **originate) -> LocalCall:
    """A Local-channel call to 1500400, served by a FastAGI server of its own (or sent to
    ``agi``); returns when the hotline channel has hung up."""
    started = time.monotonic()
    async with running_server(settings) as (server, app):
        report = await sandbox.originate_local_async(
            keys=keys, hold=hold, caller_id=caller_id, timeout=200,
            variables={"IVR_AGI": agi or f"127.0.0.1:{server.port}"}, **originate)
        assert app.records.flush()
    return LocalCall(report, read_records(settings.call_records), time.monotonic() - started)


# --- Callers pressing keys live (AMI PlayDTMF) while watching the call's AGI commands

KEY_EVERY = 0.4         # a human pace: each key sounds 100 ms, then 300 ms of silence


@dataclass
class LiveCall:
    call: LocalCall
    placed: float               # time.monotonic() when the call was placed
    first_key: float = 0.0      # ... when the caller pressed the first and the last key
    last_key: float = 0.0
    status_seen: float = 0.0    # ... when the test saw the command playing the status


class LiveCaller:
    """Presses keys on a live Local call and sees the AGI commands the call runs."""

    def __init__(self) -> None:
        self.keys: asyncio.Queue[str | None] = asyncio.Queue()
        self.commands: asyncio.Queue[str] = asyncio.Queue()
        self.log: list[tuple[float, str]] = []
        self.first_key = self.last_key = self.status_seen = 0.0

    def seen(self, command: str) -> None:
        now = time.monotonic()
        self.log.append((now, command))
        if f"bpjs/{P.STATUS_ACTIVE}" in command and not self.status_seen:
            self.status_seen = now
        self.commands.put_nowait(command)

    async def until(self, sound: str) -> None:
        """Until the call runs a command that plays ``bpjs/<sound>``."""
        while f"bpjs/{sound}" not in await self.commands.get():
            pass

    def press(self, key: str) -> None:
        now = time.monotonic()
        self.first_key = self.first_key or now
        self.last_key = now
        self.keys.put_nowait(key)

    async def type(self, keys: str, every: float = KEY_EVERY) -> None:
        for key in keys:
            self.press(key)
            await asyncio.sleep(every)


async def live_call(sandbox: Sandbox, settings: Settings, caller_id: str, behaviour
                    ) -> LiveCall:
    """A Local call whose caller is ``behaviour(LiveCaller)``, run beside the call."""
    caller = LiveCaller()
    placed = time.monotonic()
    acting = asyncio.create_task(behaviour(caller))
    try:
        call = await local_call(sandbox, settings, "", caller_id=caller_id, hold=120,
                                live_keys=caller.keys, on_agi_command=caller.seen)
    finally:
        acting.cancel()
    return LiveCall(call, placed, caller.first_key, caller.last_key, caller.status_seen)


def typing_ahead(card: str, born: str):
    """The experienced caller: 1 during the greeting, the card and # as soon as asked, 1 as
    soon as the read-back starts, the birth date as soon as asked; keys at a human pace."""
    async def behaviour(caller: LiveCaller) -> None:
        await caller.until(P.GREETING)
        await asyncio.sleep(0.5)
        caller.press("1")
        await caller.until(P.ENTER_ID)
        await caller.type(card + "#")
        await caller.until(P.READBACK_CARD)
        caller.press("1")
        await caller.until(P.ENTER_BIRTH_DATE)
        await caller.type(born)
    return behaviour


def keys_at_random(card: str, born: str, seed: int):
    """A caller who types the path at random moments, blind to the prompts: 1, the card
    and #, 1, the birth date, then 0 (an agent) while the look-up runs or just after. Each
    gap is 0.2-1.2 s (a 100 ms tone and a pause), so keys fall anywhere: in a prompt, as
    one ends, between two commands, during the look-up. Every key must be heard."""
    rng = random.Random(seed)

    async def behaviour(caller: LiveCaller) -> None:
        await caller.until(P.GREETING)
        await asyncio.sleep(rng.uniform(0.3, 3.0))
        for key in "1" + card + "#" + "1" + born:
            caller.press(key)
            await asyncio.sleep(rng.uniform(0.2, 1.2))
        await asyncio.sleep(rng.uniform(0.0, 1.8))
        caller.press("0")
    return behaviour


RANDOM_CALLS = [(seed, ACTIVE if seed % 2 else SLOW) for seed in range(1, 9)]


# --- Every prompt, played by Asterisk

@dataclass
class Sweep:
    """Every catalog id played on one call: id -> (reply line, duration in ms from the
    manifest), and the call's channel (to find, in Asterisk's log, the files it opened)."""
    played: dict[str, tuple[str, int]]
    channel: str = ""


def sweep_route(sounds: Path, sweep: Sweep):
    """A FastAGI route that answers and STREAM FILEs every catalog id from near its end
    (the last 0.3 s: Asterisk opens, seeks and plays the real file, quickly), then leaves
    IVR_OUTCOME=completed so that the dialplan hangs up."""
    catalog = load_catalog()
    durations = load_durations(str(sounds))

    async def route(session) -> None:
        sweep.channel = session.headers.get("agi_channel", "")
        await session.send("ANSWER")
        for prompt_id in catalog.texts:
            ms = durations[prompt_id]
            offset = max(0, (ms - 300) * 8)       # samples at 8 kHz
            reply = await session.send("STREAM FILE", catalog.sound_name(prompt_id), "",
                                       offset, expect_seconds=5)
            sweep.played[prompt_id] = (
                f"{reply.code} result={reply.result} endpos={reply.endpos}", ms)
        await session.send("SET VARIABLE", "__IVR_OUTCOME", "completed")
    return route


async def sweep_over_local_channel(sandbox: Sandbox, sounds: Path) -> Sweep:
    sweep = Sweep({})
    server = AgiServer({"hotline": sweep_route(sounds, sweep)})
    await server.start("127.0.0.1", 0)
    try:
        report = await sandbox.originate_local_async(
            hold=120, caller_id="0811000099", timeout=150,
            variables={"IVR_AGI": f"127.0.0.1:{server.port}"})
    finally:
        await server.close()
    assert report.final["AgiStatus"] == "SUCCESS", report.final
    return sweep


def files_played(sandbox: Sandbox, channel: str) -> dict[str, str]:
    """prompt id -> the file Asterisk's log says it opened on ``channel``."""
    found = {}
    pattern = re.compile(rf"<{re.escape(channel)}> Playing 'bpjs/([^'.]+)\.([a-z0-9]+)'")
    for match in pattern.finditer(sandbox.full_log.read_text(errors="replace")):
        found[match.group(1)] = match.group(2)
    return found


# --- SIP: sipp with RFC 4733 DTMF from a pcap

@dataclass
class SipRun:
    returncode: int
    output: str
    seconds: float
    caller_prefix: str
    calls: int


async def sipp(workdir: Path, keys: str, *, calls: int, caller_prefix: str,
               sip_port: int, media_port: int, gap: float = 0.25) -> SipRun:
    """``calls`` SIP callers at once (all within a second), each typing ``keys``."""
    workdir.mkdir(parents=True, exist_ok=True)
    seconds = write_dtmf_pcap(workdir / "dtmf.pcap", keys, gap=gap)
    command = ["sipp", f"127.0.0.1:{SIP_PORT}", "-sf", str(SIP_SCENARIO), "-s", "1500400",
               "-i", "127.0.0.1", "-p", str(sip_port), "-mp", str(media_port),
               "-key", "caller_prefix", caller_prefix,
               "-m", str(calls), "-l", str(calls), "-r", str(calls),
               "-d", str(round(seconds * 1000) + 1000), "-nostdin",
               "-timeout", "240s", "-timeout_error", "-trace_err"]
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command, cwd=workdir, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    (EVIDENCE / f"sipp-{caller_prefix}.log").write_text(text)
    return SipRun(process.returncode, text, time.monotonic() - started, caller_prefix, calls)


def free_udp_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- All calls of the module, started together

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def calls(sandbox, ami_events, membership_url, sounds, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("asterisk-calls")

    def settings(name: str, **overrides) -> Settings:
        return ivr_settings(f"asterisk-{name}", overrides.pop("membership_url", membership_url),
                            sounds, tmp, **overrides)

    # The membership service, stopped: its URL now refuses connections.
    with reference_service() as url:
        stopped_membership = url
    # A FastAGI server, stopped: nothing listens on its port any more.
    async with running_server(settings("stopped-agi")) as (stopped_agi, _):
        stopped_agi_port = stopped_agi.port

    # The FastAGI server on the sandbox's AGI address, which the SIP calls reach: the
    # hotline, and the prompt sweep for the sweep's caller.
    sip_sweep = Sweep({})
    sweep = sweep_route(sounds, sip_sweep)
    async with running_services(settings("sip")) as sip_app:
        async def route(session) -> None:
            caller = session.headers.get("agi_callerid", "")
            await (sweep if caller.startswith(SWEEP_CALLER) else sip_app.handle)(session)

        async def sweep_over_sip() -> Sweep:
            run = await sipp(tmp / "sip-sweep", "", calls=1, caller_prefix=SWEEP_CALLER,
                             sip_port=free_udp_port(), media_port=MEDIA_PORT + 20)
            assert run.returncode == 0, run.output[-3000:]
            return sip_sweep

        sip_server = AgiServer({"hotline": route})
        await sip_server.start("127.0.0.1", AGI_PORT)
        work = {
            "active": local_call(sandbox, settings("active"), status_call(*ACTIVE),
                                 caller_id="0811000001"),
            "government": local_call(sandbox, settings("government"),
                                     status_call(*GOVERNMENT), caller_id="0811000002"),
            "arrears": local_call(sandbox, settings("arrears"), status_call(*ARREARS),
                                  caller_id="0811000003"),
            "wrong-birth-date": local_call(
                sandbox, settings("wrong-birth-date"),
                "1W" + f"{ACTIVE[0]}#W1W01011991W" * 3, caller_id="0811000004"),
            "hang-up": local_call(sandbox, settings("hang-up"), "1W000123", hold=0,
                                  caller_id="0811000005"),
            "membership-down": local_call(
                sandbox, settings("membership-down", membership_url=stopped_membership),
                status_call(*ACTIVE), caller_id="0811000006"),
            "typing-ahead": live_call(sandbox, settings("typing-ahead"), "0811000008",
                                      typing_ahead(*ACTIVE)),
            **{f"random-{seed}": live_call(sandbox, settings(f"random-{seed}"),
                                           f"08110001{seed:02d}", keys_at_random(*who, seed))
               for seed, who in RANDOM_CALLS},
            "agi-down": local_call(sandbox, settings("agi-down"), "", hold=60,
                                   caller_id="0811000007",
                                   agi=f"127.0.0.1:{stopped_agi_port}"),
            "prompts-local": sweep_over_local_channel(sandbox, sounds),
            "prompts-sip": sweep_over_sip(),
            "sip-one": sipp(tmp / "sip-one", status_call(*ACTIVE), calls=1,
                            caller_prefix="081255510", sip_port=free_udp_port(),
                            media_port=MEDIA_PORT),
            "sip-many": sipp(tmp / "sip-many", status_call(*GOVERNMENT), calls=6,
                             caller_prefix="081255520", sip_port=free_udp_port(),
                             media_port=MEDIA_PORT + 10),
            # the SIP load benchmark's caller (bench/sip.py), a few at once: the demo path
            # typed without a pause at 2.5 keys/s
            "sip-load": sipp(tmp / "sip-load", DEMO_KEYS, calls=12, caller_prefix="081255530",
                             sip_port=free_udp_port(), media_port=MEDIA_PORT + 30, gap=0.3),
        }
        tasks = {name: asyncio.create_task(job, name=name) for name, job in work.items()}
        try:
            yield tasks
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            await sip_server.close()
            assert sip_app.records.flush()


def final(call: LocalCall) -> dict[str, str]:
    assert call.report.hangup is not None
    return call.report.hangup


# --- Local-channel calls, one per outcome

async def test_active_self_payer_hears_status_and_billing(calls):
    call = await calls["active"]
    route, hangup = call.report.route, final(call)
    assert route["AgiStatus"] == "SUCCESS"
    assert {k: route[k] for k in ("Outcome", "TransferReason", "Verified", "MemberStatus")} \
        == {"Outcome": "completed", "TransferReason": "", "Verified": "1",
            "MemberStatus": "AKTIF"}
    assert hangup["Route"] == "hangup" and hangup["Dialed"] == "1500400"
    assert hangup["CallId"] == call.record["call_id"] == route["CallId"]
    r = call.record
    assert r["outcome"] == "completed" and r["verified"] is True
    assert r["member_status"] == "AKTIF" and r["caller"] == "0811***001"
    assert r["menu_keys"] == ["1", "1"] and r["missing_prompts"] == []
    assert r["channel"].startswith("Local/1500400@hotline-") and r["extension"] == "1500400"
    for heard in (TEXT(P.STATUS_ACTIVE), TEXT(P.CLASS_2), "enam ratus ribu rupiah",
                  "sepuluh Desember dua ribu dua puluh enam", TEXT(P.POST_MENU),
                  TEXT(P.GOODBYE)):
        assert heard in r["transcript"]
    assert ACTIVE[0] not in json.dumps(r) and ACTIVE[1] not in json.dumps(r)


async def test_government_paid_participant_hears_who_pays(calls):
    call = await calls["government"]
    hangup = final(call)
    assert (hangup["Outcome"], hangup["Verified"], hangup["MemberStatus"]) \
        == ("completed", "1", "AKTIF")
    r = call.record
    assert r["outcome"] == "completed" and r["member_status"] == "AKTIF"
    assert TEXT(P.SEGMENT_PBI) in r["transcript"]
    assert TEXT(P.BILL_GOVERNMENT) in r["transcript"]
    assert not any("rupiah" in line for line in r["transcript"])


async def test_participant_inactive_for_arrears_hears_why_and_what_is_due(calls):
    call = await calls["arrears"]
    hangup = final(call)
    assert (hangup["Outcome"], hangup["Verified"], hangup["MemberStatus"]) \
        == ("completed", "1", "TIDAK_AKTIF")
    r = call.record
    assert r["member_status"] == "TIDAK_AKTIF" and r["verified"] is True
    assert TEXT(P.STATUS_INACTIVE) in r["transcript"]
    assert TEXT(P.REASON_ARREARS) in r["transcript"]
    assert "sembilan ratus delapan puluh ribu rupiah" in r["transcript"]


async def test_wrong_birth_date_three_times_goes_to_an_agent(calls):
    call = await calls["wrong-birth-date"]
    route, hangup = call.report.route, final(call)
    assert (route["Outcome"], route["TransferReason"], route["Verified"]) \
        == ("transfer", "verification_failed", "0")
    assert route["MemberStatus"] == "" and route["AgiStatus"] == "SUCCESS"
    assert hangup["Route"] == "queue"
    # the agent's channel inherited what the IVR left ("__" variables)
    (agent,) = call.report.agents
    assert (agent["Outcome"], agent["TransferReason"], agent["CallId"], agent["Route"]) \
        == ("transfer", "verification_failed", route["CallId"], "queue")
    r = call.record
    assert r["outcome"] == "transfer" and r["transfer_reason"] == "verification_failed"
    assert r["membership_lookups"] == 3 and r["verified"] is False
    # asked once; typed ahead after that, while "the data does not match" played
    assert r["transcript"].count(TEXT(P.ENTER_ID)) == 1
    assert r["transcript"].count(TEXT(P.ENTER_BIRTH_DATE)) == 3
    assert r["transcript"].count(TEXT(P.DATA_MISMATCH)) == 3
    assert r["transcript"][-2:] == [TEXT(P.DATA_MISMATCH), TEXT(P.TRANSFER_AGENT)]
    assert r["menu_keys"] == ["1", "1", "1", "1"]


async def test_caller_hanging_up_during_identification_leaves_an_abandoned_record(calls):
    call = await calls["hang-up"]
    assert call.report.route is None          # after a hang-up the dialplan goes to "h"
    hangup = final(call)
    assert (hangup["Outcome"], hangup["Verified"], hangup["AgiStatus"]) \
        == ("abandoned", "0", "HANGUP")
    r = call.record
    assert r["outcome"] == "abandoned" and r["ended_at"] and r["menu_keys"] == ["1"]
    assert r["transcript"][-1] == TEXT(P.ENTER_ID)
    assert call.seconds < 20


async def test_a_caller_typing_ahead_reaches_the_status_and_the_record_says_when(calls):
    live = await calls["typing-ahead"]
    r = live.call.record
    assert (r["outcome"], r["verified"], r["member_status"]) == ("completed", True, "AKTIF")
    assert r["menu_keys"] == ["1", "1"]
    # the status is said from start to end (no key cut it)
    assert TEXT(P.STATUS_ACTIVE) in r["transcript"] and TEXT(P.POST_MENU) in r["transcript"]
    # time_to_status_ms is the caller's wall clock: at least the time the caller spent
    # typing, at most the time from placing the call to seeing the status start
    typing_ms = (live.last_key - live.first_key) * 1000
    seen_ms = (live.status_seen - live.placed) * 1000
    assert live.status_seen and typing_ms < r["time_to_status_ms"] < seen_ms
    # what a caller who never interrupts would have heard is longer
    assert r["audio_to_status_ms"] is not None
    print(f"\ntyping ahead: time_to_status_ms={r['time_to_status_ms']} (test: typing "
          f"{typing_ms:.0f} ms, status seen {seen_ms:.0f} ms after placing the call); "
          f"audio_to_status_ms={r['audio_to_status_ms']}")


@pytest.mark.parametrize("seed", [seed for seed, _ in RANDOM_CALLS])
async def test_keys_pressed_at_random_moments_are_all_heard(calls, seed):
    live = await calls[f"random-{seed}"]
    r = live.call.record
    # every key was heard: the card, the birth date, both 1s and the 0 at the end
    assert (r["outcome"], r["transfer_reason"], r["verified"]) == \
        ("transfer", "caller_request", True), (r["menu_keys"], r["transcript"])
    assert r["menu_keys"] == ["1", "1", "0"] and r["membership_lookups"] == 1


async def test_membership_service_down_means_apology_and_an_agent(calls):
    call = await calls["membership-down"]
    route = call.report.route
    assert (route["Outcome"], route["TransferReason"], route["Verified"]) \
        == ("transfer", "service_unavailable", "0")
    assert final(call)["Route"] == "queue" and len(call.report.agents) == 1
    r = call.record
    assert r["transfer_reason"] == "service_unavailable" and r["membership_lookups"] == 1
    assert r["transcript"][-2:] == [TEXT(P.SERVICE_UNAVAILABLE), TEXT(P.TRANSFER_AGENT)]


async def test_fastagi_server_down_takes_the_dialplan_fallback_to_the_queue(calls):
    call = await calls["agi-down"]
    route, hangup = call.report.route, final(call)
    assert route["AgiStatus"] == "FAILURE" and route["Outcome"] == ""
    assert hangup["Route"] == "fallback"
    (agent,) = call.report.agents
    assert (agent["Route"], agent["Outcome"], agent["Dialed"]) == ("fallback", "", "1500400")
    assert call.records == []                   # no IVR ever saw the call


# --- Every prompt plays

@pytest.mark.parametrize("how, ext", [("local", "slin"), ("sip", "ulaw")])
async def test_every_rendered_prompt_plays_in_asterisk(calls, sandbox, how, ext):
    """Over a Local channel Asterisk opens the .sln files, over SIP (u-law) the .ulaw ones."""
    sweep = await calls[f"prompts-{how}"]
    catalog_ids = set(load_catalog().texts)
    assert set(sweep.played) == catalog_ids
    failed = {pid: reply for pid, (reply, _) in sweep.played.items()
              if not reply.startswith("200 result=0 ")}
    assert failed == {}
    # Asterisk read each file to its end: the end position is the manifest's duration
    # (in 8 kHz samples), give or take 20 ms
    short = {pid: (reply, ms) for pid, (reply, ms) in sweep.played.items()
             if abs(int(reply.rsplit("endpos=", 1)[1]) - ms * 8) > 160}
    assert short == {}
    assert files_played(sandbox, sweep.channel) == {pid: ext for pid in catalog_ids}


# --- SIP calls (sipp, RFC 4733 DTMF)

def sip_reports(events: list[dict[str, str]], prefix: str, name: str) -> list[dict[str, str]]:
    return [e for e in events if e.get("UserEvent") == name
            and e.get("CallerIDNum", "").startswith(prefix)
            and e.get("Channel", "").startswith("PJSIP/test-caller-")]


async def test_a_sip_caller_hears_status_and_billing(calls, ami_events, membership_url):
    run = await calls["sip-one"]
    assert run.returncode == 0, run.output[-3000:]
    (hangup,) = sip_reports(ami_events, run.caller_prefix, "IvrHangup")
    assert (hangup["Outcome"], hangup["Verified"], hangup["MemberStatus"], hangup["Route"]) \
        == ("completed", "1", "AKTIF", "hangup")
    assert hangup["Dialed"] == "1500400" and hangup["AgiStatus"] == "SUCCESS"
    record = await sip_record(hangup["CallId"])
    assert record["caller"] == mask_caller(hangup["CallerIDNum"]) == "0812***101"
    assert record["channel"].startswith("PJSIP/test-caller-")
    assert record["menu_keys"] == ["1", "1"] and record["verified"] is True
    assert "enam ratus ribu rupiah" in record["transcript"]


async def test_several_sip_callers_at_once(calls, ami_events):
    run = await calls["sip-many"]
    assert run.returncode == 0, run.output[-3000:]
    hangups = sip_reports(ami_events, run.caller_prefix, "IvrHangup")
    assert sorted(h["CallerIDNum"] for h in hangups) \
        == sorted(f"{run.caller_prefix}{n}" for n in range(1, run.calls + 1))
    assert {(h["Outcome"], h["Verified"], h["MemberStatus"]) for h in hangups} \
        == {("completed", "1", "AKTIF")}
    assert len({h["CallId"] for h in hangups}) == run.calls
    for hangup in hangups:
        record = await sip_record(hangup["CallId"])
        assert TEXT(P.BILL_GOVERNMENT) in record["transcript"]


async def test_sip_callers_typing_without_pause_lose_no_key(calls, ami_events):
    """The smoke version of the SIP load benchmark (bench/sip.py): every record is the
    demo path's, so no key was lost."""
    run = await calls["sip-load"]
    assert run.returncode == 0, run.output[-3000:]
    hangups = sip_reports(ami_events, run.caller_prefix, "IvrHangup")
    assert len(hangups) == run.calls
    records = [await sip_record(h["CallId"]) for h in hangups]
    lost = [(r["menu_keys"], r["outcome"], r["transfer_reason"]) for r in records
            if not demo_path(r)]
    assert lost == []


async def sip_record(call_id: str) -> dict:
    """A SIP call's record, from the file of the FastAGI server on the AGI address."""
    for _ in range(50):   # the server's writer thread may not have reached the disk yet
        found = [r for r in read_records(EVIDENCE / "calls-asterisk-sip.jsonl")
                 if r["call_id"] == call_id]
        if found:
            (record,) = found
            return record
        await asyncio.sleep(0.1)
    raise AssertionError(f"no call record {call_id}")


# --- The sandbox and the container run the same steps

async def test_the_container_installs_and_starts_asterisk_as_the_sandbox_does():
    dockerfile = (REPO / "dialplan" / "docker" / "Dockerfile").read_text()
    stage = dockerfile[dockerfile.index(" AS asterisk"):]
    installs = re.search(r"apt-get install -y --no-install-recommends ([^&\n]+)", stage)
    assert installs and set(PACKAGES) <= set(installs.group(1).split())
    assert stage.startswith(" AS asterisk") and "FROM debian:sid" in dockerfile
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])", stage, re.M).group(1))
    command = json.loads(re.search(r"^CMD (\[.*\])", stage, re.M).group(1))
    assert entrypoint == ["python3", "/opt/bpjs-ivr/dialplan/sandbox.py", "--root", "/",
                          "install"]
    assert command == asterisk_command(Layout.named(), *FOREGROUND)
    compose = (REPO / "docker-compose.yml").read_text()
    for needed in ("  membership:", "  ivr:", "  asterisk:", "target: asterisk",
                   "dockerfile: dialplan/docker/Dockerfile", ':5060:5060/udp"',
                   ':10000-10099:10000-10099/udp"', "IVR_AGI_ADDRESS: ivr:4573"):
        assert needed in compose


async def test_the_containers_install_step_needs_only_the_standard_library(tmp_path):
    """The entrypoint, on a scratch root: config rendered from the environment, prompts
    copied, then the command run (python3 -I -S: no site-packages, as in the image)."""
    root = tmp_path / "root"
    (root / "usr/lib/x86_64-linux-gnu/asterisk/modules").mkdir(parents=True)
    sounds = tmp_path / "sounds"
    (sounds / "id" / "bpjs").mkdir(parents=True)
    (sounds / "id" / "bpjs" / "greeting.sln").write_bytes(b"\0" * 320)
    env = {"PATH": os.environ["PATH"], "IVR_SOUNDS_DIR": str(sounds),
           "IVR_AGI_ADDRESS": "ivr:4573", "IVR_SIP_ADDRESS": "0.0.0.0:5060",
           "IVR_SIP_CALLERS": "0.0.0.0/0", "IVR_RTP_PORTS": "10000-10099"}
    process = await asyncio.create_subprocess_exec(
        "python3", "-I", "-S", str(REPO / "dialplan" / "sandbox.py"), "--root", str(root),
        "install", "sh", "-c", "echo started", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    output = (await process.communicate())[0].decode()
    assert process.returncode == 0, output
    assert output.endswith("started\n")
    config = root / "etc" / "bpjs-ivr"
    assert "IVR_AGI=ivr:4573" in (config / "extensions.conf").read_text()
    pjsip = (config / "pjsip.conf").read_text()
    assert "bind = 0.0.0.0:5060" in pjsip and "match = 0.0.0.0/0" in pjsip
    assert "rtpend = 10099" in (config / "rtp.conf").read_text()
    assert "@IVR_" not in "".join(p.read_text() for p in config.glob("*.conf"))
    assert (root / "usr/share/asterisk/sounds/id/bpjs/greeting.sln").stat().st_size == 320


async def test_ivr_call_keys_become_the_local_callers_keys():
    assert dtmf_script("1 0001234567890# 1 17081990") == ("1W0001234567890#W1W17081990", False)
    assert dtmf_script("1 _ 9 h") == ("1WWWWWWWW9", True)
    with pytest.raises(ValueError):
        dtmf_script("1 h 2")
