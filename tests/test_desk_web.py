"""The desk's web service over real HTTP on loopback, against the fake hub (tests/fake_desk.py):
every route of the spec's Interface, and a hostile test for each guard."""
from __future__ import annotations

import asyncio
import inspect
import json
import re
from dataclasses import dataclass

import aiohttp
import pytest
from yarl import URL

from ivr.config import Settings
from ivr.desk import accounts as accounts_module
from ivr.desk import web as web_module
from ivr.desk.accounts import Accounts, LoginThrottle, hash_password, verify_password
from ivr.desk.errors import DeskError
from ivr.desk.sessions import Sessions
from ivr.desk.web import STREAMS_PER_AGENT, Desk, running_desk_web
from tests.conftest import until
from tests.fake_desk import CARD, FakeDesk, unverified_call, verified_call, waiting_entries

PASSWORD = "correct horse 42"
FOREIGN = "http://evil.example"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    url: str
    desk: FakeDesk
    clock: Clock
    sessions: Sessions

    def client(self, **kwargs) -> aiohttp.ClientSession:
        # unsafe=True: the jar keeps cookies for an IP address host (127.0.0.1)
        return aiohttp.ClientSession(self.url, cookie_jar=aiohttp.CookieJar(unsafe=True),
                                     **kwargs)

    async def login(self, client, username: str = "agent1", password: str = PASSWORD,
                    **kwargs) -> aiohttp.ClientResponse:
        async with client.post("/login", data={"username": username, "password": password},
                               allow_redirects=False, **kwargs) as response:
            await response.read()
            return response


@pytest.fixture
async def desk():
    clock = Clock()
    fake = FakeDesk()
    for call in (verified_call(), unverified_call()):
        fake.add_call(call)
    throttle = LoginThrottle(per_user=3, per_address=6, window=60.0, clock=clock)
    accounts = Accounts.demo(PASSWORD, throttle)
    sessions = Sessions(lifetime=3600.0, clock=clock)
    settings = Settings.from_env({}, desk_keepalive_seconds=0.2)
    async with running_desk_web(fake, accounts, settings, host="127.0.0.1", port=0,
                                sessions=sessions) as url:
        yield Harness(url, fake, clock, sessions)


@pytest.fixture
async def agent1(desk):
    async with desk.client() as client:
        response = await desk.login(client)
        assert response.status == 303
        yield client


