"""The ``ivr`` command: serve, desk, membership, call, prompts, asterisk, service, config."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from prompts import load_catalog

from .config import Settings
from .privacy import configure_logging

log = logging.getLogger("ivr")


def _banner(settings: Settings, server) -> None:
    print(f"hotline FastAGI server on {settings.agi_host}:{server.port} "
          f"(route /hotline), membership at {settings.effective_membership_url}; "
          f"place a call with: ivr call (demo participants: README)", flush=True)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from .exposure import check
    problems = check(settings)
    if problems:
        print("ivr serve: refusing to start: " + "; ".join(problems), file=sys.stderr)
        return 2
    workers = settings.workers if args.workers is None else args.workers
    if workers != 1:
        from .workers import serve as serve_workers
        return serve_workers(settings, workers)
    from .app import serve_until_stopped
    asyncio.run(serve_until_stopped(settings, lambda server: _banner(settings, server)))
    return 0


def cmd_membership(args: argparse.Namespace, settings: Settings) -> int:
    from .membership.reference import main as membership_main
    return membership_main(args.rest)


def cmd_prompts(args: argparse.Namespace, settings: Settings) -> int:
    from prompts.render import main as prompts_main
    return prompts_main(args.rest)


def cmd_asterisk(args: argparse.Namespace, settings: Settings) -> int:
    from .asterisk import main as asterisk_main
    return asterisk_main(args.rest, settings)


def cmd_desk(args: argparse.Namespace, settings: Settings) -> int:
    from .desk.app import main as desk_main
    return desk_main(settings)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from bench.run import main as bench_main
    except ImportError:
        print("the benchmark runs from a checkout of the project (bench/ is not installed)",
              file=sys.stderr)
        return 2
    return bench_main(args.rest)


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    for name, default in Settings.documentation():
        print(f"{name}={default}")
    return 0


class TerminalCaller:
    """A person at the keyboard: when the IVR waits, type keys and Enter
    (an empty line lets the IVR time out, ``h`` hangs up)."""

    def __init__(self) -> None:
        self.buffer = ""

    def on_prompt(self, sound: str, interruptible: bool) -> None:
        return None

    async def on_wait(self) -> str | None:
        from .emulator import HANG_UP
        if not self.buffer:
            print("  [keys, then Enter; empty = no key; h = hang up] > ", end="", flush=True)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if not line or line.strip().lower() == "h":
                return HANG_UP
            self.buffer = "".join(c for c in line if c in "0123456789*#")
            if not self.buffer:
                return None
        key, self.buffer = self.buffer[0], self.buffer[1:]
        return key


class Narrator:
    """Wraps a caller and prints what it hears: a prompt per line, number fragments
    joined into one phrase, and the keys it presses."""

    def __init__(self, caller) -> None:
        self.caller = caller
        self.catalog = load_catalog()
        self.phrase: list[str] = []

    def on_prompt(self, sound: str, interruptible: bool) -> str | None:
        prompt_id = self.catalog.prompt_id(sound)
        if prompt_id in self.catalog.fragments:
            self.phrase.append(self.catalog.fragments[prompt_id])
        else:
            self.flush()
            print(f"IVR: {self.catalog.text(prompt_id) if prompt_id in self.catalog else sound}")
        key = self.caller.on_prompt(sound, interruptible)
        if key is not None:
            self.flush()
            print(f"  (caller: {key})")
        return key

    def on_wait(self):
        self.flush()
        return self.caller.on_wait()

    def flush(self) -> None:
        if self.phrase:
            print("IVR: " + " ".join(self.phrase))
            self.phrase = []


def _find_record(path: str, call_id: str, wait: float = 3.0) -> dict | None:
    import time
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if Path(path).exists():
            for line in Path(path).read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                if record.get("call_id") == call_id:
                    return record
        time.sleep(0.1)
    return None


def cmd_call(args: argparse.Namespace, settings: Settings) -> int:
    if args.asterisk:
        from .asterisk import call as call_through_asterisk
        return call_through_asterisk(args, settings)
    from .emulator import AsteriskEmulator, ScriptedCaller
    host = args.host or ("127.0.0.1" if settings.agi_host in ("0.0.0.0", "::") else
                         settings.agi_host)
    port = args.port or settings.agi_port
    caller = Narrator(ScriptedCaller(args.keys, barge_in=args.barge_in)
                      if args.keys is not None else TerminalCaller())
    emulator = AsteriskEmulator(host, port, caller, caller_id=args.caller_id,
                                timeout=args.timeout)
    try:
        call = asyncio.run(emulator.run())
    except OSError as exc:
        print(f"cannot reach the FastAGI server at {host}:{port}: {exc.strerror or exc}. "
              f"Start it with: ivr serve", file=sys.stderr)
        return 2
    caller.flush()
    print(f"\n-- call {call.call_id} ended ({call.ended}); keys sent: {call.keys_sent or '-'}")
    print("-- channel variables:")
    for name, value in sorted(call.variables.items()):
        print(f"   {name}={value}")
    record = _find_record(settings.call_records, call.call_id)
    if record is None:
        print(f"-- no call record for {call.call_id} in {settings.call_records} "
              f"(the server may write its records elsewhere)")
    else:
        print("-- call record:")
        print(json.dumps(record, ensure_ascii=False, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the FastAGI server (and the embedded membership "
                                         "service when IVR_MEMBERSHIP_URL is unset)")
    serve.add_argument("--workers", type=int, default=None,
                       help="server processes sharing the port, one per core "
                            "(SO_REUSEPORT; IVR_WORKERS, default 1)")
    serve.set_defaults(func=cmd_serve)
    for name, func, text in (
            ("membership", cmd_membership, "the reference membership service alone"),
            ("prompts", cmd_prompts, "render, check or list the prompt audio"),
            ("asterisk", cmd_asterisk, "a real Asterisk 22 in front of the IVR: serve, up, "
                                       "down, status, cli"),
            ("service", cmd_service, "live announcement and self-service mode: show, announce, "
                              "mode")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=func)
    call = sub.add_parser("call", help="place a call through the built-in Asterisk emulator")
    call.add_argument("--keys", help='scripted caller, e.g. "1 0001234567890# 1 17081990" '
                                     '(a group per question; _ = silence; h = hang up)')
    call.add_argument("--barge-in", action="store_true",
                      help="the scripted caller types while prompts play")
    call.add_argument("--caller-id", default="081234567890")
    call.add_argument("--host")
    call.add_argument("--port", type=int)
    call.add_argument("--timeout", type=float, default=600.0)
    call.add_argument("--asterisk", action="store_true",
                      help="call through the real Asterisk (ivr asterisk serve), recorded")
    call.set_defaults(func=cmd_call)
    sub.add_parser("config", help="list the IVR_* settings and their defaults"
                   ).set_defaults(func=cmd_config)
    sub.add_parser("desk", help="the agent desk (web page for agents, fed by Asterisk's AMI)"
                   ).set_defaults(func=cmd_desk)
    return parser


def cmd_service(args: argparse.Namespace, settings: Settings) -> int:
    from .service_cli import main as service_main
    return service_main(args.rest, settings)


# Subcommands with their own argument parsers: everything after the name is theirs.
PASS_THROUGH = {"membership": cmd_membership, "prompts": cmd_prompts, "bench": cmd_bench,
                "asterisk": cmd_asterisk, "service": cmd_service}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    if argv and argv[0] in PASS_THROUGH:
        return PASS_THROUGH[argv[0]](argparse.Namespace(rest=argv[1:]), settings)
    args = build_parser().parse_args(argv)
    return args.func(args, settings)


if __name__ == "__main__":
    sys.exit(main())
