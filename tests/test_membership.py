"""The membership client against real HTTP servers on loopback (the reference service and
tiny aiohttp apps that misbehave on purpose), the reference service itself, and the
invariants of the synthetic demo data."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import socket
import sqlite3
import time
from dataclasses import replace
from datetime import date

import aiohttp
import pytest
from aiohttp import web

from ivr.membership import demo
from ivr.membership.client import MembershipClient
from ivr.membership.model import (CLASSES, INACTIVE_REASONS, PAYERS, SEGMENTS, STATUSES,
                                  MembershipUnavailable, parse_participant)
from ivr.membership.reference import run_reference_service

CARD, NIK = "0001234567890", "3174015708900003"
CALL_ID = "1795409641.1"
SPEC_EXAMPLE = {
    "card_number": "0001234567890", "nik": "3174015708900003", "name": "SITI RAHAYU",
    "birth_date": "1990-08-17", "status": "AKTIF", "inactive_reason": None,
    "segment": "PBPU", "class": 2,
    "primary_facility": {"code": "0101U002", "name": "PUSKESMAS MENTENG"},
    "phone_last4": "4821",
    "billing": {"payer": "PESERTA", "monthly_premium": 100000, "family_members": 3,
                "months_in_arrears": 2, "amount_due": 600000, "due_date": "2026-12-10"},
}
BY_CARD = {p["card_number"]: p for p in demo.PARTICIPANTS + demo.FAULT_PARTICIPANTS}


def assert_no_personal_data(exc: BaseException, identifier: str) -> None:
    text = f"{exc} {exc!r}"
    assert identifier not in text and not re.search(r"\d{8,}", text)
    # nothing chained either: aiohttp's own exceptions carry the URL
    assert exc.__cause__ is None and exc.__context__ is None


async def unavailable(client: MembershipClient, identifier: str) -> MembershipUnavailable:
    with pytest.raises(MembershipUnavailable) as caught:
        await client.lookup(identifier, CALL_ID)
    assert_no_personal_data(caught.value, identifier)
    return caught.value


@contextlib.asynccontextmanager
async def served(runner: web.AppRunner):
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def reference(db_path: str = ":memory:", token: str = ""):
    async with served(await run_reference_service("127.0.0.1", 0, db_path, token)) as url:
        yield url


@contextlib.asynccontextmanager
async def tiny_server(handler):
    """A real HTTP server whose participants route is ``handler``."""
    app = web.Application()
    app.router.add_get("/v1/participants/{id}", handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                           shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    async with served(runner) as url:
        yield url


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the client against the reference service

async def test_found_by_card_and_by_nik():
    async with reference() as url, MembershipClient(url) as client:
        by_card = await client.lookup(CARD, CALL_ID)
        by_nik = await client.lookup(NIK, CALL_ID)
    assert by_card == by_nik == parse_participant(SPEC_EXAMPLE)
    assert by_card.card_number == CARD and by_card.billing.amount_due == 600000
    assert by_card.birth_date == date(1990, 8, 17) and by_card.active


async def test_every_demo_participant_round_trips():
    async with reference() as url, MembershipClient(url) as client:
        found = await asyncio.gather(*(client.lookup(p["card_number"], f"c{i}")
                                       for i, p in enumerate(demo.PARTICIPANTS * 20)))
    assert found == [parse_participant(p) for p in demo.PARTICIPANTS * 20]


async def test_unknown_numbers_are_none():
    async with reference() as url, MembershipClient(url) as client:
        assert await client.lookup("0001999999999", CALL_ID) is None
        assert await client.lookup("3174010101990001", CALL_ID) is None


async def test_server_error_and_malformed_body_are_unavailable():
    async with reference() as url, MembershipClient(url) as client:
        assert "500" in str(await unavailable(client, demo.FAULT_SERVER_ERROR))
        assert "contract" in str(await unavailable(client, demo.FAULT_MALFORMED))


async def test_slow_answer_within_the_limit_succeeds():
    async with reference() as url, MembershipClient(url, total_timeout=3.0) as client:
        started = time.monotonic()
        found = await client.lookup(demo.FAULT_SLOW, CALL_ID)
        elapsed = time.monotonic() - started
    assert found is not None and found.active and found.card_number == demo.FAULT_SLOW
    assert demo.SLOW_SECONDS <= elapsed < 3.0


async def test_timeout_is_unavailable_and_quick():
    async with reference() as url, MembershipClient(url, total_timeout=0.3) as client:
        started = time.monotonic()
        assert str(await unavailable(client, demo.FAULT_TIMEOUT)) == "timeout"
        assert time.monotonic() - started < 1.0


async def test_connection_refused_is_unavailable():
    client = MembershipClient(f"http://127.0.0.1:{closed_port()}", connect_timeout=0.5)
    async with client:
        assert "connection failed" in str(await unavailable(client, CARD))


class RawRecords(logging.Handler):
    """Messages as logged, before any redacting filter elsewhere has masked them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture
