"""The desk's web service: the agents' page, its JSON interface and its live event stream.

Routes are the spec's Interface (agent-desk.md), plus ``GET /api/dispositions`` (the wrap-up
choices the page offers) and the page's two static files. The hub behind them is any
``Desk`` (``ivr.desk.service`` in production, a fake in the tests); this module holds no
call state of its own, only accounts and login sessions.

Guards, in the order a request meets them: a body size limit; for every POST the
same-origin rule (a foreign ``Origin``, a cross-site or same-site ``Sec-Fetch-Site``, or a
foreign ``Referer`` without ``Origin`` is refused 403); for ``/api/*`` a live session
(401) and, for a POST, a JSON body (415). Errors are always ``{"error": ...}``; nothing
of a traceback reaches a client.

The live stream is Server-Sent Events at ``GET /api/events``: a retry hint, then the
``me``, ``queue`` and ``asterisk`` events, then the hub's events for this agent, with
keep-alive comments in between; it ends when the session does.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import AsyncIterator, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from ivr.desk.accounts import Accounts, LoginThrottled
from ivr.desk.errors import DeskError
from ivr.desk.sessions import Sessions

log = logging.getLogger(__name__)

COOKIE = "ivr_desk"
BODY_MAX = 16 * 1024                 # the largest legitimate body: a wrap-up note, ~4 KiB
CALL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")     # Asterisk uniqueids and ours
STATES = ("ready", "paused", "offline")
PAUSE_REASONS = ("break", "meeting", "after_call_work")
NOTE_MAX = 1000
USERNAME_MAX = 64
STREAMS_PER_AGENT = 4
RETRY_MS = 3000                      # the EventSource's reconnection delay
SWEEP_SECONDS = 60.0

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
STATIC = {"desk.css": "text/css", "desk.js": "text/javascript"}


class Desk(Protocol):
    """The hub, as the web side uses it (desk-contract.md, section 3)."""
    dispositions: list[str]
    asterisk: str

    async def logged_in(self, agent_id: str) -> None: ...
    async def logged_out(self, agent_id: str) -> None: ...
    def me(self, agent_id: str) -> dict: ...
    async def set_state(self, agent_id: str, state: str, reason: str | None) -> dict: ...
    def queue(self) -> dict: ...
    async def call_context(self, agent_id: str, call_id: str) -> dict: ...
    async def wrapup(self, agent_id: str, call_id: str, disposition: str, note: str) -> dict: ...
    def subscribe(self, agent_id: str) -> asyncio.Queue: ...
    def unsubscribe(self, agent_id: str, queue: asyncio.Queue) -> None: ...


@dataclass(eq=False)
class _Stream:
    """One open event stream; ``stop()`` ends it from outside (logout, shutdown)."""
    task: asyncio.Task
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True
        self.task.cancel()


@dataclass
class _State:
    desk: Desk
    accounts: Accounts
    sessions: Sessions
    settings: object
    page: bytes
    static: dict[str, bytes]
    streams: dict[str, set[_Stream]] = field(default_factory=dict)

    def stop_streams(self, agent_id: str | None = None) -> None:
        for agent, streams in self.streams.items():
            if agent_id is None or agent == agent_id:
                for stream in list(streams):
                    stream.stop()


STATE = web.AppKey("desk_state", _State)
AGENT = web.RequestKey("desk_agent", str)          # the logged-in agent's id
TOKEN = web.RequestKey("desk_token", str)          # the session cookie's token


def make_app(desk: Desk, accounts: Accounts, settings, *,
             sessions: Sessions | None = None) -> web.Application:
    files = resources.files("ivr.desk") / "static"
    state = _State(desk=desk, accounts=accounts,
                   sessions=sessions or Sessions(settings.desk_session_hours * 3600.0),
                   settings=settings, page=(files / "index.html").read_bytes(),
                   static={name: (files / name).read_bytes() for name in STATIC})
    app = web.Application(middlewares=[_errors, _guard], client_max_size=BODY_MAX)
    app[STATE] = state
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_close_streams)
    app.cleanup_ctx.append(_session_sweeper)
    app.router.add_get("/", _page)
    app.router.add_get("/static/{name}", _static)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/api/me", _me)
    app.router.add_post("/api/me/state", _set_state)
    app.router.add_get("/api/queue", _queue)
    app.router.add_get("/api/dispositions", _dispositions)
    app.router.add_get("/api/calls/{call_id}", _call)
    app.router.add_post("/api/calls/{call_id}/wrapup", _wrapup)
    app.router.add_get("/api/events", _events)
    return app


@contextlib.asynccontextmanager
async def running_desk_web(desk: Desk, accounts: Accounts, settings, *,
                           host: str | None = None, port: int | None = None,
                           sessions: Sessions | None = None) -> AsyncIterator[str]:
    """The desk's web service listening (``IVR_DESK_HOST``/``IVR_DESK_PORT`` unless given;
    port 0 picks a free one); yields its base URL."""
    app = make_app(desk, accounts, settings, sessions=sessions)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.desk_host if host is None else host,
                           settings.desk_port if port is None else port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        if ":" in bound_host:
            bound_host = f"[{bound_host}]"
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()


async def run_desk_web(desk: Desk, accounts: Accounts, settings) -> None:
    """Serves the desk's web side until cancelled (the ``ivr desk`` command's task)."""
    async with running_desk_web(desk, accounts, settings) as url:
        log.info("desk: agents' page at %s/", url)
        await asyncio.Event().wait()


# --- middlewares and signals ---------------------------------------------------------

def _error(status: int, error: str, **extra) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DeskError as refused:
        status = refused.status if 400 <= refused.status < 500 else 500
        return _error(status, refused.error if status < 500 else "internal error")
    except web.HTTPException as http:
        if http.status < 400:
            raise
        return _error(http.status, (http.reason or "error").lower(),
                      **({"allow": sorted(http.allowed_methods)}
                         if isinstance(http, web.HTTPMethodNotAllowed) else {}))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("desk: internal error on %s %s", request.method, request.path)
        return _error(500, "internal error")


@web.middleware
async def _guard(request: web.Request, handler) -> web.StreamResponse:
    state = request.app[STATE]
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        if request.content_length is not None and request.content_length > BODY_MAX:
            raise DeskError(413, "request body too large")
        _same_origin(request, state.settings)
    if request.path.startswith("/api/"):
        token = request.cookies.get(COOKIE)
        session = state.sessions.get(token)
        if session is None:
            raise DeskError(401, "not logged in")
        request[AGENT], request[TOKEN] = session.agent_id, token
        if request.method == "POST" and request.content_type != "application/json":
            raise DeskError(415, "Content-Type must be application/json")
    return await handler(request)


def _own_origin(request: web.Request, settings) -> str:
    configured = settings.desk_origin.rstrip("/")
    return (configured or f"{request.scheme}://{request.host}").lower()


def _same_origin(request: web.Request, settings) -> None:
    """A change must come from the desk's own page (browsers send these headers; clients
    without a browser send none and are judged by their session alone)."""
    site = request.headers.get("Sec-Fetch-Site", "").lower()
    if site in ("cross-site", "same-site"):
        raise DeskError(403, "cross-site request refused")
    own = _own_origin(request, settings)
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin.strip().lower() != own:
            raise DeskError(403, "request from a foreign origin refused")
        return
    referer = request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer.strip())
        if f"{parts.scheme}://{parts.netloc}".lower() != own:
            raise DeskError(403, "request from a foreign page refused")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if not request.path.startswith("/static/"):
        headers["Cache-Control"] = "no-store"


async def _close_streams(app: web.Application) -> None:
    app[STATE].stop_streams()


async def _session_sweeper(app: web.Application) -> AsyncIterator[None]:
    """Every minute: agents whose last session expired are logged out of the queue."""
    state = app[STATE]

    async def sweep() -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            for agent_id in state.sessions.sweep():
                state.stop_streams(agent_id)
                try:
                    await state.desk.logged_out(agent_id)
                except Exception:
                    log.exception("desk: logging out %s after expiry failed", agent_id)

    task = asyncio.create_task(sweep(), name="desk-session-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- the page ------------------------------------------------------------------------

async def _page(request: web.Request) -> web.Response:
    return web.Response(body=request.app[STATE].page, content_type="text/html", charset="utf-8")


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise DeskError(404, "not found")
    return web.Response(body=request.app[STATE].static[name], content_type=STATIC[name],
                        charset="utf-8", headers={"Cache-Control": "no-cache"})


# --- login and logout ----------------------------------------------------------------

async def _login(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise DeskError(415, "the login form must be posted as a form")
    form = await request.post()
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise DeskError(400, "username and password are required")
    address = request.remote or "unknown"
    agent = None
    if len(username) <= USERNAME_MAX:
        try:
            agent = await state.accounts.authenticate(username, password, address)
        except LoginThrottled as throttled:
            wait = max(1, math.ceil(throttled.retry_after))
            log.warning("desk: login throttled for user %r from %s", username, address)
            response = _error(429, f"too many failed logins; try again in {wait} s",
                              retry_after=wait)
            response.headers["Retry-After"] = str(wait)
            return response
    if agent is None:
        log.info("desk: failed login for user %r from %s", username[:USERNAME_MAX], address)
        return _error(401, "wrong user name or password")
    state.sessions.end(request.cookies.get(COOKIE))       # no session fixation
    token = state.sessions.create(agent.id)
    await state.desk.logged_in(agent.id)
    log.info("desk: %s logged in from %s", agent.id, address)
    response = web.Response(status=303, headers={"Location": "/"})
    response.set_cookie(COOKIE, token, path="/", httponly=True, samesite="Strict",
                        secure=state.settings.desk_origin.lower().startswith("https:"),
                        max_age=int(state.sessions.lifetime))
    return response


async def _logout(request: web.Request) -> web.Response:
    """Ends every session of the agent (the agent leaves the desk and the queue)."""
    state = request.app[STATE]
    session = state.sessions.end(request.cookies.get(COOKIE))
    if session is not None:
        state.sessions.end_agent(session.agent_id)
        state.stop_streams(session.agent_id)
        await state.desk.logged_out(session.agent_id)
        log.info("desk: %s logged out", session.agent_id)
    response = web.Response(status=303, headers={"Location": "/"})
    response.del_cookie(COOKIE, path="/")
    return response


# --- the JSON interface --------------------------------------------------------------

async def _json_body(request: web.Request) -> dict:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise DeskError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise DeskError(400, "the body must be a JSON object")
    return data


def _call_id(request: web.Request) -> str:
    call_id = request.match_info["call_id"]
    if not CALL_ID.fullmatch(call_id):
        raise DeskError(400, "invalid call id")
    return call_id


async def _me(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].desk.me(request[AGENT]))


async def _set_state(request: web.Request) -> web.Response:
    body = await _json_body(request)
    new, reason = body.get("state"), body.get("reason")
    if new not in STATES:
        raise DeskError(400, f"state must be one of {', '.join(STATES)}")
    if new == "paused":
        if reason not in PAUSE_REASONS:
            raise DeskError(400, f"a pause needs a reason: {', '.join(PAUSE_REASONS)}")
    elif reason is not None:
        raise DeskError(400, "only a pause has a reason")
    me = await request.app[STATE].desk.set_state(request[AGENT], new, reason)
    return web.json_response(me)


async def _queue(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].desk.queue())


async def _dispositions(request: web.Request) -> web.Response:
    desk = request.app[STATE].desk
    return web.json_response({"dispositions": list(desk.dispositions),
                              "pause_reasons": list(PAUSE_REASONS), "note_max": NOTE_MAX})


async def _call(request: web.Request) -> web.Response:
    call_id = _call_id(request)
    context = await request.app[STATE].desk.call_context(request[AGENT], call_id)
    return web.json_response(context)


async def _wrapup(request: web.Request) -> web.Response:
    call_id = _call_id(request)
    body = await _json_body(request)
    desk = request.app[STATE].desk
    disposition, note = body.get("disposition"), body.get("note", "")
    if not isinstance(disposition, str) or disposition not in desk.dispositions:
        raise DeskError(400, "unknown disposition")
    if note is None:
        note = ""
    if not isinstance(note, str):
        raise DeskError(400, "the note must be text")
    if len(note) > NOTE_MAX:
        raise DeskError(400, f"the note is longer than {NOTE_MAX} characters")
    saved = await desk.wrapup(request[AGENT], call_id, disposition, note)
    return web.json_response(saved)


# --- the live stream -----------------------------------------------------------------

async def _events(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    agent_id, token = request[AGENT], request[TOKEN]
    streams = state.streams.setdefault(agent_id, set())
    if len(streams) >= STREAMS_PER_AGENT:
        raise DeskError(429, "too many open event streams for this agent")
    keepalive = state.settings.desk_keepalive_seconds
    stream = _Stream(asyncio.current_task())
    streams.add(stream)
    queue = state.desk.subscribe(agent_id)
    response = EventSourceResponse(ping_interval=keepalive)
    try:
        await response.prepare(request)
        await response.send(_dumps(state.desk.me(agent_id)), event="me", retry=RETRY_MS)
        await response.send(_dumps(state.desk.queue()), event="queue")
        await response.send(_dumps({"state": state.desk.asterisk}), event="asterisk")
        while response.is_connected():
            try:
                name, data = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                name = None
            if state.sessions.get(token) is None:
                break
            if name is not None:
                await response.send(_dumps(data), event=name)
    except asyncio.CancelledError:
        if not stream.stopped:
            raise
        asyncio.current_task().uncancel()
    except (ConnectionResetError, TimeoutError):
        pass                                   # the page went away
    finally:
        state.desk.unsubscribe(agent_id, queue)
        streams.discard(stream)
        if not streams:
            state.streams.pop(agent_id, None)
        if response.prepared:
            response.stop_streaming()
    return response


_last_dumped: tuple[dict, str] | None = None


def _dumps(data: dict) -> str:
    """JSON for an event. The hub hands one object to every agent's stream (a queue board
    of hundreds of callers to tens of agents), so the last one is encoded once for all."""
    global _last_dumped
    if _last_dumped is not None and _last_dumped[0] is data:
        return _last_dumped[1]
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    _last_dumped = (data, text)
    return text
