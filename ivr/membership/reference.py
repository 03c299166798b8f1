"""The reference membership service: the contract (``../shared/spec/membership-api.md``)
over SQLite, seeded with the synthetic demo participants and the fault-injection cards of
``demo.py``. Run alone with ``ivr membership``, or embedded in the IVR process.

The request path holds the identifier, so there is no access log.
"""
from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
from pathlib import Path

import aiosqlite
from aiohttp import web

from ..config import Settings
from ..signals import stop_event
from . import demo

log = logging.getLogger(__name__)

DB = web.AppKey("membership_db", aiosqlite.Connection)

SCHEMA = """CREATE TABLE IF NOT EXISTS participants (
    card_number TEXT PRIMARY KEY,
    nik TEXT UNIQUE NOT NULL,
    body TEXT NOT NULL  -- the contract's JSON, served as it is
)"""
BACKLOG = 2048
QUERIES = {13: "SELECT body FROM participants WHERE card_number = ?",
           16: "SELECT body FROM participants WHERE nik = ?"}


def _not_found() -> web.Response:
    return web.json_response({"error": "not_found"}, status=404)


async def _participant(request: web.Request) -> web.Response:
    ident = request.match_info["id"]
    if not (ident.isascii() and ident.isdigit() and len(ident) in QUERIES):
        return _not_found()
    if ident == demo.FAULT_SERVER_ERROR:
        return web.json_response({"error": "internal"}, status=500)
    if ident == demo.FAULT_MALFORMED:
        return web.Response(text=demo.MALFORMED_BODY, content_type="application/json")
    if ident in demo.DELAYS:
        await asyncio.sleep(demo.DELAYS[ident])
    async with request.app[DB].execute(QUERIES[len(ident)], (ident,)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return _not_found()
    return web.Response(text=row[0], content_type="application/json")


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _bearer_middleware(token: str):
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def bearer(request: web.Request, handler):
        if request.path.startswith("/v1/"):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.json_response({"error": "unauthorized"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)
    return bearer


async def seed(db: aiosqlite.Connection) -> None:
    """Create the table and upsert the demo records (other rows are left alone)."""
    await db.execute(SCHEMA)
    # OR REPLACE also drops an older row holding the same NIK under another card number.
    await db.executemany(
        "INSERT OR REPLACE INTO participants (card_number, nik, body) VALUES (?, ?, ?)",
        [(p["card_number"], p["nik"], json.dumps(p, ensure_ascii=False))
         for p in demo.PARTICIPANTS + demo.FAULT_PARTICIPANTS])
    await db.commit()


def make_app(db_path: str, token: str = "") -> web.Application:
    async def database(app: web.Application):
        if db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        async with aiosqlite.connect(db_path) as db:
            await seed(db)
            app[DB] = db
            yield

    app = web.Application(middlewares=[_bearer_middleware(token)] if token else [])
    app.cleanup_ctx.append(database)
    app.router.add_get("/v1/participants/{id}", _participant)
    app.router.add_get("/health", _health)
    return app


async def run_reference_service(host: str, port: int, db_path: str, token: str = ""
                                ) -> web.AppRunner:
    """Serve on host:port until ``await runner.cleanup()``; port 0 picks a free one
    (``runner.addresses`` tells which)."""
    # No access log. A delayed answer is dropped when its client gives up (handler
    # cancellation), and shutdown does not wait long for one.
    runner = web.AppRunner(make_app(db_path, token), access_log=None,
                           handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        # A burst of new client connections overflows the default backlog (128), and a
        # dropped SYN is retried only after a second: as long as the client's connect timeout.
        await web.TCPSite(runner, host, port, backlog=BACKLOG).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _serve(host: str, port: int, db_path: str, token: str) -> None:
    stop = stop_event()
    runner = await run_reference_service(host, port, db_path, token)
    try:
        address = runner.addresses[0]
        print(f"reference membership service on http://{address[0]}:{address[1]} "
              f"({len(demo.PARTICIPANTS)} demo participants, database {db_path}"
              f"{', bearer token required' if token else ''}); Ctrl-C stops it", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="ivr membership",
        description="The reference membership service with synthetic demo participants.")
    parser.add_argument("--host", default=settings.embedded_membership_host)
    parser.add_argument("--port", type=int, default=settings.embedded_membership_port)
    parser.add_argument("--db", default=settings.membership_db, help="SQLite file")
    parser.add_argument("--token", default=settings.membership_token,
                        help="require 'Authorization: Bearer TOKEN' (default: none)")
    args = parser.parse_args(argv)
    from ..exposure import membership_server_problems
    problems = membership_server_problems(args.host, args.token)
    if problems:
        parser.exit(2, f"ivr membership: refusing to start: {'; '.join(problems)}\n")
    asyncio.run(_serve(args.host, args.port, args.db, args.token))
    return 0
