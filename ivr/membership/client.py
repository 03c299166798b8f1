"""The IVR's client of the membership service (``../shared/spec/membership-api.md``).

One pooled aiohttp session serves every call; ``lookup`` is safe to run thousands of times
concurrently. Identifiers (card numbers, NIKs) are personal data: they go into the request
path and nowhere else, not into exception messages, tracebacks or log lines.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Callable

import aiohttp

from .breaker import CircuitBreaker
from .model import MembershipUnavailable, Participant, parse_participant

log = logging.getLogger(__name__)

# A cap on sockets to the service rather than none: at the limit a lookup waits for a free
# connection (bounded by the connect timeout) instead of exhausting the file descriptors the
# FastAGI sockets need too. Keep-alive makes a few dozen connections carry thousands of
# lookups per second.
POOL_LIMIT = 1000
KEEPALIVE_SECONDS = 15.0
# The contract (v1.1): a larger body is a failure of the service. No record comes near it,
# and reading no more than this bounds what one call can make the process hold.
BODY_LIMIT = 64 * 1024
NOT_FOUND = {"error": "not_found"}


async def _read_capped(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None (and the connection dropped) when it is larger than BODY_LIMIT."""
    if response.content_length is not None and response.content_length > BODY_LIMIT:
        response.close()
        return None
    body = bytearray()
    async for chunk in response.content.iter_chunked(BODY_LIMIT):
        body += chunk
        if len(body) > BODY_LIMIT:
            response.close()
            return None
    return bytes(body)


def _is_not_found(content_type: str, raw: bytes) -> bool:
    """Only the contract's 404 means "not found": JSON ``{"error": "not_found"}``."""
    if content_type != "application/json":
        return False
    try:
        return json.loads(raw) == NOT_FOUND
    except (ValueError, RecursionError):
        return False


class MembershipClient:
    def __init__(self, base_url: str, token: str = "", connect_timeout: float = 1.0,
                 total_timeout: float = 3.0, breaker: CircuitBreaker | None = None) -> None:
        self.breaker = breaker or CircuitBreaker()
        # told of every lookup: its own time in seconds, and the failure's reason or None
        self.observe: Callable[[float, str | None], None] | None = None
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._open()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> "MembershipClient":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=POOL_LIMIT, limit_per_host=0,
                                             keepalive_timeout=KEEPALIVE_SECONDS,
                                             ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers,
                                                  timeout=self._timeout)
        return self._session

    async def lookup(self, identifier: str, request_id: str, deadline: float | None = None
                     ) -> Participant | None:
        """The participant with this card number (13 digits) or NIK (16 digits); None when
        the service answers the contract's 404 (JSON ``{"error": "not_found"}``). Raise
        ``MembershipUnavailable`` on any other outcome: another 404, a body over 64 KiB, no
        answer by ``deadline`` (the event loop's clock: the caller's limit, so that a service
        too slow for callers counts as failing, and opens the breaker)..."""
        if not (identifier.isascii() and identifier.isdigit() and len(identifier) in (13, 16)):
            raise ValueError("an identifier is 13 or 16 digits")
        if not self.breaker.allow():
            if self.observe is not None:
                self.observe(0.0, "circuit open")
            raise MembershipUnavailable("circuit open")
        outcome = self.breaker.abandoned
        started = time.monotonic()
        failure = None
        try:
            async with asyncio.timeout_at(deadline):
                participant = await self._lookup(identifier, request_id)
            outcome = self.breaker.succeeded
            return participant
        except TimeoutError:
            outcome, failure = self.breaker.failed, "timeout"
            raise MembershipUnavailable("timeout") from None
        except MembershipUnavailable as exc:
            outcome, failure = self.breaker.failed, str(exc)
            raise
        finally:
            outcome()
            if self.observe is not None and outcome is not self.breaker.abandoned:
                self.observe(time.monotonic() - started, failure)

    async def _lookup(self, identifier: str, request_id: str) -> Participant | None:
        url = f"{self.base_url}/v1/participants/{identifier}"
        # Failures are turned into reasons here and raised outside the ``except`` blocks, so
        # that no aiohttp exception (whose text holds the URL, hence the identifier) is
        # chained to what the caller sees.
        reason = None
        try:
            async with self._open().get(url, headers={"X-Request-ID": request_id},
                                        allow_redirects=False) as response:
                status, content_type = response.status, response.content_type
                raw = await _read_capped(response)  # in full, so the connection is reused
        except TimeoutError:
            reason = "timeout"
        except aiohttp.ClientError as exc:
            reason = f"connection failed ({type(exc).__name__})"
        if reason is None:
            if raw is None:
                reason = f"a body larger than {BODY_LIMIT // 1024} KiB"
            elif status == 404:
                if _is_not_found(content_type, raw):
                    return None
                reason = "HTTP status 404 without the contract's not_found body"
            elif status != 200:
                reason = f"HTTP status {status}"
            elif content_type != "application/json":
                reason = "the body is not JSON"
            else:
                try:
                    participant = parse_participant(json.loads(raw))
                except (ValueError, RecursionError) as exc:
                    # parse_participant's messages hold no personal data, json's only
                    # positions
                    reason = f"the body breaks the contract ({exc})"
        if reason is None and identifier not in (participant.card_number, participant.nik):
            reason = "the answer is about another participant"
        if reason is not None:
            log.warning("membership lookup failed (request %s): %s", request_id, reason)
            raise MembershipUnavailable(reason)
        return participant