async def error_of(response: aiohttp.ClientResponse) -> str:
    assert response.content_type == "application/json", await response.text()
    body = await response.json()
    assert set(body) >= {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


# --- the fake keeps the contract ------------------------------------------------------

def test_fake_desk_has_every_member_of_the_protocol_with_the_same_signature():
    members = [m for m in vars(Desk) if not m.startswith("_")] + list(Desk.__annotations__)
    assert set(members) >= {"me", "subscribe", "dispositions", "asterisk", "wrapup"}
    fake = FakeDesk()
    for name in members:
        assert hasattr(fake, name), name
        if name in Desk.__annotations__:
            continue
        expected = inspect.signature(getattr(Desk, name))
        actual = inspect.signature(getattr(FakeDesk, name))
        assert list(actual.parameters) == list(expected.parameters), name
        assert (inspect.iscoroutinefunction(getattr(FakeDesk, name))
                == inspect.iscoroutinefunction(getattr(Desk, name))), name


# --- login, logout, sessions ----------------------------------------------------------

async def test_login_sets_an_httponly_samesite_cookie_and_redirects_to_the_page(desk):
    async with desk.client() as client:
        response = await desk.login(client)
        assert response.status == 303 and response.headers["Location"] == "/"
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("ivr_desk=")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert len(response.cookies["ivr_desk"].value) >= 40
        async with client.get("/api/me") as me:
            assert me.status == 200
            assert (await me.json())["agent"] == "agent1"
    assert ("logged_in", "agent1") in desk.desk.happened


@pytest.mark.parametrize("username,password", [("agent1", "wrong password"),
                                               ("nobody", PASSWORD), ("agent1", ""),
                                               ("agent1", PASSWORD * 40), ("x" * 65, PASSWORD)])
async def test_a_wrong_login_is_401_json_without_cookie(desk, username, password):
    async with desk.client() as client:
        async with client.post("/login", data={"username": username, "password": password},
                               allow_redirects=False) as response:
            assert response.status == 401
            assert "Set-Cookie" not in response.headers
            assert await error_of(response) == "wrong user name or password"
    assert desk.desk.happened == []


async def test_login_without_fields_is_400(desk):
    async with desk.client() as client:
        async with client.post("/login", data={"username": "agent1"}) as response:
            assert response.status == 400
            await error_of(response)


async def test_failed_logins_are_throttled_per_user_even_with_the_right_password(desk):
    async with desk.client() as client:
        for _ in range(3):
            assert (await desk.login(client, password="guess-guess")).status == 401
        async with client.post("/login", data={"username": "agent1", "password": PASSWORD},
                               allow_redirects=False) as response:
            assert response.status == 429
            body = await response.json()
            assert "too many failed logins" in body["error"]
            assert 1 <= body["retry_after"] <= 60
            assert response.headers["Retry-After"] == str(body["retry_after"])
            assert "Set-Cookie" not in response.headers
        # the other agent is not locked out by agent1's failures
        assert (await desk.login(client, "agent2")).status == 303
        desk.clock.now += 61
        assert (await desk.login(client)).status == 303


async def test_failed_logins_are_throttled_per_address_across_user_names(desk):
    async with desk.client() as client:
        for i in range(6):
            assert (await desk.login(client, f"made-up-{i}", "guess-guess")).status == 401
        response = await desk.login(client, "agent2")
        assert response.status == 429


async def test_concurrent_guesses_cannot_pass_the_limit(desk):
    async with desk.client() as client:
        results = await asyncio.gather(*[desk.login(client, password=f"guess-{i}-xx")
                                         for i in range(8)])
    statuses = sorted(r.status for r in results)
    assert statuses == [401] * 3 + [429] * 5


async def test_every_api_path_needs_a_session(desk):
    paths = [("GET", "/api/me"), ("GET", "/api/queue"), ("GET", "/api/dispositions"),
             ("GET", "/api/calls/1764640000.101"), ("GET", "/api/events"),
             ("GET", "/api/no-such-thing"), ("POST", "/api/me/state"),
             ("POST", "/api/calls/1764640000.101/wrapup")]
    for cookie in ({}, {"ivr_desk": "forged-token-" + "a" * 40}, {"ivr_desk": "x" * 5000}):
        async with desk.client(cookies=cookie) as client:
            for method, path in paths:
                async with client.request(method, path, json={"state": "ready"}) as response:
                    assert response.status == 401, (method, path, cookie.keys())
                    assert await error_of(response) == "not logged in"
    assert desk.desk.audit == [] and desk.desk.happened == []


async def test_a_session_expires(desk, agent1):
    async with agent1.get("/api/me") as response:
        assert response.status == 200
    desk.clock.now += 3601
    async with agent1.get("/api/me") as response:
        assert response.status == 401
    assert desk.sessions.sweep() == {"agent1"}


async def test_agents_whose_sessions_expired_are_logged_out_of_the_queue(monkeypatch):
    monkeypatch.setattr(web_module, "SWEEP_SECONDS", 0.05)
    clock, fake = Clock(), FakeDesk()
    sessions = Sessions(lifetime=60.0, clock=clock)
    settings = Settings.from_env({}, desk_keepalive_seconds=0.2)
    async with running_desk_web(fake, Accounts.demo(PASSWORD), settings, host="127.0.0.1",
                                port=0, sessions=sessions) as url:
        harness = Harness(url, fake, clock, sessions)
        async with harness.client() as one, harness.client() as two:
            assert (await harness.login(one)).status == 303
            clock.now += 30
            assert (await harness.login(two)).status == 303      # agent1 again, later
            clock.now += 31                                      # the first one expires
            await asyncio.sleep(0.3)
            assert ("logged_out", "agent1") not in fake.happened
            clock.now += 30                                      # and the second
            async with asyncio.timeout(5):
                while ("logged_out", "agent1") not in fake.happened:
                    await asyncio.sleep(0.05)


async def test_shutting_down_closes_open_streams():
    fake = FakeDesk()
    settings = Settings.from_env({}, desk_keepalive_seconds=30.0)
    async with asyncio.timeout(20):             # a guard against a hang, not a timing goal
        async with running_desk_web(fake, Accounts.demo(PASSWORD), settings,
                                    host="127.0.0.1", port=0) as url:
            harness = Harness(url, fake, Clock(), Sessions())
            client = harness.client()
            assert (await harness.login(client)).status == 303
            stream = await client.get("/api/events")
            await read_events(stream, {"asterisk"})
            assert fake.streams("agent1") == 1
        assert fake.streams("agent1") == 0
        while not stream.content.at_eof():          # the stream was ended, not cut
            await stream.content.read()
        stream.close()
        await client.close()


async def test_logout_ends_the_session_and_its_event_stream(desk, agent1):
    token = agent1.cookie_jar.filter_cookies(URL(desk.url))["ivr_desk"].value
    async with agent1.get("/api/events") as stream:
        await read_events(stream, {"asterisk"})
        assert desk.desk.streams("agent1") == 1
        async with agent1.post("/logout", allow_redirects=False) as response:
            assert response.status == 303
            assert "ivr_desk=" in response.headers["Set-Cookie"]
        async with asyncio.timeout(5):
            assert await stream.content.read() is not None
            while not stream.content.at_eof():
                await stream.content.read()
    assert desk.desk.streams("agent1") == 0
    assert ("logged_out", "agent1") in desk.desk.happened
    async with desk.client(cookies={"ivr_desk": token}) as stale:
        async with stale.get("/api/me") as response:
            assert response.status == 401


async def test_logout_without_a_session_changes_nothing(desk):
    async with desk.client() as client:
        async with client.post("/logout", allow_redirects=False) as response:
            assert response.status == 303
    assert desk.desk.happened == []


# --- the same-origin rule for every POST ----------------------------------------------

async def test_a_foreign_origin_cannot_log_in(desk):
    async with desk.client() as client:
        response = await desk.login(client, headers={"Origin": FOREIGN})
        assert response.status == 403
        assert "Set-Cookie" not in response.headers
    assert desk.desk.happened == []


async def test_own_origin_logs_in(desk):
    async with desk.client() as client:
        assert (await desk.login(client, headers={"Origin": desk.url})).status == 303


@pytest.mark.parametrize("headers", [
    {"Origin": FOREIGN}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:1"},
    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
    {"Referer": FOREIGN + "/page"},
])
async def test_a_cross_site_post_is_refused(desk, agent1, headers):
    for path, body in [("/api/me/state", {"state": "ready"}),
                       ("/api/calls/1764640000.101/wrapup", {"disposition": "answered"}),
                       ("/logout", None)]:
        async with agent1.post(path, json=body, headers=headers,
                               allow_redirects=False) as response:
            assert response.status == 403, (path, headers)
            assert "refused" in await error_of(response)
    assert [h for h in desk.desk.happened if h[0] != "logged_in"] == []
    assert desk.desk.wrapups == {}
    async with agent1.get("/api/me") as response:          # the session survived
        assert response.status == 200


async def test_own_page_posts_pass_the_origin_rule(desk, agent1):
    headers = {"Origin": desk.url, "Sec-Fetch-Site": "same-origin", "Referer": desk.url + "/"}
    async with agent1.post("/api/me/state", json={"state": "ready"}, headers=headers) as response:
        assert response.status == 200
    async with agent1.post("/api/me/state", json={"state": "offline"},
                           headers={"Referer": desk.url + "/"}) as response:
        assert response.status == 200


async def test_api_posts_need_a_json_content_type(desk, agent1):
    for data, content_type in [('{"state": "ready"}', "text/plain"),
                               ("state=ready", "application/x-www-form-urlencoded"),
                               ('{"state": "ready"}', None)]:
        headers = {"Content-Type": content_type} if content_type else {}
        async with agent1.post("/api/me/state", data=data.encode(), headers=headers) as response:
            assert response.status == 415, content_type
            assert "application/json" in await error_of(response)
    async with desk.client() as client:
        async with client.post("/login", json={"username": "agent1", "password": PASSWORD},
                               allow_redirects=False) as response:
            assert response.status == 415
    assert [h for h in desk.desk.happened if h[0] == "state"] == []


async def test_huge_bodies_are_refused(desk, agent1):
    huge = {"state": "ready", "pad": "x" * 100_000}
    async with agent1.post("/api/me/state", json=huge) as response:
        assert response.status == 413
        await error_of(response)

    async def chunks():                                 # no Content-Length: read until the cap
        for _ in range(40):
            yield b" " * 1024

    async with agent1.post("/api/calls/1764640000.101/wrapup", data=chunks(),
                           headers={"Content-Type": "application/json"}) as response:
        assert response.status == 413
        await error_of(response)
    async with desk.client() as client:
        async with client.post("/login", data={"username": "agent1",
                                               "password": "p" * 50_000}) as response:
            assert response.status == 413
    assert desk.desk.wrapups == {} and [h for h in desk.desk.happened if h[0] == "state"] == []


# --- presence, queue, calls, wrap-up --------------------------------------------------

async def test_me_and_presence_changes(desk, agent1):
    async with agent1.get("/api/me") as response:
        assert await response.json() == {"agent": "agent1", "name": "Agent 1", "state": "offline",
                                         "pause_reason": None, "call_id": None}
    async with agent1.post("/api/me/state", json={"state": "ready"}) as response:
        assert (await response.json())["state"] == "ready"
    async with agent1.post("/api/me/state", json={"state": "paused", "reason": "meeting"}) as r:
        assert (await r.json())["pause_reason"] == "meeting"
    assert desk.desk.happened[-2:] == [("state", "agent1", "ready", None),
                                       ("state", "agent1", "paused", "meeting")]


@pytest.mark.parametrize("body,reason", [
    ({"state": "paused"}, "a pause needs a reason"),
    ({"state": "paused", "reason": "nap"}, "a pause needs a reason"),
    ({"state": "ready", "reason": "break"}, "only a pause has a reason"),
    ({"state": "on_call"}, "state must be one of"),
    ({"state": ["ready"]}, "state must be one of"),
    ({}, "state must be one of"),
])
async def test_bad_presence_changes_are_400_with_a_reason(desk, agent1, body, reason):
    async with agent1.post("/api/me/state", json=body) as response:
        assert response.status == 400
        assert reason in await error_of(response)
    assert [h for h in desk.desk.happened if h[0] == "state"] == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"ready"', b"\xff\xfe"])
async def test_a_body_that_is_no_json_object_is_400(desk, agent1, raw):
    async with agent1.post("/api/me/state", data=raw,
                           headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
        assert "JSON" in await error_of(response)


async def test_queue_and_dispositions(desk, agent1):
    desk.desk.set_waiting(waiting_entries())
    async with agent1.get("/api/queue") as response:
        board = await response.json()
    assert [e["call_id"] for e in board["waiting"]] == ["1764640000.101", "1764640000.202", "cb-17"]
    assert board["waiting"][2]["kind"] == "callback"
    assert board["agents"] == {"ready": 0, "on_call": 0, "paused": 0}
    async with agent1.get("/api/dispositions") as response:
        choices = await response.json()
    assert choices["dispositions"] == desk.desk.dispositions and choices["note_max"] == 1000


async def test_a_call_context_is_served_and_audited(desk, agent1):
    async with agent1.get("/api/calls/1764640000.101") as response:
        assert response.status == 200
        context = await response.json()
    assert context["card"] == CARD and context["verified"] is True
    assert context["transcript"] and context["history"][0]["disposition"] == "answered"
    assert desk.desk.audit == [("agent1", "1764640000.101")]


async def test_an_unknown_call_is_404_json(desk, agent1):
    async with agent1.get("/api/calls/1764649999.9") as response:
        assert response.status == 404
        assert await error_of(response) == "unknown call"
    async with agent1.post("/api/calls/1764649999.9/wrapup",
                           json={"disposition": "answered"}) as response:
        assert response.status == 404


@pytest.mark.parametrize("call_id", ["a%20b", "x;drop", "..", ".hidden", "a" * 65,
                                     "id%0d%0aSet-Cookie:x", "%C3%A9t%C3%A9", "a%2Fb"])
async def test_a_call_id_outside_the_safe_pattern_never_reaches_the_hub(desk, agent1, call_id):
    for method, path, body in [("GET", f"/api/calls/{call_id}", None),
                               ("POST", f"/api/calls/{call_id}/wrapup", {"disposition": "other"})]:
        async with agent1.request(method, path, json=body) as response:
            error = await error_of(response)
            # 404 only where no route matches at all (an encoded "/", a dot segment)
            assert (response.status, error) in ((400, "invalid call id"), (404, "not found")), \
                (call_id, response.status, error)
    assert desk.desk.asked == []


async def test_a_wrapup_is_saved(desk, agent1):
    body = {"disposition": "escalated_to_branch", "note": "Perlu ke kantor cabang. " * 10}
    async with agent1.post("/api/calls/1764640000.202/wrapup", json=body) as response:
        assert response.status == 200
        saved = await response.json()
    assert saved["disposition"] == "escalated_to_branch" and saved["agent"] == "agent1"
    assert desk.desk.wrapups["1764640000.202"]["note"] == body["note"]


@pytest.mark.parametrize("body,reason", [
    ({"disposition": "lunch", "note": ""}, "unknown disposition"),
    ({"note": "no disposition"}, "unknown disposition"),
    ({"disposition": ["answered"]}, "unknown disposition"),
    ({"disposition": "answered", "note": "n" * 5000}, "longer than 1000 characters"),
    ({"disposition": "answered", "note": "é" * 1001}, "longer than 1000 characters"),
    ({"disposition": "answered", "note": 42}, "the note must be text"),
])
async def test_a_bad_wrapup_is_400_with_a_reason(desk, agent1, body, reason):
    async with agent1.post("/api/calls/1764640000.101/wrapup", json=body) as response:
        assert response.status == 400
        assert reason in await error_of(response)
    assert desk.desk.wrapups == {}


async def test_a_note_of_exactly_1000_characters_is_accepted(desk, agent1):
    body = {"disposition": "other", "note": "é" * 1000}
    async with agent1.post("/api/calls/1764640000.101/wrapup", json=body) as response:
        assert response.status == 200


# --- errors, headers, the page --------------------------------------------------------

class BrokenDesk(FakeDesk):
    def queue(self) -> dict:
        raise RuntimeError("hub broke while holding 0001234567890")


async def test_no_traceback_ever_reaches_a_client():
    settings = Settings.from_env({}, desk_keepalive_seconds=0.2)
    accounts = Accounts.demo(PASSWORD)
    async with running_desk_web(BrokenDesk(), accounts, settings, host="127.0.0.1",
                                port=0) as url:
        harness = Harness(url, BrokenDesk(), Clock(), Sessions())
        async with harness.client() as client:
            assert (await harness.login(client)).status == 303
            async with client.get("/api/queue") as response:
                assert response.status == 500
                text = await response.text()
    assert json.loads(text) == {"error": "internal error"}
    assert "Traceback" not in text and "0001234567890" not in text


async def test_desk_errors_pass_through_as_json(desk, agent1):
    async def refuse(agent_id, state, reason):
        raise DeskError(409, "you are on a call")
    desk.desk.set_state = refuse
    async with agent1.post("/api/me/state", json={"state": "ready"}) as response:
        assert response.status == 409
        assert await error_of(response) == "you are on a call"


async def test_unknown_paths_and_methods_are_json_errors(desk, agent1):
    async with agent1.get("/nothing-here") as response:
        assert response.status == 404
        await error_of(response)
    async with agent1.delete("/api/me") as response:
        assert response.status == 405
        await error_of(response)
    async with agent1.get("/static/../accounts.py") as response:
        assert response.status == 404
    async with agent1.get("/static/secret.toml") as response:
        assert response.status == 404


async def test_security_headers_and_no_caching_of_the_api(desk, agent1):
    for path in ("/", "/api/me", "/api/queue", "/static/desk.js"):
        async with agent1.get(path) as response:
            assert response.status == 200
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
            assert "frame-ancestors 'none'" in csp
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            if path.startswith("/api/"):
                assert response.headers["Cache-Control"] == "no-store"
    async with agent1.get("/api/events") as stream:
        assert stream.headers["Cache-Control"] == "no-store"
        assert stream.headers["Content-Type"].startswith("text/event-stream")


async def test_the_page_has_no_inline_script_and_no_html_insertion(desk):
    async with desk.client() as client:
        async with client.get("/") as response:
            page = await response.text()
        async with client.get("/static/desk.js") as response:
            script = await response.text()
    tags = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    assert tags and all(body.strip() == "" for body in tags)
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page))
    assert not re.search(r"\son\w+\s*=", page), "inline event handler"
    assert not re.search(r"\.(inner|outer)HTML\b|insertAdjacentHTML", script)
    assert "document.write" not in script and "eval(" not in script


