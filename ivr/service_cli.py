"""``ivr service``: the operator's live announcement and self-service mode (see
``ivr.service_modes``). Every worker and IVR server sharing the store follows on its next
call (within a few seconds); the change is kept with who made it and when, in the store's
audit log too, and logged.

    ivr service show
    ivr service announce announcement-maintenance [--by NAME]
    ivr service announce --clear
    ivr service mode agents_only|status_only|normal [--by NAME]
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys

from prompts import load_catalog

from .config import Settings
from .service_modes import Mode
from .store import open_store

log = logging.getLogger("ivr.service")


def _who(given: str | None) -> str:
    return given or os.environ.get("SUDO_USER") or getpass.getuser()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ivr service", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("show", help="the live announcement and mode, who set them and when")
    announce = sub.add_parser("announce", help="play a catalog prompt after the greeting")
    announce.add_argument("prompt", nargs="?", help="a prompt id of prompts/catalog.toml")
    announce.add_argument("--clear", action="store_true", help="no announcement")
    announce.add_argument("--by", help="who makes the change (default: the login name)")
    mode = sub.add_parser("mode", help="self-service mode")
    mode.add_argument("mode", choices=[m.value for m in Mode])
    mode.add_argument("--by", help="who makes the change (default: the login name)")
    return p


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    await store.open()
    try:
        if args.action == "announce":
            if args.clear == bool(args.prompt):
                print("ivr service announce: give a prompt id or --clear", file=sys.stderr)
                return 2
            value = "" if args.clear else args.prompt
            if value and value not in load_catalog():
                print(f"ivr service announce: {value!r} is not a prompt id of the catalog",
                      file=sys.stderr)
                return 2
            await store.set_service_setting("announcement", value, _who(args.by))
            log.warning("live announcement %s by %s", repr(value) if value else "cleared",
                        _who(args.by))
        elif args.action == "mode":
            await store.set_service_setting("mode", args.mode, _who(args.by))
            log.warning("self-service mode %s set by %s", args.mode, _who(args.by))
        rows = await store.service_settings()
        for name in ("announcement", "mode"):
            row = rows.get(name)
            if row is None:
                print(f"{name}: (not set)")
            else:
                print(f"{name}: {row['value'] or '(none)'}  (by {row['changed_by']} at "
                      f"{row['changed_at']})")
        return 0
    finally:
        await store.close()


def main(argv: list[str], settings: Settings) -> int:
    return asyncio.run(_run(parser().parse_args(argv), settings))