def raw_log():
    root, handler = logging.getLogger(), RawRecords()
    level = root.level
    root.handlers.insert(0, handler)   # first, so that it sees records unredacted
    root.setLevel(logging.DEBUG)
    try:
        yield handler.messages
    finally:
        root.handlers.remove(handler)
        root.setLevel(level)


async def test_no_personal_data_in_logs(raw_log):
    async with reference() as url, MembershipClient(url) as client:
        await client.lookup(CARD, CALL_ID)
        await client.lookup(NIK, CALL_ID)
        await unavailable(client, demo.FAULT_MALFORMED)
    text = "\n".join(raw_log)
    assert "membership lookup failed" in text    # something was logged, but not:
    for secret in (CARD, NIK, demo.FAULT_MALFORMED, "1990-08-17", "SITI RAHAYU"):
        assert secret not in text


# -- the client against servers that break the contract

async def test_headers_and_connection_reuse():
    seen = []

    async def record(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), request.transport.get_extra_info("peername")))
        return web.json_response(BY_CARD[request.match_info["id"]])

    async with tiny_server(record) as url:
        async with MembershipClient(url, token="s3cret") as client:
            for _ in range(5):
                assert (await client.lookup(CARD, CALL_ID)).card_number == CARD
        async with MembershipClient(url + "/") as client:
            await client.lookup(CARD, "1795409641.2")
    headers = seen[0][0]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Request-ID"] == CALL_ID and headers["Accept"] == "application/json"
    assert "Authorization" not in seen[-1][0] and seen[-1][0]["X-Request-ID"] == "1795409641.2"
    assert len({peer for _, peer in seen[:5]}) == 1   # one kept-alive connection


def _other_participant() -> dict:
    return BY_CARD["0001100000011"]


def _without_payer() -> dict:
    body = copy.deepcopy(SPEC_EXAMPLE)
    del body["billing"]["payer"]
    return body


@pytest.mark.parametrize("status, content_type, text, reason", [
    (500, "application/json", '{"error": "internal"}', "HTTP status 500"),
    (503, "text/plain", "busy", "HTTP status 503"),
    (401, "application/json", '{"error": "unauthorized"}', "HTTP status 401"),
    (302, "text/plain", "", "HTTP status 302"),
    (200, "text/html", "<html>ok</html>", "not JSON"),
    (200, "application/json", '{"card_number": ', "contract"),
    (200, "application/json", "", "contract"),
    (200, "application/json", "[]", "contract"),
    (200, "application/json", json.dumps(_without_payer()), "contract"),
    (200, "application/json", json.dumps(_other_participant()), "another participant"),
])
async def test_broken_answers_are_unavailable(status, content_type, text, reason):
    async def broken(request: web.Request) -> web.Response:
        headers = {"Location": "/v1/participants/0001100000011"} if status == 302 else None
        return web.Response(status=status, text=text, content_type=content_type,
                            headers=headers)

    async with tiny_server(broken) as url, MembershipClient(url) as client:
        assert reason in str(await unavailable(client, CARD))


