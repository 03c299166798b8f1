"""``ivr asterisk``: a real Asterisk 22 in front of the IVR, and ``ivr call --asterisk``: a
call placed through it.

    ivr asterisk serve    Asterisk, the FastAGI server, the reference membership service
                          and the agent desk together (the README's run command); Ctrl-C
                          stops them all
    ivr asterisk up       start Asterisk alone, or bring its config and prompts up to date;
                          the first time builds its Debian root (about a minute, needs root)
    ivr asterisk status   "up" or "down" (exit status 0 or 3)
    ivr asterisk cli core show channels
    ivr asterisk down
    ivr asterisk restart

Asterisk runs in the sandbox of ``dialplan/sandbox.py`` with this project's dialplan and the
rendered prompts (``IVR_SOUNDS_DIR``); its AGI address is this IVR's (``IVR_AGI_HOST``,
``IVR_AGI_PORT``). The sandbox's own settings (``IVR_ASTERISK_ROOT``, ``IVR_SIP_ADDRESS``,
``IVR_AMI_PORT``, ...) are described there.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shlex
import sys
import threading
import time
import wave

from .app import serve_until_stopped
from .config import Settings

# A caller who types ahead needs no more than this between two answers; "_" in --keys.
GROUP_PAUSE = "W"
SILENCE = "WWWWWW"
# The tests' stand-in agent (test_asterisk.py adds it to the queue): it reports what it
# inherited and hangs up after 2 s. A person's transfer waits for an agent of the desk.
REPORT_AGENT = "Local/report@agent/n"


def sandbox_module():
    """``dialplan.sandbox``, imported when needed: only the Asterisk commands use it."""
    from dialplan import sandbox
    return sandbox


def agi_address(settings: Settings) -> str:
    """Where Asterisk finds this IVR's FastAGI server."""
    host = "127.0.0.1" if settings.agi_host in ("", "0.0.0.0", "::") else settings.agi_host
    return f"{host}:{settings.agi_port}"


def sandbox_for(settings: Settings):
    return sandbox_module().Sandbox(sounds_dir=settings.sounds_dir,
                                    agi_address=agi_address(settings))


def _up(sandbox) -> float:
    started = time.monotonic()
    sandbox.up()
    return time.monotonic() - started


def _where(sandbox) -> str:
    return (f"SIP on {sandbox.sip_address} (dial 1500400 or 165), FastAGI at "
            f"{sandbox.agi_address}, logs in {sandbox.log_dir}")


HOW_TO_CALL = """\
Place a call from a second terminal (each call is recorded; the WAV's path is printed):
    ivr call --asterisk            (type keys while the prompts play)
    ivr call --asterisk --keys "1 CARD# 1 DDMMYYYY"   (a demo participant: see the README)
or from a SIP softphone on this machine: sip:1500400@{sip} (no account, G.711 u-law,
RFC 2833 DTMF). Ctrl-C stops the IVR and Asterisk."""


def _banner(settings: Settings, sandbox, server) -> None:
    print(f"hotline FastAGI server on {settings.agi_host}:{server.port}, membership at "
          f"{settings.effective_membership_url}", flush=True)
    print(HOW_TO_CALL.format(sip=sandbox.sip_address), flush=True)


def desk_beside(settings: Settings, sandbox):
    """The agent desk on the sandbox's Asterisk, to run beside the IVR: its settings and
    demo accounts from the sandbox, its address and the agents' password printed."""
    from .desk.app import credentials_banner, demo_accounts, running_desk, sandbox_settings
    desk_settings = sandbox_settings(settings, sandbox)
    accounts = demo_accounts(desk_settings)

    @contextlib.asynccontextmanager
    async def running():
        async with running_desk(desk_settings, accounts=accounts) as (url, _desk):
            kept_in = None if sandbox.agent_password_given else str(sandbox.secrets_file)
            print(credentials_banner(url, desk_settings, accounts, kept_in), flush=True)
            yield
    return running


