"""A simulated carrier for callbacks: a SIP UAS on loopback UDP that the sandbox's
outbound trunk (pjsip.conf "carrier") dials. Per number (the Request-URI's user) it
answers (100, 180, then 200 with an SDP) or refuses (100, then 486 Busy Here); it answers
BYE and CANCEL, and keeps every INVITE it received (number, time, response)."""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from typing import Callable

_REQUEST = re.compile(r"^([A-Z]+) sip:([^@;> ]+)@")


@dataclass
class Invite:
    number: str
    at: float           # time.time()
    answered: bool


class Carrier(asyncio.DatagramProtocol):
    def __init__(self, answers: Callable[[str], bool], ring_seconds: float = 0.5) -> None:
        self.answers = answers
        self.ring_seconds = ring_seconds
        self.invites: list[Invite] = []
        self.byes = 0
        self._seen: dict[str, bytes] = {}       # Call-ID -> final response (retransmits)
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr) -> None:
        text = data.decode("utf-8", errors="replace")
        head, _, _body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        match = _REQUEST.match(lines[0])
        if not match:
            return                                  # a response, or garbage
        method, user = match.groups()
        headers = [line for line in lines[1:] if ":" in line]
        call_id = next((h.split(":", 1)[1].strip() for h in headers
                        if h.lower().startswith(("call-id:", "i:"))), "")
        if method == "INVITE":
            if call_id in self._seen:               # a retransmission
                self.transport.sendto(self._seen[call_id], addr)
                return
            answer = self.answers(user)
            self.invites.append(Invite(user, time.time(), answer))
            tag = uuid.uuid4().hex[:8]
            self._send(addr, headers, "100 Trying")
            if answer:
                self._send(addr, headers, "180 Ringing", tag)
                asyncio.get_running_loop().call_later(
                    self.ring_seconds, self._answer, addr, headers, tag, call_id)
            else:
                self._seen[call_id] = self._send(addr, headers, "486 Busy Here", tag)
        elif method in ("BYE", "CANCEL", "OPTIONS"):
            self.byes += method == "BYE"
            self._send(addr, headers, "200 OK")

    def _answer(self, addr, headers, tag: str, call_id: str) -> None:
        sdp = ("v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=carrier\r\nc=IN IP4 127.0.0.1\r\n"
               f"t=0 0\r\nm=audio {self.port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
               "a=sendrecv\r\n")
        self._seen[call_id] = self._send(addr, headers, "200 OK", tag, sdp)

    def _send(self, addr, headers: list[str], status: str, tag: str = "",
              body: str = "") -> bytes:
        out = [f"SIP/2.0 {status}"]
        for header in headers:
            name = header.split(":", 1)[0].strip().lower()
            if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
                out.append(header)
            elif name in ("to", "t"):
                out.append(header if ";tag=" in header or not tag else f"{header};tag={tag}")
        out.append(f"Contact: <sip:carrier@127.0.0.1:{self.port}>")
        if body:
            out.append("Content-Type: application/sdp")
        out.append(f"Content-Length: {len(body.encode())}")
        message = ("\r\n".join(out) + "\r\n\r\n" + body).encode()
        self.transport.sendto(message, addr)
        return message


async def start_carrier(port: int, answers: Callable[[str], bool]):
    """The carrier on 127.0.0.1:port, and a sink for the RTP Asterisk sends (port + 2)."""
    loop = asyncio.get_running_loop()
    transport, carrier = await loop.create_datagram_endpoint(
        lambda: Carrier(answers), local_addr=("127.0.0.1", port))
    sink, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                  local_addr=("127.0.0.1", port + 2))
    return carrier, (transport, sink)