@pytest.mark.parametrize("content_type, text", [
    ("text/html", "<html><body><h1>404 Not Found</h1>nginx</body></html>"),
    ("application/json", ""),
    ("application/json", '{"error": "no_route"}'),
    ("application/json", '{"error": "not_found", "hint": 1}'),
    ("text/plain", '{"error": "not_found"}'),
])
async def test_only_the_contracts_404_means_not_found(content_type, text):
    async def proxy_page(request: web.Request) -> web.Response:
        return web.Response(status=404, text=text, content_type=content_type)

    async with tiny_server(proxy_page) as url, MembershipClient(url) as client:
        assert "404" in str(await unavailable(client, CARD))


async def test_the_contracts_404_is_not_found():
    async def contract(request: web.Request) -> web.Response:
        return web.json_response({"error": "not_found"}, status=404)

    async with tiny_server(contract) as url, MembershipClient(url) as client:
        assert await client.lookup(CARD, CALL_ID) is None


FIFTY_MB = 50 * 1024 * 1024


async def test_a_body_over_64_kib_is_refused_unread():
    """50 MB answers, with and without a Content-Length (by card: chunked; by NIK:
    declared): the client stops at 64 KiB and drops the connection."""
    sent = []

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if request.match_info["id"] == NIK:
            response.content_length = FIFTY_MB
        await response.prepare(request)
        chunk = b" " * (1024 * 1024)
        try:
            for _ in range(50):
                await response.write(chunk)
                sent.append(len(chunk))
        except (ConnectionError, RuntimeError):
            pass
        return response

    async with tiny_server(huge) as url:
        for identifier in (CARD, NIK):
            sent.clear()
            async with MembershipClient(url) as client:
                started = time.monotonic()
                assert "larger than 64 KiB" in str(await unavailable(client, identifier))
                assert time.monotonic() - started < 2.0
            await asyncio.sleep(0.2)
            print(f"{'declared' if identifier == NIK else 'chunked'}: the server got "
                  f"{sum(sent) / 2 ** 20:.0f} MiB out before the client dropped it")
            assert sum(sent) < FIFTY_MB // 2


async def test_a_body_just_over_the_limit_fails_and_one_at_the_limit_is_read():
    padded = json.dumps(SPEC_EXAMPLE)

    async def sized(request: web.Request) -> web.Response:
        size = 64 * 1024 + (request.match_info["id"] == NIK)
        return web.Response(text=padded + " " * (size - len(padded)),
                            content_type="application/json")

    async with tiny_server(sized) as url, MembershipClient(url) as client:
        assert (await client.lookup(CARD, CALL_ID)).card_number == CARD
        assert "larger than 64 KiB" in str(await unavailable(client, NIK))