def serve(settings: Settings) -> int:
    sandbox = sandbox_for(settings)
    print("starting Asterisk (the first time builds its root, about a minute) ...",
          flush=True)
    seconds = _up(sandbox)
    print(f"Asterisk up in {seconds:.1f} s: {_where(sandbox)}", flush=True)
    try:
        asyncio.run(serve_until_stopped(settings,
                                        lambda server: _banner(settings, sandbox, server),
                                        beside=desk_beside(settings, sandbox)))
    finally:
        sandbox.down()
        print("Asterisk stopped", flush=True)
    return 0


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(
        prog="ivr asterisk", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A real Asterisk 22 in front of the IVR (dialplan/sandbox.py).",
        epilog=__doc__[__doc__.index("    ivr asterisk serve"):])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="Asterisk, the IVR and the reference membership service")
    sub.add_parser("up", help="start Asterisk, or refresh its config and prompts")
    sub.add_parser("down", help="stop Asterisk")
    sub.add_parser("restart", help="stop, then start")
    sub.add_parser("status", help='print "up" or "down"')
    cli = sub.add_parser("cli", help="run one Asterisk CLI command")
    cli.add_argument("words", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    error = sandbox_module().SandboxError
    try:
        if args.command == "serve":
            return serve(settings)
        sandbox = sandbox_for(settings)
        if args.command == "up":
            seconds = _up(sandbox)
            print(f"Asterisk up in {seconds:.1f} s: {_where(sandbox)}")
            print("Start the IVR with: ivr serve; then call with: ivr call --asterisk")
        elif args.command == "down":
            sandbox.down()
            print("down")
        elif args.command == "restart":
            sandbox.down()
            print(f"Asterisk up in {_up(sandbox):.1f} s: {_where(sandbox)}")
        elif args.command == "status":
            state = sandbox.status()
            print(state)
            return 0 if state == "up" else 3
        elif args.command == "cli":
            if not args.words:
                parser.error("cli: which command? e.g. ivr asterisk cli core show channels")
            print(sandbox.cli(" ".join(args.words)), end="")
    except error as exc:
        print(f"ivr asterisk: {exc}", file=sys.stderr)
        return 1
    return 0


# --- ivr call --asterisk

def dtmf_script(keys: str) -> tuple[str, bool]:
    """The ``--keys`` groups of ``ivr call`` as the Local channel's caller presses them:
    groups a second apart (the IVR keeps keys typed ahead, so they may come early), ``_``
    six seconds of silence, ``h`` (last) hang up after the keys. Returns (keys, hang up)."""
    groups = keys.split()
    hang_up = bool(groups) and groups[-1].lower() == "h"
    if hang_up:
        groups.pop()
    out = []
    for group in groups:
        if group == "_":
            out.append(SILENCE)
        elif group.lower() == "h" or not all(c in "0123456789*#ABCDwW" for c in group):
            raise ValueError(f"--keys group {group!r}: keys 0-9 * #, w/W pauses; "
                             f"_ = silence; h = hang up (last)")
        else:
            out.append(group)
    return GROUP_PAUSE.join(out), hang_up


class _Listener:
    """What the Narrator needs from a caller: nothing, the keys go their own way."""

    def on_prompt(self, sound: str, interruptible: bool) -> None:
        return None


def sounds_played_by(command: str) -> list[str]:
    """The sounds a FastAGI command plays, in order: ``STREAM FILE x``, ``GET DATA x ...``
    and ``EXEC Read VAR,a&b&c,...`` (how the IVR asks its questions)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    if words[:2] in (["STREAM", "FILE"], ["GET", "DATA"]) and len(words) > 2 and words[2]:
        return [words[2]]
    if words[:2] == ["EXEC", "Read"] and len(words) > 2:
        fields = words[2].split(",")
        return [sound for sound in fields[1].split("&") if sound] if len(fields) > 1 else []
    return []


def _read_keys(loop: asyncio.AbstractEventLoop, keys: asyncio.Queue) -> None:
    """A person at the terminal: each line's keys are pressed at once; h hangs up."""
    for line in sys.stdin:
        if line.strip().lower() == "h":
            loop.call_soon_threadsafe(keys.put_nowait, None)
            return
        for key in line:
            if key in "0123456789*#":
                loop.call_soon_threadsafe(keys.put_nowait, key)


def call(args: argparse.Namespace, settings: Settings) -> int:
    """``ivr call --asterisk``: a Local-channel call through the sandbox's Asterisk, whose
    other half presses the caller's keys; recorded with MixMonitor."""
    from .cli import Narrator, _find_record
    logging.getLogger("panoramisk").setLevel(logging.WARNING)  # its connection chatter
    sandbox_mod = sandbox_module()
    sandbox = sandbox_for(settings)
    if sandbox.status() != "up":
        print("Asterisk is not running: start everything with `ivr asterisk serve` "
              "(or `ivr asterisk up` beside `ivr serve`)", file=sys.stderr)
        return 2
    try:
        keys, hang_up = dtmf_script(args.keys) if args.keys is not None else ("", False)
    except ValueError as exc:
        print(f"ivr call: {exc}", file=sys.stderr)
        return 2
    live = args.keys is None
    name = time.strftime("call-%Y%m%d-%H%M%S")
    narrator = Narrator(_Listener())

    def on_agi_command(command: str) -> None:
        for sound in sounds_played_by(command):
            narrator.on_prompt(sound, True)

    async def run():
        queue = asyncio.Queue() if live else None
        if live:
            print("  [type keys and Enter while the prompts play; h + Enter hangs up]",
                  flush=True)
            threading.Thread(target=_read_keys, args=(asyncio.get_running_loop(), queue),
                             daemon=True).start()
        return await sandbox.originate_local_async(
            keys=keys, wait=1, hold=0 if hang_up else args.timeout, record=name,
            caller_id=args.caller_id, live_keys=queue, on_agi_command=on_agi_command,
            timeout=args.timeout + 30)

    try:
        report = asyncio.run(run())
    except sandbox_mod.SandboxError as exc:
        print(f"ivr call --asterisk: {exc}", file=sys.stderr)
        return 1
    narrator.flush()
    final = report.final
    print(f"\n-- call {final.get('CallId') or '(no IVR call id)'} ended: "
          f"AGISTATUS={final.get('AgiStatus')}, dialplan route={final.get('Route') or '-'}")
    print("-- channel variables at hang-up (as the dialplan saw them):")
    for field, var in (("Outcome", "IVR_OUTCOME"), ("TransferReason", "IVR_TRANSFER_REASON"),
                       ("Verified", "IVR_VERIFIED"), ("MemberStatus", "IVR_MEMBER_STATUS"),
                       ("CallId", "IVR_CALL_ID")):
        print(f"   {var}={final.get(field, '')}")
    for agent in report.agents:
        print(f"-- an agent answered; it inherited IVR_OUTCOME={agent.get('Outcome')}, "
              f"IVR_TRANSFER_REASON={agent.get('TransferReason')}, "
              f"IVR_VERIFIED={agent.get('Verified')}")
    record = _find_record(settings.call_records, final["CallId"]) if final.get("CallId") \
        else None
    if record is not None:
        print("-- call record:")
        print(json.dumps(record, ensure_ascii=False, indent=2))
    elif final.get("CallId"):
        print(f"-- no call record for {final['CallId']} in {settings.call_records} "
              f"(the server may write its records elsewhere)")
    wav = sandbox.recordings_dir / f"{name}.wav"
    deadline = time.monotonic() + 5   # MixMonitor closes the file just after the hang-up
    while not wav.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if wav.exists():
        with contextlib.suppress(wave.Error, EOFError), wave.open(str(wav)) as audio:
            print(f"-- {audio.getnframes() / audio.getframerate():.0f} s of audio")
        print(f"-- the whole call, recorded: {wav} (listen with e.g. `aplay` or `ffplay`)")
    else:
        print(f"-- no recording at {wav}; see {sandbox.log_dir}")
    return 0