# --- the event stream -----------------------------------------------------------------

async def read_events(stream: aiohttp.ClientResponse, until: set[str],
                      seconds: float = 5.0) -> list[tuple[str, object]]:
    """(name, data) of each event, and ("comment", text) / ("retry", ms), until every
    name in ``until`` has come."""
    assert stream.status == 200, await stream.text()
    seen: list[tuple[str, object]] = []
    name, data = None, []
    async with asyncio.timeout(seconds):
        while until - {n for n, _ in seen}:
            raw = await stream.content.readline()
            if not raw:
                raise EOFError(f"the stream ended after {seen}")
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":"):
                seen.append(("comment", line[1:].strip()))
            elif line.startswith("retry:"):
                seen.append(("retry", int(line[6:])))
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                seen.append((name or "message", json.loads("\n".join(data))))
                name, data = None, []
    return seen


async def test_the_stream_starts_with_a_retry_hint_me_queue_and_asterisk(desk, agent1):
    desk.desk.set_waiting(waiting_entries())
    async with agent1.get("/api/events") as stream:
        assert stream.status == 200
        seen = await read_events(stream, {"me", "queue", "asterisk", "comment"})
    events = dict(e for e in seen if e[0] != "comment")
    assert events["retry"] == 3000
    assert events["me"]["agent"] == "agent1"
    assert len(events["queue"]["waiting"]) == 3
    assert events["asterisk"] == {"state": "up"}
    assert ("comment", "ping") in seen                     # keep-alive every 0.2 s here


