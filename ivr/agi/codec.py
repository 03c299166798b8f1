"""The FastAGI wire format, without I/O: header lines in, commands out, reply lines in.

Facts it follows (``../shared/notes/fastagi.md``, Asterisk 22 ``res_agi.c``): lines end in
``\\n``; a header value may be empty; ``HANGUP`` is an unsolicited line, not a reply, and may
come before the reply to the command in flight; ``520-`` starts a multi-line usage reply
that ends with a ``520 `` line; ``100`` is an interim reply (GOSUB) followed by the real one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

HANGUP = "HANGUP"

# Keys a caller can press; a STREAM FILE escape set that lets any of them interrupt.
ALL_KEYS = "0123456789*#"
# What a caller can send: the keys above and DTMF's A-D (some phones have them; the flow
# takes them as wrong keys). A key's ``result=`` code is one of these characters' codes.
DTMF_KEYS = frozenset(ALL_KEYS + "ABCD")
DTMF_CODES = frozenset(map(ord, DTMF_KEYS))


class ProtocolError(Exception):
    """The peer misbehaved: what it sent is not FastAGI."""


class CommandError(Exception):
    """We misused the protocol: a command Asterisk refused (510/520) or could not form."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One final reply: ``200 result=1 (value)``, ``511 ...``, a collapsed ``520`` block."""

    code: int
    result: str = ""
    data: str | None = None
    endpos: int | None = None
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def number(self) -> int | None:
        """``result=`` as an integer, or None when it is not one (e.g. GET DATA digits)."""
        try:
            return int(self.result)
        except ValueError:
            return None

    @property
    def key(self) -> str | None:
        """The key a ``STREAM FILE`` or ``WAIT FOR DIGIT`` result stands for (its ASCII
        code), None for 0; a code that is no key (e.g. ``result=99999999999``) is the
        peer's fault."""
        number = self.number
        if number == 0:
            return None
        if number not in DTMF_CODES:
            raise ProtocolError("a result that is no key's code")
        return chr(number)


_REPLY = re.compile(r"(\d{3})([ -])(.*)\Z", re.S)
_RESULT = re.compile(r"result=(\S*)\s*(?:\((.*)\))?\s*(?:endpos=(-?\d+))?")


class HeaderError(ProtocolError):
    pass


def parse_header_line(line: str) -> tuple[str, str] | None:
    """``agi_name: value`` → (name, value); the empty line that ends the block → None."""
    if line == "":
        return None
    name, sep, value = line.partition(":")
    if not sep or not name.startswith("agi_") or " " in name:
        raise HeaderError("malformed header line")
    return name, value[1:] if value.startswith(" ") else value


_NEEDS_QUOTES = re.compile(r'[ \t"\\]')


def _quote(arg: str) -> str:
    if arg and _NEEDS_QUOTES.search(arg) is None:
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(verb: str, *args: str | int) -> bytes:
    """``format_command("STREAM FILE", "bpjs/greeting", "")`` → ``STREAM FILE bpjs/greeting ""``.

    The verb goes out as written; arguments are quoted where Asterisk's parser needs it.
    """
    parts = [verb]
    for arg in args:
        text = str(arg)
        if "\n" in text or "\r" in text:
            raise CommandError("an AGI argument cannot contain a line break")
        parts.append(_quote(text))
    return (" ".join(parts) + "\n").encode()


class ReplyReader:
    """Feeds reply lines, one at a time, and says what they add up to.

    ``feed(line)`` returns a ``Reply`` when a final reply is complete, ``HANGUP`` for the
    unsolicited hang-up line, and None while a reply is still incomplete (a ``520`` block,
    an interim ``100``).
    """

    __slots__ = ("_usage",)

    def __init__(self) -> None:
        self._usage: list[str] | None = None

    def feed(self, line: str) -> Reply | str | None:
        if line == HANGUP:
            return HANGUP
        if self._usage is None and line.startswith("200 result="):
            # Most replies, without the regexes: "200 result=N" and "... endpos=M"
            value, _, tail = line[11:].partition(" ")
            if not tail:
                return Reply(200, value, None, None, line[4:])
            if tail.startswith("endpos=") and tail[7:].isdigit():
                return Reply(200, value, None, int(tail[7:]), line[4:])
        if self._usage is not None:
            self._usage.append(line)
            if line.startswith("520 "):
                text, self._usage = "\n".join(self._usage), None
                return Reply(520, text=text)
            return None
        match = _REPLY.match(line)
        if match is None:
            raise ProtocolError("a reply line that is not FastAGI")
        code, sep, rest = int(match[1]), match[2], match[3]
        if sep == "-":
            if code != 520:
                raise ProtocolError("a continued reply other than 520")
            self._usage = [line]
            return None
        if code == 100:
            return None
        if code != 200:
            return Reply(code, text=rest)
        result = _RESULT.match(rest)
        if result is None:
            raise ProtocolError("a 200 reply without result=")
        endpos = result[3]
        return Reply(200, result[1], result[2], int(endpos) if endpos else None, rest)