@pytest.mark.parametrize("text", [
    "[" * 30000 + "]" * 30000,                                       # deeper than Python
    json.dumps(dict(SPEC_EXAMPLE, billing={"payer": {"a": [[[[{}]]]]}})),
    json.dumps(dict(SPEC_EXAMPLE, phone_last4=["4821"])),
    json.dumps(dict(SPEC_EXAMPLE, phone_last4="48210")),
    json.dumps(dict(SPEC_EXAMPLE, phone_last4=4821)),
    '{"card_number": ' + "9" * 5000 + "}",                           # int digit limit
])
async def test_nested_and_twisted_bodies_are_unavailable(text):
    async def twisted(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/json")

    async with tiny_server(twisted) as url, MembershipClient(url) as client:
        assert "contract" in str(await unavailable(client, CARD))


async def test_a_proxy_404_transfers_the_caller_and_counts_no_failure(settings):
    from ivr.app import running_server
    from ivr.emulator import place_call

    async def proxy_page(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html>Not Found</html>", content_type="text/html")

    async with tiny_server(proxy_page) as url:
        async with running_server(replace(settings, membership_url=url)) as (server, app):
            call = await place_call("127.0.0.1", server.port, f"1 {CARD}# 1 17081990")
            failures = await app.lockout.failures(CARD)
    assert call.variables["IVR_TRANSFER_REASON"] == "service_unavailable"
    assert failures == 0


async def test_unknown_inactive_reason_is_lainnya():
    async def inactive(request: web.Request) -> web.Response:
        return web.json_response(dict(SPEC_EXAMPLE, status="TIDAK_AKTIF",
                                      inactive_reason="DIBEKUKAN"))

    async with tiny_server(inactive) as url, MembershipClient(url) as client:
        found = await client.lookup(CARD, CALL_ID)
    assert found.inactive_reason == "LAINNYA" and not found.active


async def test_slow_server_times_out_within_total_timeout():
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response(SPEC_EXAMPLE)

    async with tiny_server(stall) as url, MembershipClient(url, total_timeout=0.3) as client:
        started = time.monotonic()
        await unavailable(client, NIK)
        assert time.monotonic() - started < 0.8


async def test_malformed_identifiers_are_never_sent():
    seen = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response(SPEC_EXAMPLE)

    async with tiny_server(record) as url, MembershipClient(url) as client:
        for bad in ("../health", "000123456789", "00012345678901", "000123456789a",
                    "١" * 13):
            with pytest.raises(ValueError):
                await client.lookup(bad, CALL_ID)
    assert seen == []


# -- the reference service

async def test_reference_answers_per_contract():
    async with reference() as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/participants/{CARD}") as r:
            assert r.status == 200 and r.content_type == "application/json"
            assert await r.json() == SPEC_EXAMPLE
        for bad in ("0001999999999", "123", "00012345678901", "000123456789a", "١" * 13):
            async with http.get(f"{url}/v1/participants/{bad}") as r:
                assert r.status == 404 and await r.json() == {"error": "not_found"}
        async with http.get(f"{url}/health") as r:
            assert r.status == 200 and await r.json() == {"status": "ok"}


async def test_reference_enforces_its_token():
    async with reference(token="s3cret") as url:
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                async with http.get(f"{url}/v1/participants/{CARD}", headers=headers) as r:
                    assert r.status == 401
            async with http.get(f"{url}/health") as r:      # probes need no token
                assert r.status == 200
        async with MembershipClient(url) as client:
            assert "401" in str(await unavailable(client, CARD))
        async with MembershipClient(url, token="s3cret") as client:
            assert (await client.lookup(CARD, CALL_ID)).nik == NIK


async def test_reference_database_on_disk_is_created_and_upserted(tmp_path):
    path = tmp_path / "nested" / "dir" / "membership.sqlite3"
    async with reference(str(path)):
        pass
    extra = dict(SPEC_EXAMPLE, card_number="0001100000999", nik="3174015708900999")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO participants VALUES (?, ?, ?)",
                   (extra["card_number"], extra["nik"], json.dumps(extra)))
    async with reference(str(path)) as url, MembershipClient(url) as client:
        assert (await client.lookup(CARD, CALL_ID)).nik == NIK          # seeded again
        assert (await client.lookup("0001100000999", CALL_ID)).nik == extra["nik"]
    with contextlib.closing(sqlite3.connect(path)) as db:
        count = db.execute("SELECT count(*) FROM participants").fetchone()[0]
    assert count == len(demo.PARTICIPANTS) + len(demo.FAULT_PARTICIPANTS) + 1


# -- the demo data

def test_the_spec_example_is_in_the_demo_data():
    assert BY_CARD[CARD] == SPEC_EXAMPLE
    assert 12 <= len(demo.PARTICIPANTS) <= 16


def test_demo_data_covers_every_value():
    ps = demo.PARTICIPANTS
    assert {p["status"] for p in ps} == set(STATUSES)
    assert {p["inactive_reason"] for p in ps} == set(INACTIVE_REASONS) | {None}
    assert {p["segment"] for p in ps} == set(SEGMENTS)
    assert {p["class"] for p in ps} == set(CLASSES)
    assert {p["billing"]["payer"] for p in ps if p["billing"]} == set(PAYERS)
    assert any(p["billing"] is None for p in ps)
    assert any(p["primary_facility"] is None for p in ps)
    assert any(p["billing"] and p["billing"]["payer"] == "PESERTA"
               and p["billing"]["amount_due"] == 0 for p in ps)
    # v1.1: most have a registered mobile number, at least one active participant has none
    assert sum(p["phone_last4"] is not None for p in ps) > len(ps) // 2
    assert any(p["phone_last4"] is None and p["status"] == "AKTIF" for p in ps)


@pytest.mark.parametrize("body", demo.PARTICIPANTS + demo.FAULT_PARTICIPANTS,
                         ids=lambda body: body["card_number"])
def test_demo_participant_is_consistent(body):
    assert set(body) == set(SPEC_EXAMPLE)
    parsed = parse_participant(body)
    assert parsed.card_number.startswith(("0001", "00099999999"))
    assert (body["status"] == "AKTIF") == (body["inactive_reason"] is None)
    # the NIK's DDMMYY: the birth date, with 40 added to the day for women
    born = date.fromisoformat(body["birth_date"])
    day, month, yy = int(body["nik"][6:8]), int(body["nik"][8:10]), int(body["nik"][10:12])
    sex = demo.SEX.get(body["card_number"], "L")
    assert (day, month, yy) == (born.day + (40 if sex == "P" else 0), born.month,
                                born.year % 100)
    payer = {"PBI": "PEMERINTAH", "PPU": "PEMBERI_KERJA", "PBPU": "PESERTA", "BP": "PESERTA"}
    bill = body["billing"]
    if bill is None:
        return
    assert bill["payer"] == payer[body["segment"]]
    assert bill["amount_due"] == (bill["months_in_arrears"] * bill["monthly_premium"]
                                  * bill["family_members"])
    assert date.fromisoformat(bill["due_date"]).day == 10
    assert 1 <= bill["family_members"] and 0 <= bill["months_in_arrears"] <= 24
    if body["segment"] == "PBI":
        assert body["class"] == 3 and bill["monthly_premium"] == 42000
        assert bill["amount_due"] == 0
    elif body["segment"] == "PPU":   # 5% of a wage capped at Rp12,000,000, for the family
        assert bill["monthly_premium"] * bill["family_members"] <= 600000
    else:
        assert bill["monthly_premium"] == {1: 150000, 2: 100000, 3: 35000}[body["class"]]


def test_demo_identifiers_are_unique_and_distinct_from_faults():
    everyone = demo.PARTICIPANTS + demo.FAULT_PARTICIPANTS
    assert len({p["card_number"] for p in everyone}) == len(everyone)
    assert len({p["nik"] for p in everyone}) == len(everyone)
    assert set(demo.SEX) == {p["card_number"] for p in demo.PARTICIPANTS}
    faults = {demo.FAULT_SERVER_ERROR, demo.FAULT_SLOW, demo.FAULT_TIMEOUT,
              demo.FAULT_MALFORMED}
    assert len(faults) == 4 and faults == set(demo.FAULTS)
    assert not faults & {p["card_number"] for p in demo.PARTICIPANTS}
    assert 1.0 < demo.SLOW_SECONDS < 3.0 < demo.TIMEOUT_SECONDS


def test_demo_table_markdown():
    table = demo.demo_table_markdown()
    rows = [line for line in table.splitlines() if line.startswith("| 000")]
    assert len(rows) == len(demo.PARTICIPANTS) + len(demo.FAULTS)
    assert ("| 0001234567890 | 3174015708900003 | 17081990 | 4821 | AKTIF | PBPU | 2 "
            "| PESERTA | Rp600.000 |") in rows
    assert any("| none: card number only | AKTIF |" in r for r in rows)
    assert any(r.startswith(f"| {demo.FAULT_TIMEOUT} |") for r in rows)