async def test_events_reach_the_right_agent_only(desk, agent1):
    async with desk.client() as client2:
        assert (await desk.login(client2, "agent2")).status == 303
        async with agent1.get("/api/events") as one, client2.get("/api/events") as two:
            await read_events(one, {"asterisk"})
            await read_events(two, {"asterisk"})
            desk.desk.ring("agent1", "1764640000.101")
            desk.desk.connect("agent1", "1764640000.101")
            desk.desk.end("agent1", "1764640000.101")
            desk.desk.set_asterisk("down")
            first = await read_events(one, {"ringing", "connected", "ended", "queue", "asterisk"})
            second = await read_events(two, {"queue", "asterisk"})
    names = [n for n, _ in first if n in ("ringing", "connected", "ended")]
    assert names == ["ringing", "connected", "ended"]
    assert all(d["call_id"] == "1764640000.101" for n, d in first if n in names)
    assert {n for n, _ in second} & {"ringing", "connected", "ended"} == set()
    assert all(d["agent"] == "agent2" for n, d in second if n == "me")
    assert ("asterisk", {"state": "down"}) in second
    queue_update = [d for n, d in second if n == "queue"][-1]
    assert [e["call_id"] for e in queue_update["waiting"]] == []


async def test_a_stream_ends_when_its_session_expires(desk, agent1):
    async with agent1.get("/api/events") as stream:
        await read_events(stream, {"asterisk"})
        desk.clock.now += 3601
        async with asyncio.timeout(5):
            while not stream.content.at_eof():
                await stream.content.read()
    await until(lambda: desk.desk.streams("agent1") == 0, "the stream is closed", 5)


async def test_an_agent_cannot_open_streams_without_end(desk, agent1):
    streams = [await agent1.get("/api/events") for _ in range(STREAMS_PER_AGENT)]
    try:
        async with agent1.get("/api/events") as refused:
            assert refused.status == 429
            await error_of(refused)
    finally:
        for stream in streams:
            stream.close()


# --- accounts -------------------------------------------------------------------------

def test_password_hashes_are_salted_and_verified():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert PASSWORD not in first
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + "!", first)
    for broken in ("", "scrypt$1$8$1$abc$def", "md5$x", first.replace("$8$", "$999$"),
                   first[:-4] + "!!!!", "scrypt$16384$8$1$%%%$%%%"):
        assert not verify_password(PASSWORD, broken)


def test_accounts_file_in_toml(tmp_path):
    path = tmp_path / "agents.toml"
    path.write_text(
        '[[agent]]\nid = "siti"\nname = "Siti Rahayu"\ninterface = "PJSIP/siti"\n'
        f'password_hash = "{hash_password("siti-password")}"\n', encoding="utf-8")
    accounts = Accounts.load(path)
    assert accounts.get("siti").name == "Siti Rahayu"
    assert "password_hash" not in repr(accounts.get("siti"))
    assert asyncio.run(accounts.authenticate("siti", "siti-password", "127.0.0.1")).id == "siti"
    for bad in ('id = "Siti\\nAction: Originate"', 'id = "a b"'):
        path.write_text(f'[[agent]]\n{bad}\ninterface = "PJSIP/x"\npassword_hash = "x"\n')
        with pytest.raises(ValueError, match="agent id"):
            Accounts.load(path)
    path.write_text('[[agent]]\nid = "x"\ninterface = "PJSIP/x\\r\\nEvil: 1"\npassword_hash = "x"\n')
    with pytest.raises(ValueError, match="interface"):
        Accounts.load(path)
    path.write_text("title = 'no agents'\n")
    with pytest.raises(ValueError, match="no \\[\\[agent\\]\\]"):
        Accounts.load(path)


def test_demo_accounts_need_a_real_password():
    demo = Accounts.demo("demo-password")
    assert [(a.id, a.interface) for a in demo] == [("agent1", "PJSIP/agent1"),
                                                   ("agent2", "PJSIP/agent2")]
    for weak in ("", "short"):
        with pytest.raises(ValueError):
            Accounts.demo(weak)
    with pytest.raises(ValueError, match="IVR_AGENT_PASSWORD"):
        Accounts.from_settings(Settings.from_env({}))
    from_env = Accounts.from_settings(Settings.from_env({"IVR_AGENT_PASSWORD": "env-password"}))
    assert asyncio.run(from_env.authenticate("agent2", "env-password", "::1")).id == "agent2"


def test_the_hash_command_prints_a_line_for_the_accounts_file(monkeypatch, capsys):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("typed-password\n"))
    assert accounts_module.main([]) == 0
    line = capsys.readouterr().out.strip()
    stored = re.fullmatch(r'password_hash = "(.+)"', line).group(1)
    assert verify_password("typed-password", stored)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert accounts_module.main([]) == 1
